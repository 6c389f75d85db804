"""``voxdose cohort`` on real dask clusters: a LocalCluster with 2 workers (results equal
running each study alone; a corrupt study in failures.csv while the others finish; a
rerun skips the finished ones and retries the failed one) and an existing scheduler +
worker started here on 127.0.0.1 (``--scheduler``).

The studies are the synthetic phantom on a coarse grid (9.6 mm CT, 19.2 mm SPECT), three
time points and six structures, so that one pipeline run takes a few seconds of CPU."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from voxdose.cli.app import main
from voxdose.cohort.cohort_file import load_cohort
from voxdose.cohort.runner import run_cohort

#: the structures the test studies keep (the others become part of the remainder)
KEEP = {1: "remainder", 5: "kidney_left", 6: "kidney_right", 8: "marrow_L2", 9: "marrow_L3",
        10: "marrow_L4"}
GOOD = ("p1-pre", "p1-post", "p2-pre")


def _tiny_study(folder: Path, activity_mbq: float, seed: int, scale: float = 1.0) -> Path:
    import SimpleITK as sitk

    from voxdose.phantom.study import PhantomConfig, build_study

    cfg = PhantomConfig(ct_spacing_mm=9.6, times_h=(4.0, 24.0, 168.0), seed=seed,
                        administered_activity_mbq=activity_mbq, anatomy_scale=scale)
    path = build_study(folder, cfg)
    img = sitk.ReadImage(str(folder / "labels.nii.gz"))
    a = sitk.GetArrayFromImage(img)
    a = np.where(np.isin(a, list(KEEP)), a, np.where(a > 0, 1, 0)).astype(a.dtype)
    out = sitk.GetImageFromArray(a)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(folder / "labels.nii.gz"))
    (folder / "structure_names.json").write_text(json.dumps({str(k): v
                                                             for k, v in KEEP.items()}))
    return path


def _entry(sid: str, rel: str) -> str:
    patient, phase = sid.split("-")
    return (f'[[studies]]\nid = "{sid}"\npath = "{rel}"\npatient = "{patient}"\n'
            f'phase = "{phase}"\n\n')


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Three good studies and a corrupt one (a SPECT frame cut short), with cohort files."""
    root = tmp_path_factory.mktemp("cohort")
    paths = {"p1-pre": _tiny_study(root / "p1" / "pre", 200.0, 11),
             "p1-post": _tiny_study(root / "p1" / "post", 6000.0, 12),
             "p2-pre": _tiny_study(root / "p2" / "pre", 200.0, 13, scale=1.05)}
    shutil.copytree(root / "p2" / "pre", root / "p3" / "pre")
    frame = root / "p3" / "pre" / "spect_024h.nii.gz"
    frame.write_bytes(frame.read_bytes()[:200])
    entries = [_entry(i, f"{i.split('-')[0]}/{i.split('-')[1]}/study.toml")
               for i in (*GOOD, "p3-pre")]
    (root / "cohort.toml").write_text('[cohort]\nname = "test cohort"\n\n' + "".join(entries))
    (root / "one.toml").write_text(_entry("p2-pre", "p2/pre/study.toml"))
    return root, paths


@pytest.fixture(scope="module")
def first_run(studies, alone_started):
    root, _ = studies
    cohort = load_cohort(root / "cohort.toml")
    t0 = time.perf_counter()
    run = run_cohort(cohort, root / "results", workers=2, device="cpu")
    return cohort, run, time.perf_counter() - t0


_ALONE = """
import sys
from voxdose.pipeline.run import run_pipeline
for study, out in zip(sys.argv[1::2], sys.argv[2::2]):
    run_pipeline(study, out, device="cpu")
"""


def _worker_env() -> dict:
    """This process's environment with the thread settings dask gives its worker processes
    (one OpenMP / BLAS thread: distributed.nanny.pre-spawn-environ), so that summation orders
    are the same. (With more BLAS threads D98 and min values move by up to ~3e-5 relative.)"""
    import dask
    import distributed  # noqa: F401 - registers the distributed config

    pre = dask.config.get("distributed.nanny.pre-spawn-environ")
    return {**os.environ, **{k: str(v) for k, v in pre.items()}}


@pytest.fixture(scope="module")
def alone_started(studies, tmp_path_factory):
    """Each good study run alone: run_pipeline (what `voxdose run` does) in a fresh process
    with the workers' thread settings, started here to run beside the cohort's first run."""
    _, paths = studies
    out = tmp_path_factory.mktemp("alone")
    args = [a for sid, p in paths.items() for a in (str(p), str(out / sid))]
    proc = subprocess.Popen([sys.executable, "-c", _ALONE, *args], env=_worker_env())
    yield proc, {sid: out / sid for sid in paths}
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def alone(alone_started):
    proc, folders = alone_started
    assert proc.wait(timeout=600) == 0
    return folders


def _numbers(folder: Path) -> dict:
    """The dose numbers of a results folder: every dvh.csv value by (structure, column),
    the plan's activity, the marrow dose."""
    with open(folder / "dvh.csv", newline="") as f:
        out = {(r["name"], k): float(v) if v else None for r in csv.DictReader(f)
               for k, v in r.items() if k != "name"}
    out["max_activity_gbq"] = json.loads((folder / "plan.json").read_text())["max_activity_gbq"]
    out["marrow_gy"] = json.loads((folder / "marrow.json").read_text())["total_dose_gy"]
    return out


def _close(a: dict, b: dict) -> bool:
    """Same structures and columns, every number within 1e-4 relative. Measured: with the
    workers' thread settings a cohort study and the same study alone agree to the last of
    dvh.csv's 6 digits (min / max values at most 1 in it); a mixed-up study, option or
    input differs by far more."""
    return a.keys() == b.keys() and all(
        (a[k] is None and b[k] is None) or math.isclose(a[k], b[k], rel_tol=1e-4)
        for k in a)


def test_cohort_results_equal_each_study_alone(first_run, alone):
    _, run, _ = first_run
    assert "LocalCluster: 2 workers" in run.cluster
    for sid in GOOD:
        got, ref = run.out_dir / sid, alone[sid]
        assert _close(_numbers(got), _numbers(ref)), sid
        prov = json.loads((got / "provenance.json").read_text())
        ref_prov = json.loads((ref / "provenance.json").read_text())
        assert prov["outputs"] == ref_prov["outputs"]
        assert prov["inputs_sha256"] == ref_prov["inputs_sha256"]
        assert all((got / f).is_file() for f in prov["outputs"])
    # the summary holds each study's own numbers (no mix-up between studies)
    with open(run.out_dir / "summary.csv", newline="") as f:
        rows = {(r["id"], r["structure"]): r for r in csv.DictReader(f)}
    for sid in GOOD:
        with open(run.out_dir / sid / "dvh.csv", newline="") as f:
            own = {r["name"]: float(r["mean_gy"]) for r in csv.DictReader(f)}
        assert float(rows[(sid, "kidney_left")]["mean_gy"]) == own["kidney_left"]
        assert float(rows[(sid, "kidney_left")]["mean_gy"]) == pytest.approx(
            _numbers(alone[sid])[("kidney_left", "mean_gy")], rel=1e-4)
    with open(run.out_dir / "pre_post.csv", newline="") as f:
        pp = [r for r in csv.DictReader(f)]
    assert {r["patient"] for r in pp} == {"p1"} and pp[0]["structure"] == "kidneys"
    assert float(pp[0]["given_activity_gbq"]) == 6.0


def test_corrupt_study_is_reported_and_the_others_finish(first_run):
    _, run, _ = first_run
    status = {o.id: o.status for o in run.outcomes}
    assert status == {"p1-pre": "done", "p1-post": "done", "p2-pre": "done",
                      "p3-pre": "failed"}
    with open(run.out_dir / "failures.csv", newline="") as f:
        fails = list(csv.DictReader(f))
    assert [r["id"] for r in fails] == ["p3-pre"]
    assert "spect_024h.nii.gz" in fails[0]["error"] and "\n" not in fails[0]["error"]
    assert not (run.out_dir / "p3-pre").exists()  # complete or absent
    assert not list(run.out_dir.glob(".*staging*"))


def test_rerun_skips_finished_studies_and_retries_the_failed_one(first_run, capsys):
    cohort, run, t_first = first_run
    stamps = {s: (run.out_dir / s / "provenance.json").stat().st_mtime_ns for s in GOOD}
    t0 = time.perf_counter()
    rc = main(["cohort", str(cohort.path), "--out", str(run.out_dir), "--workers", "1",
               "--device", "cpu"])
    t_rerun = time.perf_counter() - t0
    out = capsys.readouterr().out
    print(f"cohort first run {t_first:.1f} s, rerun {t_rerun:.1f} s")
    assert rc == 1  # the corrupt study failed again
    assert "3 up to date, 1 failed" in out and "p3-pre" in out
    assert stamps == {s: (run.out_dir / s / "provenance.json").stat().st_mtime_ns
                      for s in GOOD}
    assert t_rerun < 0.5 * t_first, (t_first, t_rerun)
    with open(run.out_dir / "failures.csv", newline="") as f:
        assert [r["id"] for r in csv.DictReader(f)] == ["p3-pre"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc, timeout_s: float = 60.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        assert proc.poll() is None, "the dask scheduler exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"no dask scheduler on port {port}")


@pytest.fixture()
def dask_cluster(tmp_path):
    """`dask scheduler` and one `dask worker` on 127.0.0.1, shut down afterwards."""
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = _worker_env()  # what a nanny would give its worker (the worker runs without one)
    log = open(tmp_path / "dask.log", "w")
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host",
                               "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)]
    try:
        _wait_for_port(port, procs[0])
        procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", addr,
                                       "--no-nanny", "--nthreads", "1",
                                       "--no-dashboard", "--host", "127.0.0.1"],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
        yield addr
    finally:
        for p in reversed(procs):  # the worker first, then the scheduler
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def test_scheduler_option_runs_on_an_existing_cluster(studies, alone, dask_cluster,
                                                      tmp_path, capsys):
    root, _ = studies
    out = tmp_path / "results"
    rc = main(["cohort", str(root / "one.toml"), "--out", str(out), "--scheduler",
               dask_cluster, "--device", "cpu"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert f"scheduler {dask_cluster} (1 workers)" in " ".join(text.split())
    assert _close(_numbers(out / "p2-pre"), _numbers(alone["p2-pre"]))


def test_scheduler_that_does_not_answer_is_one_line(studies, tmp_path, capsys, monkeypatch):
    from voxdose.cohort import runner

    monkeypatch.setattr(runner, "CONNECT_TIMEOUT_S", 1.0)
    root, _ = studies
    rc = main(["cohort", str(root / "one.toml"), "--out", str(tmp_path / "r"), "--scheduler",
               f"tcp://127.0.0.1:{_free_port()}", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("voxdose: error: --scheduler") and "\n" not in err
