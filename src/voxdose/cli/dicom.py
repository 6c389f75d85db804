"""DICOM commands: ``voxdose dicom-info``, ``voxdose rtdose``, ``voxdose export-dicom``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from .app import app, console
from ..core.errors import InputError


@app.command("dicom-info")
def dicom_info(
    folder: Path = typer.Argument(..., help="folder searched recursively for DICOM series"),
):
    """List every DICOM series in FOLDER; for NM/PT: units, decay correction, times
    (acquisition and radiopharmaceutical start, local time) and the nuclide. A series voxdose
    cannot use (projections, a planar image, a localizer, unreadable tags, ...) is marked in
    the problem column; under the table each series' SeriesInstanceUID and its problem in
    full. Exit code 0 when every NM/PT/CT/RTSTRUCT series is usable (notes, such as a date a
    study-file key must replace, do not count), 2 (after the table) when one is not."""
    from ..io.dicom_read import scan_folder

    if not folder.exists():
        raise InputError(f"folder not found: {folder}")
    file_problems: list = []
    series = scan_folder(folder, problems=file_problems)
    if not series and not file_problems:
        raise InputError(f"{folder}: no DICOM files found (searched recursively)")
    rows, notes = _series_rows(series, folder)
    rows += [["?", "1", p.name] + [""] * 5 for p, _ in file_problems]
    notes += [("unusable", msg) for _, msg in file_problems]
    labels = [s.uid for s in series] + [str(_relative(str(p), folder)) for p, _ in
                                        file_problems]
    t = Table(title=str(folder))
    for col in ("#", "modality", "files", "description", "units", "decay corr.",
                "acquisition", "administration", "nuclide", "problem"):
        # nothing cut short: long values fold over lines, the short columns stay whole
        t.add_column(col, overflow="fold",
                     no_wrap=col in ("#", "modality", "files", "units", "nuclide"))
    for k, (row, (kind, msg)) in enumerate(zip(rows, notes), start=1):
        problem = "" if not msg else _short(msg) if kind == "unusable" else "note"
        t.add_row(*(Text(c) for c in [str(k), *row, problem]))
    console.print(t)
    for k, (label, (kind, msg)) in enumerate(zip(labels, notes), start=1):
        line = f"#{k} {'SeriesInstanceUID ' if k <= len(series) else ''}{label}"
        if msg:
            line += f"\n   {'problem' if kind == 'unusable' else 'note'}: " \
                    f"{_relative(msg, folder)}"
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    unusable = sum(kind == "unusable" for kind, _ in notes)
    if unusable:
        raise InputError(f"{folder}: {unusable} of {len(notes)} series (or files) cannot be "
                         "used: see the problem column and the problems under the table")


def _relative(msg: str, folder: Path) -> str:
    """A message with the folder's path left out of the file names it gives."""
    return msg.replace(str(folder).rstrip("/") + "/", "")


#: what a problem is, for the table: (pattern in its message, label); the message itself is
#: printed under the table
_PROBLEM_LABELS = (
    (r"SPECT projections", "projections"),
    (r"Secondary Capture", "planar (Secondary Capture)"),
    (r"a planar NM image", "planar image"),
    (r"a single (CT )?image", "single image"),
    (r"CT localizer", "localizer"),
    (r"several ([\w -]+?) in one object", r"several \1"),
    (r"truncated", "truncated file"),
    (r"ROI '[^']*': \S+ % of its contour area", "contours outside the CT"),
    (r"not a valid DICOM date/time", "unreadable date"),
    (r"cannot read this DICOM file", "unreadable file"),
    (r"mixes patients", "mixed patients"),
    (r"([A-Za-z]+ \(\w{4},\w{4}\)) (is|are) missing", r"\1 missing"),
)


def _short(msg: str) -> str:
    """What a problem is, in a few words (a known kind, else the message's first clause
    without its file name, at most 30 characters)."""
    import re

    for pattern, label in _PROBLEM_LABELS:
        m = re.search(pattern, msg)
        if m:
            return m.expand(label)
    head, sep, rest = msg.partition(": ")
    if sep and ("/" in head or "\\" in head or head.lower().endswith(".dcm")):
        msg = rest
    text = msg.replace(":", ";").split(";")[0].strip()
    return text if len(text) <= 30 else text[:29].rstrip() + "\u2026"


def _series_rows(series, folder: Path):
    """Per series: its table row (problem column still empty) and (kind, message), kind
    'unusable' (the series cannot be read: counts for the exit code) or 'note' (usable, but
    a study-file key must supply a value), message None when all is well."""
    from ..core.errors import StudyError
    from ..io.dicom_read import SPECT_MODALITIES, ct_header_of, spect_header_of

    cts = {}
    rows, notes = [], []
    for s in series:
        row = [s.modality, str(len(s.files)), s.description] + [""] * 5
        note = (None, None)
        try:
            if s.modality in SPECT_MODALITIES:
                h = spect_header_of(s, folder)
                row[3:] = [str(h.units), str(h.decay_correction), str(h.acquisition or "-"),
                            str(h.administration or "-"), str(h.nuclide or "-")]
                note = _date_note(h)
            elif s.modality == "CT":
                h = ct_header_of(s)
                cts.setdefault(h.frame_of_reference_uid, []).append(h)
        except StudyError as exc:
            note = ("unusable", str(exc))
        rows.append(row)
        notes.append(note)
    for k, s in enumerate(series):  # after the CTs: contours checked against their grid
        if s.modality == "RTSTRUCT":
            notes[k] = _rtstruct_note(s, cts)
    return rows, notes


def _date_note(h):
    """A SPECT header's unreadable dates: unusable when the decay-correction reference is
    needed (no key replaces it), else a note naming the study-file key that does."""
    dp = h.date_problems
    if "decay_reference" in dp and h.decay_correction not in (None, "NONE"):
        return "unusable", f"{dp['decay_reference']}; DecayCorrection = " \
            f"{h.decay_correction} needs it; fix the file"
    keys = {"acquisition": "timepoints[i].time_h",
            "administration": "study.administration_datetime or timepoints[i].time_h"}
    msgs = [f"{dp[k]}: give {key} in the study file" for k, key in keys.items() if k in dp]
    return ("note", "; ".join(msgs)) if msgs else (None, None)


def _rtstruct_note(s, cts: dict):
    """Each RTSTRUCT file read; its contours checked against the one usable CT series of its
    frame of reference in the folder, when there is one."""
    from ..core.errors import StudyError
    from ..io.rtstruct import check_rtstruct_in_grid, read_rtstruct_header

    warns = []
    try:
        for f in s.files:
            h = read_rtstruct_header(f)
            ct = [c for uid in h.frame_of_reference_uids for c in cts.get(uid, [])]
            if len(ct) == 1:
                warns += check_rtstruct_in_grid(h, ct[0].grid)
    except StudyError as exc:
        return "unusable", str(exc)
    return ("note", "; ".join(warns)) if warns else (None, None)


@app.command()
def rtdose(
    dose: Path = typer.Argument(..., help="dose image in Gy (NIfTI/MHD/NRRD)"),
    out: Path = typer.Option(..., "--out", help="RT Dose file to write (.dcm)"),
    reference: Path = typer.Option(None, "--reference", help="reference CT (DICOM folder or "
                                   "file): frame of reference, study and patient copied"),
):
    """Convert a dose image (Gy) to DICOM RT Dose (uint32 + DoseGridScaling, within 0.1 %)."""
    from ..io.atomic import staged_files
    from ..io.dicom_write import write_rt_dose
    from ..io.sitk_adapter import read_image, sidecar_path
    from .checks import distinct_outputs, input_file, input_path, output_file

    input_file(dose, "DOSE", "dose image")
    if reference is not None:
        input_path(reference, "--reference", "reference CT (DICOM folder or file)")
    output_file(out, "--out")  # before any work
    distinct_outputs({"--out": out}, [dose, sidecar_path(dose)])
    img = read_image(dose, "absorbed dose", "Gy")
    unit = str(img.meta.get("unit", "Gy"))
    if unit.strip().lower() not in ("gy", "gray"):
        raise InputError(f"{dose}: its sidecar gives the unit '{unit}' "
                         f"({img.meta.get('quantity', 'unknown quantity')}), not Gy; RT Dose "
                         "holds absorbed dose: give a dose image (e.g. from voxdose dose)")
    with staged_files([out]) as stage:  # a failure leaves no file and no new folder
        write_rt_dose(stage(out), img, reference=reference)
    console.print(f"wrote {out}")


@app.command("export-dicom")
def export_dicom(
    study: Path = typer.Argument(..., help="study file (study.toml) of an image-file study"),
    out_dir: Path = typer.Argument(..., help="folder for the DICOM study and its study.toml"),
    units: str = typer.Option("BQML", help="NM pixel unit: BQML (Bq/mL) or CNTS (counts, "
                              "0.5 Bq/mL per count written to the study file)"),
):
    """Write a study (e.g. the demo's) as DICOM: NM per time point, CT series, RTSTRUCT."""
    from ..study.export import export_study_dicom
    from .checks import input_file, output_folder

    if units not in ("BQML", "CNTS"):
        raise InputError(f"--units {units}: use BQML or CNTS")
    input_file(study, "STUDY", "study file")
    output_folder(out_dir, "OUT_DIR")  # before any work
    if Path(out_dir).resolve() == Path(study).resolve().parent:
        raise InputError(f"OUT_DIR {out_dir} is the study's own folder; its study.toml would "
                         "be replaced: give another folder")
    p = export_study_dicom(study, out_dir, units=units)
    console.print(f"wrote {p}")
