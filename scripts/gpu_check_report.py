"""The two Python halves of scripts/gpu_check.sh (standard library only, and voxdose's own
device probe when it imports).

    python scripts/gpu_check_report.py env OUT/env.json
        versions of everything the check uses, nvidia-smi's view of the GPU, voxdose's probe
    python scripts/gpu_check_report.py report OUT DEVICE DRY_RUN SECONDS
        OUT/gpu_check.json from OUT/steps.tsv, OUT/env.json, OUT/bench_*.json and
        OUT/pytest_gpu.xml; exit status 0 when every step that ran passed
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTIONS = ("numpy", "scipy", "numba", "numba-cuda", "cupy-cuda13x", "cupy-cuda12x",
                 "cupy", "pytest", "hypothesis", "typer", "rich", "matplotlib", "SimpleITK",
                 "pydicom", "icrp107-database", "radioactivedecay", "xraydb", "voxdose",
                 # the CUDA libraries as wheels (CuPy / numba-cuda find them there)
                 "cuda-bindings", "cuda-python", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc",
                 "nvidia-nvjitlink", "nvidia-cufft", "nvidia-cuda-nvcc")
#: The columns of steps.tsv (a failed or timed-out step fails the check; a skipped one
#: does not).
STEP_FIELDS = ("name", "status", "rc", "ms", "timeout_s", "command")


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _nvidia_smi() -> dict | None:
    """name, driver, memory of every GPU nvidia-smi lists (None without nvidia-smi)."""
    q = "name,driver_version,memory.total,compute_cap"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"gpus": [dict(zip(q.split(","), (v.strip() for v in line.split(","))))
                     for line in out.strip().splitlines() if line.strip()]}


def _probe() -> dict:
    """voxdose's one device probe (the answer of --device auto) and why."""
    try:
        from voxdose.core.backend import _gpu_probe

        ok, why = _gpu_probe()
        return {"gpu_available": bool(ok), "reason": why}
    except Exception as exc:  # voxdose itself does not import: say so, do not stop
        return {"gpu_available": False, "reason": f"voxdose import failed: {exc!r}"}


def _smoke() -> dict:
    """What the probe does not prove: Numba finds its CUDA compiler (a kernel compiled and
    run) and CuPy its FFT library (a small rfftn against NumPy's). Each part says "ok" or
    the exception, so a missing library shows here, not as a test's failure."""
    import numpy as np

    out = {}
    try:
        from numba import cuda

        @cuda.jit
        def _add_one(a):
            i = cuda.grid(1)
            if i < a.size:
                a[i] += 1.0

        a = cuda.to_device(np.arange(256, dtype=np.float64))
        _add_one[2, 128](a)
        ok = bool((a.copy_to_host() == np.arange(256) + 1.0).all())
        out["numba_cuda_kernel"] = "ok" if ok else "wrong result"
    except Exception as exc:
        out["numba_cuda_kernel"] = repr(exc)[:500]
    try:
        import cupy
        import cupyx.scipy.fft as cfft

        x = np.random.default_rng(0).random((16, 12, 10))
        got = cupy.asnumpy(cfft.rfftn(cupy.asarray(x)))
        ok = bool(np.allclose(got, np.fft.rfftn(x), rtol=1e-12, atol=1e-12))
        out["cupy_fft"] = "ok" if ok else "wrong result"
    except Exception as exc:
        out["cupy_fft"] = repr(exc)[:500]
    return out


def env(path: str) -> int:
    probe = _probe()
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "versions": {d: _version(d) for d in DISTRIBUTIONS},
            "nvidia_smi": _nvidia_smi(), "probe": probe,
            "smoke": _smoke() if probe["gpu_available"] else None}
    Path(path).write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))
    return 0


def _steps(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split("\t", len(STEP_FIELDS) - 1)
        row = dict(zip(STEP_FIELDS, parts + [""] * (len(STEP_FIELDS) - len(parts))))
        row["rc"] = int(row["rc"]) if row["rc"] else None
        row["seconds"] = int(row.pop("ms") or 0) / 1000.0
        row["timeout_s"] = int(row["timeout_s"] or 0)
        if row["status"] == "skipped":
            row["reason"] = row.pop("command")
        rows.append(row)
    return rows


def _json_or_none(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pytest_counts(path: Path) -> dict | None:
    """tests / passed / failed / errors / skipped from the JUnit XML, and the failures."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    out = {"tests": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    for suite in root.iter("testsuite"):
        for k, attr in (("tests", "tests"), ("failed", "failures"), ("errors", "errors"),
                        ("skipped", "skipped")):
            out[k] += int(suite.get(attr, 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                out["failures"].append(f"{case.get('classname')}::{case.get('name')}")
    out["passed"] = out["tests"] - out["failed"] - out["errors"] - out["skipped"]
    return out


def _gpu_problems(environment: dict | None, pytest_gpu: dict | None) -> list[str]:
    """Why a check asked for the GPU did not test it, though every step passed: no GPU
    found by the probe, a smoke test that failed, or every gpu-marked test skipped."""
    probe = (environment or {}).get("probe") or {}
    if not probe.get("gpu_available"):
        return [f"no GPU: {probe.get('reason', 'no probe result')}"]
    out = [f"smoke {k}: {v}" for k, v in ((environment or {}).get("smoke") or {}).items()
           if v != "ok"]
    if pytest_gpu and pytest_gpu["tests"] and pytest_gpu["skipped"] == pytest_gpu["tests"]:
        out.append("every gpu-marked test was skipped")
    return out


def report(out: str, device: str, dry: str, seconds: str) -> int:
    d = Path(out)
    steps = _steps(d / "steps.tsv")
    failed = [s["name"] for s in steps if s["status"] in ("failed", "timeout",
                                                          "out_of_budget")]
    environment = _json_or_none(d / "env.json")
    pytest_gpu = _pytest_counts(d / "pytest_gpu.xml")
    problems = _gpu_problems(environment, pytest_gpu) if device == "gpu" else []
    doc = {"ok": not failed and not problems, "failed_steps": failed, "problems": problems,
           "device": device,
           "dry_run": dry == "1", "seconds": float(seconds),
           "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "environment": environment, "steps": steps, "pytest_gpu": pytest_gpu,
           "bench": {p.stem[len("bench_"):]: _json_or_none(p)
                     for p in sorted(d.glob("bench_*.json"))},
           "log": "gpu_check.log"}
    (d / "gpu_check.json").write_text(json.dumps(doc, indent=2))
    print(f"gpu_check: {'ok' if doc['ok'] else 'FAILED: ' + ', '.join(failed + problems)} "
          f"({doc['seconds']:.0f} s); {d / 'gpu_check.json'}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.exit(env(*args) if cmd == "env" else report(*args))
