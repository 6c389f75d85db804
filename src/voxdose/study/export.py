"""Write a study (e.g. the synthetic demo study) as a DICOM study.

Per time point: the SPECT as one NM multi-frame reconstruction (Units BQML by default,
RescaleSlope so that uint16 values hold Bq/mL, acquisition date/time = administration +
time_h, RadiopharmaceuticalInformationSequence with the start date/time, total dose and
nuclide), and the CT as one int16 file per slice; SPECT and CT of a time point share one
FrameOfReferenceUID, as on a SPECT/CT scanner. The structures become an RTSTRUCT drawn on
the reference time point's CT (its SPECT without CTs): pixel-edge contours of the label
image (``io/rtstruct_write.py``), so voxdose reads back the same labels (their values are
1..n in label order; a structure without voxels keeps its name but has no contour). Every
object has the Type 1 and 2 attributes of its IOD (``io/dicom_write.IOD_ATTRIBUTES``).
The new ``study.toml`` leaves ``time_h``, ``nuclide`` and the administered activity out, so
they are read from the files, and keeps the original's ``[plan]``, ``[patient]``,
``[registration]`` and ``[kinetics]`` choices and its ``[dose]`` / ``[analysis]`` files.

Options make the variants the reader must handle: ``units="CNTS"`` (stored counts; the
study file gets ``spect.calibration_factor``) and ``decay_correction="ADMIN"`` (frames
decay-corrected to the administration, which the reader undoes).
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from ..core.grid import LabelMap
from ..io.atomic import staged_directory, write_text
from ..io.dicom_write import patient_tags, write_ct, write_nm
from .images import read_study_labels, read_timepoint_ct, read_timepoint_spect
from .load import load_study

DEFAULT_ADMINISTRATION = datetime(2024, 3, 1, 9, 30, 0)
RTSTRUCT_FILE = "rtstruct/RS000001.dcm"


def export_study_dicom(study_toml, out_dir, *, administration: datetime =
                       DEFAULT_ADMINISTRATION, units: str = "BQML",
                       bq_ml_per_count: float = 0.5, decay_correction: str = "NONE",
                       patient_id: str = "VOXDOSE-PHANTOM", body_part: str | None = None
                       ) -> Path:
    """Export ``study_toml``'s study to ``out_dir`` (atomically); return the new study.toml.
    ``body_part``: BodyPartExamined of the images (e.g. CHESTABDOMEN; none when unknown)."""
    from pydicom.uid import generate_uid

    if units not in ("BQML", "CNTS"):
        raise ValueError("units must be BQML or CNTS")
    if decay_correction not in ("NONE", "ADMIN"):
        raise ValueError("decay_correction must be NONE or ADMIN")
    study = load_study(study_toml)
    ctx = {"study": study, "study_uid": generate_uid(), "administration": administration,
           "units": units, "bq_ml_per_count": bq_ml_per_count,
           "decay_correction": decay_correction, "patient_id": patient_id,
           "patient": patient_tags(patient_id, sex=study.sex), "body_part": body_part}
    out_dir = Path(out_dir)
    lines = [
        "# voxdose study file: DICOM export of a voxdose study",
        "# times, nuclide and administered activity are read from the DICOM files",
        "[study]",
        f"name = {json.dumps(study.name + ' (DICOM)')}",
        f"reference_timepoint = {study.reference_index}",
        "",
    ]
    if units == "CNTS":
        lines += ["[spect]", f"calibration_factor = {bq_ml_per_count!r}   # Bq/mL per count",
                  ""]
    tp_lines, series = [], []
    with staged_directory(out_dir) as stage:
        for i, tp in enumerate(study.timepoints):
            toml, written = _export_timepoint(stage, i, tp, ctx)
            tp_lines += toml
            series.append(written)
        lines += _export_structures(stage, ctx, series[study.reference_index])
        lines += _kept_sections(study, stage)
        write_text(stage / "study.toml", "\n".join(lines + tp_lines))
    return out_dir / "study.toml"


def _export_timepoint(stage: Path, i: int, tp, ctx: dict):
    """One time point's NM (and CT) series; (its study.toml lines, (files, grid) of the
    image the structures are drawn on: the CT, or the SPECT without a CT)."""
    from pydicom.uid import generate_uid

    study, admin = ctx["study"], ctx["administration"]
    when = admin + timedelta(hours=tp.time_h)
    for_uid = generate_uid()
    spect = read_timepoint_spect(tp)
    # Bq/mL at acquisition: an image file's unit factor, any decay correction undone
    to_bq = study.spect_to_bq_ml if tp.to_bq_ml is None else tp.to_bq_ml
    vals = spect.data * (to_bq if tp.spect_dicom is None else 1.0) * \
        (1.0 if tp.decay_undo is None else tp.decay_undo)
    if ctx["decay_correction"] == "ADMIN":
        vals = vals * math.exp(study.nuclide.decay_constant_per_s * tp.time_h * 3600.0)
    if ctx["units"] == "CNTS":
        vals = vals / ctx["bq_ml_per_count"]
    tag = f"tp{i + 1:02d}"
    common = {"patient_id": ctx["patient_id"], "patient": ctx["patient"],
              "study_uid": ctx["study_uid"], "for_uid": for_uid, "body_part": ctx["body_part"]}
    files = write_nm(stage / tag / "spect", vals.clip(0, None), spect.grid,
                     units=ctx["units"], acquisition=when, administration=admin,
                     nuclide=study.nuclide.name,
                     total_dose_bq=study.administered_activity_mbq * 1e6,
                     decay_correction=ctx["decay_correction"], frame_duration_s=1200.0,
                     description=f"SPECT {tp.time_h:g} h", series_number=2 * i + 1,
                     **common)
    toml, drawn_on = ["[[timepoints]]", f'spect = "{tag}/spect"'], (files, spect.grid)
    if tp.ct is not None:
        ct = read_timepoint_ct(tp)
        files = write_ct(stage / tag / "ct", ct.data, ct.grid, when=when,
                         description=f"CT {tp.time_h:g} h", series_number=2 * i + 2,
                         **common)
        toml.append(f'ct = "{tag}/ct"')
        drawn_on = (files, ct.grid)
    return toml + [""], drawn_on


def _export_structures(stage: Path, ctx: dict, drawn_on) -> list[str]:
    """The study's structures as an RTSTRUCT on the reference time point's image; its
    study.toml lines (none without structures)."""
    from ..io.rtstruct_write import series_ref, write_labels_rtstruct

    study = ctx["study"]
    labels = read_study_labels(study)
    if labels is None:
        return []
    files, grid = drawn_on
    on_image = LabelMap(labels.data, grid, dict(labels.names))
    write_labels_rtstruct(stage / RTSTRUCT_FILE, on_image, series_ref(files, grid),
                          patient=ctx["patient"], patient_id=ctx["patient_id"],
                          series_number=2 * len(study.timepoints) + 1)
    return ["[structures]", f'rtstruct = "{RTSTRUCT_FILE}"', ""]


def _kept_sections(study, stage: Path) -> list[str]:
    """The original study's choices that are not in the DICOM files, as TOML: [patient],
    [plan], [registration], [kinetics], and the files of [dose] dpk and [analysis] s_table
    (copied)."""
    def table(d: dict) -> str:
        return "{ " + ", ".join(f"{json.dumps(k)} = {float(v)!r}" for k, v in d.items()) + " }"

    out = ["[patient]", f"sex = {json.dumps(study.sex)}", ""]
    if study.plan_limits_gy:
        out += ["[plan]", f"limits_gy = {table(study.plan_limits_gy)}"]
        if study.plan_after_h:
            out.append(f"after_h = {table(study.plan_after_h)}")
        out.append("")
    out += ["[registration]", f"transform = {json.dumps(study.registration)}",
            f"grid = {json.dumps(study.dose_grid)}"]
    if getattr(study, "allow_large_motion", False):
        out.append("allow_large_motion = true")
    out.append("")
    stp = getattr(study, "single_time_point", None)
    if stp:
        out += ["[kinetics]", f"single_time_point = {json.dumps(stp)}"]
        if stp == "effective":
            out.append(f"effective_half_life_h = {float(study.stp_half_life_h)!r}")
        out.append("")
    for section, key, src, name in (("dose", "dpk", study.dpk, "dpk.csv"),
                                    ("analysis", "s_table", study.s_table, "s_table.csv")):
        if src is not None:
            shutil.copyfile(src, stage / name)
            out += [f"[{section}]", f'{key} = "{name}"', ""]
    return out
