"""The cohort file (validation before anything runs), the pre -> post arithmetic against the
seed's hand-computed numbers, the cohort tables and figures from results folders, and the
demo cohort's parameters. No dask cluster here (tests/test_cohort.py runs one)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from voxdose.analysis.dvh import CSV_COLUMNS
from voxdose.cli.app import main
from voxdose.cohort.cohort_file import Cohort, CohortStudy, load_cohort, markdown_table
from voxdose.cohort.runner import Outcome, stale_reason
from voxdose.cohort.summary import write_cohort_outputs
from voxdose.core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _studies(root: Path, *rel: str) -> None:
    for r in rel:
        p = root / r
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("# placeholder: the cohort file's checks do not read studies\n")


GOOD = """[cohort]
name = "test"
limits_gy = { kidneys = 23.0, marrow = 1.0 }
after_h = { marrow = 336.0 }

[[studies]]
id = "p01-pre"
path = "p01/pre/study.toml"
patient = "p01"
phase = "pre"

[[studies]]
id = "p01-post"
path = "p01/post/study.toml"
patient = "p01"
phase = "post"
"""


@pytest.fixture()
def cohort_dir(tmp_path):
    _studies(tmp_path, "p01/pre/study.toml", "p01/post/study.toml", "p02/pre/study.toml",
             "p02/post/study.toml")
    return tmp_path


def test_good_cohort_file(cohort_dir):
    (cohort_dir / "cohort.toml").write_text(GOOD)
    c = load_cohort(cohort_dir / "cohort.toml")
    assert [(s.id, s.patient, s.phase) for s in c.studies] == [
        ("p01-pre", "p01", "pre"), ("p01-post", "p01", "post")]
    assert c.studies[0].path == (cohort_dir / "p01/pre/study.toml").resolve()
    assert c.limits_gy == {"kidneys": 23.0, "marrow": 1.0} and c.after_h == {"marrow": 336.0}


def test_glob_entry_takes_id_patient_phase_from_the_folders(cohort_dir):
    (cohort_dir / "cohort.toml").write_text('[[studies]]\nglob = "*/*/study.toml"\n')
    c = load_cohort(cohort_dir / "cohort.toml")
    assert [(s.id, s.patient, s.phase) for s in c.studies] == [
        ("p01-post", "p01", "post"), ("p01-pre", "p01", "pre"),
        ("p02-post", "p02", "post"), ("p02-pre", "p02", "pre")]


BAD = {
    "missing study path": (GOOD.replace("p01/post/study.toml", "p09/post/study.toml"),
                           "p09/post/study.toml"),
    "duplicate id": (GOOD.replace('id = "p01-post"', 'id = "p01-pre"'),
                     "duplicate study id 'p01-pre'"),
    "unknown phase": (GOOD.replace('phase = "post"', 'phase = "postt"'),
                      "did you mean 'post'"),
    "unknown key": (GOOD.replace('patient = "p01"\nphase = "pre"',
                                 'patiant = "p01"\nphase = "pre"'),
                    "unknown key 'studies[0].patiant'; did you mean 'patient'"),
    "unknown table": (GOOD.replace("[[studies]]", "[[study]]", 1), "did you mean '[[studies]]'"),
    "after_h without a limit": (GOOD.replace("after_h = { marrow", "after_h = { liver"),
                                "cohort.after_h.liver has no limit"),
    "bad id": (GOOD.replace('id = "p01-pre"', 'id = "../p01"'), "cannot name a results"),
    "two pre studies": (GOOD.replace('phase = "post"', 'phase = "pre"'),
                        "two pre-therapy studies"),
    "no studies": ("[cohort]\nname = 'x'\n", "at least one [[studies]]"),
    "not TOML": ("[[studies]\nid = 1", "not a valid TOML file"),
}


def test_pre_and_post_of_another_nuclide_refused_before_anything_runs(cohort_dir, capsys):
    """A patient's pre-therapy Lu-177 study against a Y-90 post-therapy one: the prediction
    (pre Gy/GBq x GBq given) would mix two nuclides; the same pair named alike passes."""
    (cohort_dir / "p01/pre/study.toml").write_text('[study]\nnuclide = "177Lu"\n')
    (cohort_dir / "p01/post/study.toml").write_text('[study]\nnuclide = "Y-90"\n')
    (cohort_dir / "cohort.toml").write_text(GOOD)
    with pytest.raises(InputError, match=r"patient 'p01': pre-therapy study 'p01-pre' is "
                                         r"Lu-177, post-therapy study 'p01-post' is Y-90"):
        load_cohort(cohort_dir / "cohort.toml")
    out = cohort_dir / "results"
    rc = main(["cohort", str(cohort_dir / "cohort.toml"), "--out", str(out), "--device", "cpu"])
    assert rc == 2 and not out.exists()
    assert "needs one nuclide" in capsys.readouterr().err
    (cohort_dir / "p01/post/study.toml").write_text('[study]\nnuclide = "Lu-177"\n')
    assert len(load_cohort(cohort_dir / "cohort.toml").studies) == 2


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_cohort_file_refused_in_one_line_before_anything_runs(cohort_dir, case, capsys):
    text, expected = BAD[case]
    (cohort_dir / "cohort.toml").write_text(text)
    with pytest.raises(InputError, match=None) as exc:
        load_cohort(cohort_dir / "cohort.toml")
    assert expected in str(exc.value)
    out = cohort_dir / "results"
    rc = main(["cohort", str(cohort_dir / "cohort.toml"), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("voxdose: error: ") and "\n" not in err
    assert "Traceback" not in err and str(cohort_dir / "cohort.toml") in err
    assert not out.exists()  # nothing ran, nothing written


def test_bad_options_refused(cohort_dir, capsys):
    (cohort_dir / "cohort.toml").write_text(GOOD)
    base = ["cohort", str(cohort_dir / "cohort.toml"), "--out", str(cohort_dir / "r")]
    for extra, text in ((["--workers", "0"], "--workers must be >= 1"),
                        (["--scheduler", "localhost"], "not a scheduler address"),
                        (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
                         "leave out --workers"),
                        (["--device", "tpu"], "unknown device")):
        assert main(base + extra) == 2
        assert text in capsys.readouterr().err
    assert not (cohort_dir / "r").exists()


def test_docs_table_is_the_schema():
    doc = (ROOT / "docs" / "cohort.md").read_text()
    assert markdown_table() in doc


# ---------------------------------------------------------------- the pre -> post loop

def _results(folder: Path, activity_mbq: float, kidney_gy: tuple[float, float],
             plan: dict | None = None, marrow_gy: float | None = None,
             nuclide: str = "Lu-177") -> None:
    """A results folder in the pipeline's file formats (dvh.csv columns from the DVH
    module, provenance.json's study record)."""
    folder.mkdir(parents=True)
    rows = [{"name": n, "volume_ml": 150.0, "mean_gy": g, "min_gy": g / 2, "max_gy": 2 * g,
             "d2_gy": 1.5 * g, "d50_gy": g, "d98_gy": g / 2}
            for n, g in zip(("kidney_left", "kidney_right"), kidney_gy)]
    rows.append({"name": "liver", "volume_ml": 1500.0, "mean_gy": activity_mbq * 1e-4,
                 "min_gy": 0, "max_gy": 1, "d2_gy": 1, "d50_gy": 1, "d98_gy": 0})
    with open(folder / "dvh.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (folder / "provenance.json").write_text(json.dumps(
        {"study": {"nuclide": nuclide, "administered_activity_mbq": activity_mbq},
         "outputs": ["dvh.csv"], "inputs_sha256": {}}))
    if plan is not None:
        (folder / "plan.json").write_text(json.dumps(plan))
    if marrow_gy is not None:
        (folder / "marrow.json").write_text(json.dumps({"total_dose_gy": marrow_gy}))


@pytest.fixture(scope="module")
def seed_loop(tmp_path_factory):
    """The seed's patients #1 and #4 (kidneys), plus patient #2 with a pre study only.

    Patient #1: pre 1.59 Gy/GBq = (0.300 + 0.336) Gy / 2 at 0.2 GBq; given 12.0 GBq; post
    0.87 Gy/GBq = (10.20 + 10.68) Gy / 2 at 12.0 GBq. Patient #4: 1.18 Gy/GBq (0.236 Gy at
    0.2 GBq) and 0.68 Gy/GBq (7.752 Gy at 11.4 GBq)."""
    root = tmp_path_factory.mktemp("seed_loop")
    out = root / "results"
    plan1 = {"max_activity_gbq": 14.47, "limiting_organ": "kidneys",
             "constraints": [{"organ": "kidneys", "allowed_activity_gbq": 14.47,
                              "limit": "<= 23 Gy"},
                             {"organ": "marrow", "allowed_activity_gbq": 15.2,
                              "limit": "<= 1 Gy after 336 h"}]}
    _results(out / "p1-pre", 200.0, (0.300, 0.336), plan=plan1, marrow_gy=0.05)
    _results(out / "p1-post", 12000.0, (10.20, 10.68), marrow_gy=2.4)
    _results(out / "p4-pre", 200.0, (0.236, 0.236),
             plan={"max_activity_gbq": 11.9, "limiting_organ": "marrow", "constraints": []})
    _results(out / "p4-post", 11400.0, (7.752, 7.752))
    _results(out / "p2-pre", 200.0, (0.2, 0.2))
    studies = tuple(CohortStudy(i, root / i / "study.toml", i.split("-")[0], i.split("-")[1])
                    for i in ("p1-pre", "p1-post", "p4-pre", "p4-post", "p2-pre"))
    cohort = Cohort(path=root / "cohort.toml", name="seed", studies=studies,
                    limits_gy={"kidneys": 23.0, "marrow": 1.0}, after_h={"marrow": 336.0})
    outcomes = [Outcome(s.id, "skipped") for s in studies]
    written = write_cohort_outputs(cohort, out, outcomes)
    return out, written


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_pre_post_arithmetic_gives_the_seed_numbers(seed_loop):
    out, _ = seed_loop
    rows = {(r["patient"], r["structure"]): r for r in _read(out / "pre_post.csv")}
    k1, k4 = rows[("p1", "kidneys")], rows[("p4", "kidneys")]
    # patient #1: 1.59 Gy/GBq x 12.0 GBq -> 19.1 Gy predicted; 0.87 Gy/GBq -> 10.4 Gy; 0.55
    assert round(float(k1["pre_gy_per_gbq"]), 2) == 1.59
    assert float(k1["given_activity_gbq"]) == 12.0
    assert round(float(k1["predicted_gy"]), 1) == 19.1
    assert round(float(k1["post_gy_per_gbq"]), 2) == 0.87
    assert round(float(k1["post_gy"]), 1) == 10.4
    assert round(float(k1["ratio_post_pre"]), 2) == 0.55
    assert float(k1["planned_activity_gbq"]) == 14.47 and k1["limiting_organ"] == "kidneys"
    # patient #4: 1.18 / 0.68 Gy/GBq, 11.4 GBq -> 13.5 Gy predicted, 7.8 Gy delivered
    assert round(float(k4["pre_gy_per_gbq"]), 2) == 1.18
    assert round(float(k4["post_gy_per_gbq"]), 2) == 0.68
    assert float(k4["given_activity_gbq"]) == 11.4
    assert round(float(k4["predicted_gy"]), 1) == 13.5
    assert round(float(k4["post_gy"]), 1) == 7.8
    # kidneys, liver, marrow first; the pre-only patient has no row
    assert [r["structure"] for r in _read(out / "pre_post.csv") if r["patient"] == "p1"][:3] \
        == ["kidneys", "liver", "marrow"]
    assert not any(r["patient"] == "p2" for r in _read(out / "pre_post.csv"))


def test_summary_rows_and_units(seed_loop):
    out, _ = seed_loop
    rows = _read(out / "summary.csv")
    assert list(rows[0]) == ["id", "patient", "phase", "nuclide", "administered_activity_mbq",
                             "structure", "volume_ml", "mean_gy", "d2_gy", "d50_gy",
                             "d98_gy", "gy_per_gbq"]
    by = {(r["id"], r["structure"]): r for r in rows}
    assert float(by[("p1-pre", "kidney_right")]["mean_gy"]) == 0.336
    assert float(by[("p1-pre", "kidney_right")]["gy_per_gbq"]) == pytest.approx(1.68)
    assert float(by[("p1-pre", "kidneys")]["volume_ml"]) == 300.0
    assert float(by[("p1-post", "marrow")]["gy_per_gbq"]) == pytest.approx(0.2)  # 2.4/12
    assert by[("p1-post", "marrow")]["volume_ml"] == ""  # the EANM row has no volume
    assert _read(out / "failures.csv") == []


def test_cohort_html_and_figures(seed_loop):
    out, written = seed_loop
    assert {"summary.csv", "pre_post.csv", "failures.csv", "cohort.html"} <= set(written)
    html = (out / "cohort.html").read_text()
    for name in ("gy_per_gbq.png", "predicted_vs_delivered.png", "limiting_organ.png"):
        assert (out / "cohort_figures" / name).stat().st_size > 5000
    assert html.count("data:image/png;base64,") == 3
    assert "Pre-therapy prediction" in html and "p1-post" in html


def test_stale_reason_needs_complete_results(tmp_path):
    s = CohortStudy("a", tmp_path / "study.toml", "a", "pre")
    assert stale_reason(tmp_path / "a", s) == "no results yet"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "provenance.json").write_text(json.dumps(
        {"outputs": ["dvh.csv", "provenance.json"], "inputs_sha256": {"x": "0"}}))
    assert stale_reason(tmp_path / "a", s).startswith("incomplete results (dvh.csv")


# ---------------------------------------------------------------- the demo cohort

def test_demo_cohort_writes_a_valid_cohort(tmp_path):
    from voxdose.cohort.demo import build_cohort

    path = build_cohort(tmp_path / "c", n_patients=2, seed=7, ct_spacing_mm=9.6)
    c = load_cohort(path)
    assert [(s.id, s.phase) for s in c.studies] == [
        ("p01-pre", "pre"), ("p01-post", "post"), ("p02-pre", "pre"), ("p02-post", "post")]
    assert c.limits_gy == {"kidneys": 23.0, "marrow": 1.0}
    pats = _read(tmp_path / "c" / "patients.csv")
    assert pats[0]["anatomy_scale"] != pats[1]["anatomy_scale"]
    for p in pats:
        pre = (tmp_path / "c" / p["patient"] / "pre" / "study.toml").read_text()
        post = (tmp_path / "c" / p["patient"] / "post" / "study.toml").read_text()
        assert "administered_activity_mbq = 200.0" in pre
        assert f"administered_activity_mbq = {float(p['given_activity_mbq'])}" in post
        assert 1000 <= float(p["given_activity_mbq"]) <= 60000
        assert abs(float(p["given_activity_mbq"]) - float(p["planned_activity_mbq"])) <= 50


def test_pre_post_tables_refuse_a_pair_of_two_nuclides_found_in_the_results(tmp_path):
    """Studies whose files name no nuclide (DICOM) pass the cohort file's check; their
    results then show Lu-177 before and Y-90 after: that pair gets no prediction and a line
    in failures.csv, while another patient's pair keeps its rows."""
    out = tmp_path / "results"
    _results(out / "p1-pre", 200.0, (0.3, 0.3))
    _results(out / "p1-post", 12000.0, (10.2, 10.2), nuclide="Y-90")
    _results(out / "p2-pre", 200.0, (0.3, 0.3))
    _results(out / "p2-post", 12000.0, (10.2, 10.2))
    studies = tuple(CohortStudy(i, tmp_path / i / "study.toml", i.split("-")[0],
                                i.split("-")[1]) for i in ("p1-pre", "p1-post", "p2-pre",
                                                           "p2-post"))
    cohort = Cohort(path=tmp_path / "cohort.toml", name="x", studies=studies)
    written = write_cohort_outputs(cohort, out, [Outcome(s.id, "skipped") for s in studies])
    pre_post = _read(written["pre_post.csv"])
    assert {r["patient"] for r in pre_post} == {"p2"}
    (fail,) = _read(written["failures.csv"])
    assert fail["id"] == "p1-post"
    assert "pre-therapy study 'p1-pre' is Lu-177, this post-therapy study is Y-90" in fail["error"]


def test_a_utf8_byte_order_mark_is_read_past(cohort_dir, small_study, tmp_path):
    """Editors that write a UTF-8 BOM first (Notepad): the cohort and study files read as
    without it (tomllib alone said "Invalid statement (at line 1, column 1)")."""
    import shutil

    from voxdose.study.load import load_study

    (cohort_dir / "cohort.toml").write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert len(load_cohort(cohort_dir / "cohort.toml").studies) == 2
    study = tmp_path / "bom_study"
    shutil.copytree(small_study.parent, study)
    toml = study / "study.toml"
    plain = load_study(toml)
    toml.write_bytes(b"\xef\xbb\xbf" + toml.read_bytes())
    bom = load_study(toml)
    assert bom.nuclide == plain.nuclide and len(bom.timepoints) == len(plain.timepoints)
