"""Write an image-file study (e.g. the synthetic demo study) as a DICOM study.

Per time point: the SPECT as one NM multi-frame reconstruction (Units BQML by default,
RescaleSlope so that uint16 values hold Bq/mL, acquisition date/time = administration +
time_h, RadiopharmaceuticalInformationSequence with the start date/time, total dose and
nuclide), and the CT as one int16 file per slice; SPECT and CT of a time point share one
FrameOfReferenceUID, as on a SPECT/CT scanner. The structures stay a label image + names
(copied). The new ``study.toml`` leaves ``time_h``, ``nuclide`` and the administered
activity out, so they are read from the files.

Options make the variants the reader must handle: ``units="CNTS"`` (stored counts; the
study file gets ``spect.calibration_factor``) and ``decay_correction="ADMIN"`` (frames
decay-corrected to the administration, which the reader undoes).
"""

from __future__ import annotations

import math
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from .images import read_timepoint_ct, read_timepoint_spect
from ..io.atomic import staged_directory, write_text
from ..io.dicom_write import write_ct, write_nm
from .load import load_study

DEFAULT_ADMINISTRATION = datetime(2024, 3, 1, 9, 30, 0)


def export_study_dicom(study_toml, out_dir, *, administration: datetime =
                       DEFAULT_ADMINISTRATION, units: str = "BQML",
                       bq_ml_per_count: float = 0.5, decay_correction: str = "NONE",
                       patient_id: str = "VOXDOSE-PHANTOM") -> Path:
    """Export ``study_toml``'s study to ``out_dir`` (atomically); return the new study.toml."""
    from pydicom.uid import generate_uid

    if units not in ("BQML", "CNTS"):
        raise ValueError("units must be BQML or CNTS")
    if decay_correction not in ("NONE", "ADMIN"):
        raise ValueError("decay_correction must be NONE or ADMIN")
    study = load_study(study_toml)
    lam = study.nuclide.decay_constant_per_s
    study_uid = generate_uid()
    out_dir = Path(out_dir)
    lines = [
        "# voxdose study file: DICOM export of an image-file study",
        "# times, nuclide and administered activity are read from the DICOM files",
        "[study]",
        f'name = "{study.name} (DICOM)"',
        f"reference_timepoint = {study.reference_index}",
        "",
    ]
    if units == "CNTS":
        lines += ["[spect]", f"calibration_factor = {bq_ml_per_count!r}   # Bq/mL per count",
                  ""]
    tp_lines = []
    with staged_directory(out_dir) as stage:
        for i, tp in enumerate(study.timepoints):
            when = administration + timedelta(hours=tp.time_h)
            for_uid = generate_uid()
            spect = read_timepoint_spect(tp)
            vals = spect.data * (study.spect_to_bq_ml if tp.spect_dicom is None else 1.0)
            if decay_correction == "ADMIN":
                vals = vals * math.exp(lam * tp.time_h * 3600.0)
            if units == "CNTS":
                vals = vals / bq_ml_per_count
            tag = f"tp{i + 1:02d}"
            write_nm(stage / tag / "spect", vals.clip(0, None), spect.grid, units=units,
                     acquisition=when, administration=administration,
                     nuclide=study.nuclide.name,
                     total_dose_bq=study.administered_activity_mbq * 1e6,
                     decay_correction=decay_correction, frame_duration_s=1200.0,
                     patient_id=patient_id, study_uid=study_uid, for_uid=for_uid,
                     description=f"SPECT {tp.time_h:g} h")
            tp_lines += ["[[timepoints]]", f'spect = "{tag}/spect"']
            if tp.ct is not None:
                ct = read_timepoint_ct(tp)
                write_ct(stage / tag / "ct", ct.data, ct.grid, patient_id=patient_id,
                         study_uid=study_uid, for_uid=for_uid, when=when,
                         description=f"CT {tp.time_h:g} h")
                tp_lines.append(f'ct = "{tag}/ct"')
            tp_lines.append("")
        if study.labels is not None:
            shutil.copyfile(study.labels, stage / "labels.nii.gz")
            names = "{" + ", ".join(f'"{k}": "{v}"' for k, v in study.names.items()) + "}"
            write_text(stage / "structure_names.json", names + "\n")
            lines += ["[structures]", 'labels = "labels.nii.gz"',
                      'names = "structure_names.json"', ""]
        lines += [f'[patient]\nsex = "{study.sex}"', ""]
        write_text(stage / "study.toml", "\n".join(lines + tp_lines))
    return out_dir / "study.toml"
