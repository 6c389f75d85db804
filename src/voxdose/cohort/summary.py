"""The cohort's tables, read from each study's results folder through its files.

* ``summary.csv``: one row per study x structure (:data:`SUMMARY_COLUMNS`), from the
  study's ``dvh.csv`` (kernel dose) and ``provenance.json`` (nuclide, administered activity),
  plus two composite rows: ``kidneys`` (every ``kidney*`` structure, volume-weighted mean: the
  pipeline's mass weighting when the dose is computed in water) and ``marrow`` (the EANM
  L2-L4 red-marrow dose of ``marrow.json``; no volume or D-values). Gy/GBq = mean dose /
  administered activity.
* ``pre_post.csv``: for every patient with a pre- and a post-therapy study, per structure
  both have (kidneys, liver, marrow first): the pre study's Gy/GBq, the activity its plan
  allowed (``plan.json``: the largest activity under the limits, and the limiting organ),
  the activity given (the post study's administered activity), the dose predicted from the
  pre study (pre Gy/GBq x given GBq), the post-therapy dose and the ratio post/predicted
  (= post Gy/GBq / pre Gy/GBq).
* ``failures.csv``: ``id,error`` for every study that failed in this run (header only when
  none did).

Every table is written with the figures and ``cohort.html`` as one staged set: all or none.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .cohort_file import Cohort, CohortStudy

SUMMARY_COLUMNS = ("id", "patient", "phase", "nuclide", "administered_activity_mbq",
                   "structure", "volume_ml", "mean_gy", "d2_gy", "d50_gy", "d98_gy",
                   "gy_per_gbq")
PRE_POST_COLUMNS = ("patient", "structure", "pre_id", "post_id", "pre_gy_per_gbq",
                    "planned_activity_gbq", "limiting_organ", "given_activity_gbq",
                    "predicted_gy", "post_gy_per_gbq", "post_gy", "ratio_post_pre")
FAILURE_COLUMNS = ("id", "error")
#: structures listed first in pre_post.csv (then every other structure both studies have)
KEY_ORGANS = ("kidneys", "liver", "marrow")
KIDNEYS, MARROW = "kidneys", "marrow"


@dataclass
class StudyResults:
    """What the cohort reads from one study's results folder."""

    nuclide: str
    administered_activity_mbq: float
    dvh: list[dict]                      # dvh.csv rows (as read, by column name)
    marrow_gy: float | None = None       # marrow.json total_dose_gy
    plan: dict | None = None             # plan.json
    report: str = ""                     # relative path of the study's report.html
    notes: list[str] = field(default_factory=list)


def _num(v) -> float | None:
    """A CSV / JSON value as a float; blank, missing or non-finite -> None."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_results(res_dir: Path) -> StudyResults:
    """One study's results (provenance.json, dvh.csv, marrow.json, plan.json), read by
    file format and column name."""
    prov = _json(res_dir / "provenance.json") or {}
    st = prov.get("study") or {}
    dvh = []
    if (res_dir / "dvh.csv").is_file():  # a study without structures has no DVHs
        with open(res_dir / "dvh.csv", newline="", encoding="utf-8") as f:
            dvh = list(csv.DictReader(f))
    marrow = _json(res_dir / "marrow.json")
    plan = _json(res_dir / "plan.json")
    return StudyResults(
        nuclide=str(st.get("nuclide", "")),
        administered_activity_mbq=float(st["administered_activity_mbq"]),
        dvh=dvh, marrow_gy=_num(marrow.get("total_dose_gy")) if isinstance(marrow, dict)
        else None, plan=plan if isinstance(plan, dict) else None,
        report=f"{res_dir.name}/report.html" if (res_dir / "report.html").is_file() else "")


def _structure(row: dict) -> str:
    return str(row.get("name") or row.get("structure") or "").strip()


def summary_rows(study: CohortStudy, res: StudyResults) -> list[dict]:
    """summary.csv rows of one study (every DVH structure, then kidneys and marrow)."""
    gbq = res.administered_activity_mbq / 1000.0
    base = {"id": study.id, "patient": study.patient, "phase": study.phase,
            "nuclide": res.nuclide, "administered_activity_mbq": res.administered_activity_mbq}
    rows, names = [], set()
    for r in res.dvh:
        name = _structure(r)
        mean = _num(r.get("mean_gy"))
        names.add(name)
        rows.append({**base, "structure": name, "volume_ml": _num(r.get("volume_ml")),
                     "mean_gy": mean, "d2_gy": _num(r.get("d2_gy")),
                     "d50_gy": _num(r.get("d50_gy")), "d98_gy": _num(r.get("d98_gy")),
                     "gy_per_gbq": None if mean is None else mean / gbq})
    kid = [r for r in rows if r["structure"].startswith("kidney") and r["mean_gy"] is not None
           and r["volume_ml"]]
    if kid and KIDNEYS not in names:
        vol = sum(r["volume_ml"] for r in kid)
        mean = sum(r["volume_ml"] * r["mean_gy"] for r in kid) / vol
        rows.append({**base, "structure": KIDNEYS, "volume_ml": vol, "mean_gy": mean,
                     "d2_gy": None, "d50_gy": None, "d98_gy": None, "gy_per_gbq": mean / gbq})
    if res.marrow_gy is not None and MARROW not in names:
        rows.append({**base, "structure": MARROW, "volume_ml": None, "mean_gy": res.marrow_gy,
                     "d2_gy": None, "d50_gy": None, "d98_gy": None,
                     "gy_per_gbq": res.marrow_gy / gbq})
    return rows


def _ordered(names: list[str]) -> list[str]:
    first = [n for n in KEY_ORGANS if n in names]
    return first + [n for n in names if n not in first]


def pre_post_rows(cohort: Cohort, summary: list[dict], plans: dict[str, dict | None],
                  failures: list | None = None) -> list[dict]:
    """pre_post.csv rows: every post study of a patient with a pre study, per structure
    both studies have. ``plans``: study id -> its plan.json (or None). A pair whose
    results name two nuclides gets no rows (the prediction holds for one nuclide): it is
    appended to ``failures`` (failures.csv) instead; the other patients' rows stay."""
    by_study: dict[str, dict[str, dict]] = {}
    activity: dict[str, float] = {}
    for r in summary:
        by_study.setdefault(r["id"], {})[r["structure"]] = r
        activity[r["id"]] = float(r["administered_activity_mbq"])
    pre = {s.patient: s.id for s in cohort.studies if s.phase == "pre" and s.id in by_study}
    rows = []
    for post in (s for s in cohort.studies if s.phase == "post" and s.id in by_study):
        pre_id = pre.get(post.patient)
        if pre_id is None:
            continue
        plan = plans.get(pre_id) or {}
        given_gbq = activity[post.id] / 1000.0
        a, b = by_study[pre_id], by_study[post.id]
        nuc_a, nuc_b = (next(iter(x.values()))["nuclide"] for x in (a, b))
        if nuc_a and nuc_b and nuc_a != nuc_b:  # the study files named none (DICOM)
            if failures is not None:
                failures.append({"id": post.id, "error": (
                    f"no pre-post comparison for patient {post.patient!r}: pre-therapy study "
                    f"{pre_id!r} is {nuc_a}, this post-therapy study is {nuc_b}; the "
                    "prediction needs one nuclide (give the pair the same nuclide, or "
                    "phase = \"other\")")})
            continue
        for name in _ordered([n for n in a if n in b]):
            pre_g, post_g = a[name]["gy_per_gbq"], b[name]["gy_per_gbq"]
            if pre_g is None or post_g is None:
                continue
            predicted = pre_g * given_gbq
            post_gy = b[name]["mean_gy"]
            rows.append({"patient": post.patient, "structure": name, "pre_id": pre_id,
                         "post_id": post.id, "pre_gy_per_gbq": pre_g,
                         "planned_activity_gbq": _num(plan.get("max_activity_gbq")),
                         "limiting_organ": plan.get("limiting_organ", ""),
                         "given_activity_gbq": given_gbq, "predicted_gy": predicted,
                         "post_gy_per_gbq": post_g, "post_gy": post_gy,
                         "ratio_post_pre": post_gy / predicted if predicted > 0 else None})
    return rows


def csv_text(columns, rows: list[dict]) -> str:
    """CSV with ``columns``; floats with 6 significant digits, None blank."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n",
                       extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else "" if v is None else v)
                    for k, v in r.items()})
    return buf.getvalue()


def collect(cohort: Cohort, out_dir: Path, outcomes) -> tuple[list, dict, dict, list]:
    """Read every study with results this run (done or skipped): summary rows, plans,
    StudyResults by id, and failures (a study whose results cannot be read is one)."""
    status = {o.id: o for o in outcomes}
    summary, plans, results = [], {}, {}
    failures = [{"id": o.id, "error": o.error} for o in outcomes if o.status == "failed"]
    for s in cohort.studies:
        if status[s.id].status == "failed":
            continue
        try:
            res = read_results(out_dir / s.id)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            failures.append({"id": s.id, "error": f"results could not be read: {exc}"})
            continue
        results[s.id] = res
        plans[s.id] = res.plan
        summary += summary_rows(s, res)
    return summary, plans, results, failures


def write_cohort_outputs(cohort: Cohort, out_dir: Path, outcomes) -> dict[str, Path]:
    """summary.csv, pre_post.csv, failures.csv, cohort.html and its figures, staged and
    moved into ``out_dir`` together. Returns the written paths by name."""
    from ..io.atomic import staged_files
    from .report import FIGURES, FIGURE_DIR, write_report

    out_dir = Path(out_dir)
    summary, plans, results, failures = collect(cohort, out_dir, outcomes)
    pre_post = pre_post_rows(cohort, summary, plans, failures)
    tables = {"summary.csv": csv_text(SUMMARY_COLUMNS, summary),
              "pre_post.csv": csv_text(PRE_POST_COLUMNS, pre_post),
              "failures.csv": csv_text(FAILURE_COLUMNS, failures)}
    targets = [out_dir / n for n in [*tables, "cohort.html"]]
    targets += [out_dir / FIGURE_DIR / f for f in FIGURES]
    with staged_files(targets) as stage:
        for name, text in tables.items():
            stage(out_dir / name).write_text(text, encoding="utf-8")
        written = write_report(stage, out_dir, cohort, summary, pre_post, plans, results,
                               outcomes, failures)
    for f in FIGURES:  # an earlier run's figure this run has no data for
        p = out_dir / FIGURE_DIR / f
        if f not in written and p.is_file():
            p.unlink()
    return {t.name: t for t in targets if t.is_file()}
