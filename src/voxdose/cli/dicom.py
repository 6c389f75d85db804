"""DICOM commands: ``voxdose dicom-info``, ``voxdose rtdose``, ``voxdose export-dicom``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .app import app, console
from ..core.errors import InputError


@app.command("dicom-info")
def dicom_info(
    folder: Path = typer.Argument(..., help="folder searched recursively for DICOM series"),
):
    """List the DICOM series in FOLDER; for NM/PT: units, decay correction, times
    (acquisition and radiopharmaceutical start, local time) and the nuclide."""
    from ..io.dicom_read import SPECT_MODALITIES, read_spect_header, scan_folder

    if not folder.exists():
        raise InputError(f"folder not found: {folder}")
    series = scan_folder(folder)
    if not series:
        raise InputError(f"{folder}: no DICOM files found (searched recursively)")
    t = Table(title=str(folder))
    for col in ("modality", "files", "description", "units", "decay corr.", "acquisition",
                "administration", "nuclide", "SeriesInstanceUID"):
        t.add_column(col)
    for s in series:
        row = [s.modality, str(len(s.files)), s.description] + [""] * 5 + [s.uid]
        if s.modality in SPECT_MODALITIES:
            h = read_spect_header(folder, s.uid)
            row[3:8] = [str(h.units), str(h.decay_correction), str(h.acquisition or "-"),
                        str(h.administration or "-"), str(h.nuclide or "-")]
        t.add_row(*row)
    console.print(t)


@app.command()
def rtdose(
    dose: Path = typer.Argument(..., help="dose image in Gy (NIfTI/MHD/NRRD)"),
    out: Path = typer.Option(..., "--out", help="RT Dose file to write (.dcm)"),
    reference: Path = typer.Option(None, "--reference", help="reference CT (DICOM folder or "
                                   "file): frame of reference, study and patient copied"),
):
    """Convert a dose image (Gy) to DICOM RT Dose (uint32 + DoseGridScaling, within 0.1 %)."""
    from ..io.dicom_write import write_rt_dose
    from ..io.sitk_adapter import read_image

    if reference is not None and not reference.exists():
        raise InputError(f"--reference {reference}: not found")
    img = read_image(dose, "absorbed dose", "Gy")
    unit = str(img.meta.get("unit", "Gy"))
    if unit.strip().lower() not in ("gy", "gray"):
        raise InputError(f"{dose}: its sidecar gives the unit '{unit}' "
                         f"({img.meta.get('quantity', 'unknown quantity')}), not Gy; RT Dose "
                         "holds absorbed dose: give a dose image (e.g. from voxdose dose)")
    write_rt_dose(out, img, reference=reference)
    console.print(f"wrote {out}")


@app.command("export-dicom")
def export_dicom(
    study: Path = typer.Argument(..., help="study file (study.toml) of an image-file study"),
    out_dir: Path = typer.Argument(..., help="folder for the DICOM study and its study.toml"),
    units: str = typer.Option("BQML", help="NM pixel unit: BQML (Bq/mL) or CNTS (counts, "
                              "0.5 Bq/mL per count written to the study file)"),
):
    """Write a study (e.g. the demo's) as DICOM: NM per time point, CT series, labels."""
    from ..study.export import export_study_dicom

    if units not in ("BQML", "CNTS"):
        raise InputError(f"--units {units}: use BQML or CNTS")
    p = export_study_dicom(study, out_dir, units=units)
    console.print(f"wrote {p}")
