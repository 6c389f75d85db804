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
                      "bench_convolution": "ok", "bench_fit_6": "ok",
                      "bench_monte_carlo": "skipped", "demo": "skipped"}
    assert all(s["seconds"] >= 0 and s["timeout_s"] <= 150 for s in doc["steps"])
    env_doc = doc["environment"]
    assert env_doc["versions"]["numpy"] and env_doc["versions"]["numba"]
    assert env_doc["probe"]["gpu_available"] is False
    assert doc["pytest_gpu"]["tests"] > 0 and doc["pytest_gpu"]["failed"] == 0
    conv, fit = doc["bench"]["convolution"], doc["bench"]["fit_6"]
    assert conv["device"]["device"] == "cpu" and conv["device"]["numba"]
    assert {r["method"] for r in conv["rows"]} == {"voxdose", "scipy.signal.fftconvolve"}
    assert conv["tia_rows"] == [] and fit["rows"] == [] and len(fit["tia_rows"]) == 2
    assert "=== bench_fit_6: ok" in log
