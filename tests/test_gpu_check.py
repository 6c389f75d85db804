"""The prepared device check runs where the device machine has no image IO.

The GPU machine lacks SimpleITK and pydicom unless their wheels travel with the tree, so
the modules the gpu-marked tests and ``voxdose bench`` use import them lazily. Both checks
run Python with a meta-path finder that refuses SimpleITK and pydicom (a sitecustomize
module on PYTHONPATH): the bare machine, here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = '''
import importlib.abc, sys

class _NoImageIO(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("SimpleITK", "pydicom"):
            raise ImportError(f"{name} is not installed (blocked by the test)")
        return None

sys.meta_path.insert(0, _NoImageIO())
'''


def _bare_env(tmp_path: Path) -> dict:
    """Environment whose Python cannot import SimpleITK or pydicom."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join([str(site), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep)}


def test_compute_modules_import_without_image_io(tmp_path):
    env = _bare_env(tmp_path)
    code = ("import sys\n"
            "import voxdose.dose.convolution, voxdose.kernels.voxel, voxdose.kinetics.fit\n"
            "import voxdose.cli.app, voxdose.cli.bench, voxdose.dose.engine\n"
            "import voxdose.kinetics.cuda_fit, voxdose.analysis.dvh\n"
            "bad = [m for m in ('SimpleITK', 'pydicom') if m in sys.modules]\n"
            "assert not bad, bad\n"
            "try:\n    import SimpleITK\nexcept ImportError:\n    print('blocked')\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("blocked")


def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    """``scripts/gpu_check.sh OUT --device cpu --dry-run`` without SimpleITK or pydicom:
    every step passes and gpu_check.json says what ran, with the versions and the bench."""
    out = tmp_path / "out"
    env = {**_bare_env(tmp_path), "PYTHON": sys.executable,
           "VOXDOSE_CACHE_DIR": os.environ.get("VOXDOSE_CACHE_DIR", str(tmp_path / "c"))}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out),
                           "--device", "cpu", "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=300)
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-1000:] + log[-3000:]
    doc = json.loads((out / "gpu_check.json").read_text())
    assert doc["ok"] and doc["device"] == "cpu" and doc["dry_run"]
    status = {s["name"]: s["status"] for s in doc["steps"]}
    assert status == {"install": "skipped", "env": "ok", "tests": "ok",
                      "bench_convolution_8": "ok", "bench_fit_6": "ok",
                      "bench_monte_carlo": "skipped", "demo": "skipped"}
    assert all(s["seconds"] >= 0 and s["timeout_s"] <= 150 for s in doc["steps"])
    env_doc = doc["environment"]
    assert env_doc["versions"]["numpy"] and env_doc["versions"]["numba"]
    assert env_doc["probe"]["gpu_available"] is False
    assert doc["pytest_gpu"]["tests"] > 0 and doc["pytest_gpu"]["failed"] == 0
    conv, fit = doc["bench"]["convolution_8"], doc["bench"]["fit_6"]
    assert conv["device"]["device"] == "cpu" and conv["device"]["numba"]
    assert {r["method"] for r in conv["rows"]} == {"voxdose", "scipy.signal.fftconvolve"}
    assert conv["tia_rows"] == [] and fit["rows"] == [] and len(fit["tia_rows"]) == 2
    assert "=== bench_fit_6: ok" in log


def _report_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_report",
                                                  ROOT / "scripts" / "gpu_check_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_run(out: Path, steps: list[str], probe: dict, smoke=None, skipped_all=False):
    out.mkdir()
    (out / "steps.tsv").write_text("".join(line + "\n" for line in steps))
    (out / "env.json").write_text(json.dumps({"probe": probe, "smoke": smoke}))
    n = 4
    (out / "pytest_gpu.xml").write_text(
        f'<testsuites><testsuite tests="{n}" failures="0" errors="0" '
        f'skipped="{n if skipped_all else 0}"></testsuite></testsuites>')


OK_STEP = "env\tok\t0\t1200\t40\tpython env"


def test_report_fails_a_gpu_check_that_did_not_test_the_gpu(tmp_path, capsys):
    """Every step passed, yet with --device gpu the check fails when the probe found no
    GPU, a smoke test failed, or every gpu-marked test was skipped; a step cut short by the
    budget fails it too, under its own status."""
    rep = _report_module()
    cases = {
        "no_gpu": ([OK_STEP], {"gpu_available": False, "reason": "no CuPy"}, None, False),
        "smoke": ([OK_STEP], {"gpu_available": True, "reason": ""},
                  {"numba_cuda_kernel": "ok", "cupy_fft": "CUFFT_INTERNAL_ERROR"}, False),
        "all_skipped": ([OK_STEP], {"gpu_available": True, "reason": ""},
                        {"numba_cuda_kernel": "ok", "cupy_fft": "ok"}, True),
        "budget": ([OK_STEP, "bench_fit_256\tout_of_budget\t124\t21000\t21\tpython bench"],
                   {"gpu_available": True, "reason": ""},
                   {"numba_cuda_kernel": "ok", "cupy_fft": "ok"}, False),
        "good": ([OK_STEP], {"gpu_available": True, "reason": ""},
                 {"numba_cuda_kernel": "ok", "cupy_fft": "ok"}, False),
    }
    for name, (steps, probe, smoke, skipped_all) in cases.items():
        out = tmp_path / name
        _write_run(out, steps, probe, smoke, skipped_all)
        rc = rep.report(str(out), "gpu", "0", "12")
        doc = json.loads((out / "gpu_check.json").read_text())
        assert (rc == 0) == doc["ok"] == (name == "good"), name
        if name == "budget":
            assert doc["failed_steps"] == ["bench_fit_256"] and doc["problems"] == []
        elif name != "good":
            assert doc["failed_steps"] == [] and len(doc["problems"]) == 1, doc["problems"]
    assert "CUFFT_INTERNAL_ERROR" in json.loads(
        (tmp_path / "smoke" / "gpu_check.json").read_text())["problems"][0]
    # the CPU dry run (CI) has no GPU to test: no problem made of it
    out = tmp_path / "cpu"
    _write_run(out, [OK_STEP], {"gpu_available": False, "reason": "no CuPy"})
    assert rep.report(str(out), "cpu", "1", "3") == 0
