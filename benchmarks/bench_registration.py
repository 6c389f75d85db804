"""Rigid registration of the demo's time points (issue 14), the new pyramid against the
previous approach, in the same run.

Problem: the full demo study (``voxdose demo``: 2.4 mm CT, 160x114x126 voxels, five time
points with a known rigid patient motion of up to 5 mm and 3 degrees); time points 1-4 are
registered to time point 0, CT to CT, each followed by the plausibility check as
``assemble_series`` does.

* voxdose ``register_rigid``: both images block-averaged to ~10 mm then ~5 mm voxels and
  smoothed, 5,000 then 10,000 random metric samples (fixed seed), moving-image gradients at
  the samples, optimiser steps down to 0.01 mm; once one time point at a time, once two at
  once in threads (as ``assemble_series`` runs them);
* the previous approach (:func:`previous_register_rigid`, kept here verbatim): SimpleITK's
  own pyramid (shrink 4, 2, 1 with Gaussian smoothing of the full images at every level),
  ~60,000 samples at full resolution, gradient images, steps down to 1e-4 mm.

``extra_info`` holds the CPU seconds of one round (both cores count) and the largest error at
the organ centres (kidneys, liver, spleen, L3) against the phantom's true motion; both must
stay under 1 mm (asserted: a benchmark that lost accuracy fails).

The whole ``voxdose demo`` (study built, every stage, CPU device) is timed the same two ways:
``extra_info`` holds the stage split, wall and CPU seconds per stage. The previous way swaps
in :func:`previous_register_rigid`, one time point at a time, and the previous plausibility
images (at most 300,000 voxels instead of
:data:`~voxdose.imaging.registration.METRIC_MAX_VOXELS`).
``python benchmarks/bench_registration.py [rounds] [out_dir]`` runs both, interleaved, and
prints the split as a Markdown table (docs/benchmarks.md).

Run: ``python -m pytest benchmarks/bench_registration.py --benchmark-only`` (the study is
built once, ~15 s; each demo round ~20-40 s).
"""

import contextlib
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from voxdose.core.grid import Image
from voxdose.imaging.registration import (Registration, _sample_fraction, plausibility,
                                          register_rigid)
from voxdose.io.sitk_adapter import image_to_sitk, read_image
from voxdose.phantom.anatomy import STRUCTURES
from voxdose.phantom.study import PhantomConfig, build_study

ORGANS = ("kidney_left", "kidney_right", "liver", "spleen", "marrow_L3")
ROUNDS = 2
GROUP = "rigid registration of 4 time points + plausibility, full demo (2.4 mm CT)"


def previous_register_rigid(fixed: Image, moving: Image, seed: int = 1234) -> Registration:
    """The rigid registration before issue 14 (verbatim but for this docstring)."""
    f = image_to_sitk(np.asarray(fixed.data, dtype=np.float32), fixed.grid)
    m = image_to_sitk(np.asarray(moving.data, dtype=np.float32), moving.grid)
    init = sitk.CenteredTransformInitializer(
        f, m, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(_sample_fraction(fixed.grid.size), seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=300, relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    min_spacing = float(min(fixed.grid.spacing_mm))
    levels = [4, 2, 1] if min_spacing < 4.0 else [2, 1]
    reg.SetShrinkFactorsPerLevel(levels)
    reg.SetSmoothingSigmasPerLevel([min_spacing * s / 2 for s in levels])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    tx = reg.Execute(f, m)
    if isinstance(tx, sitk.CompositeTransform) and tx.GetNumberOfTransforms() == 1:
        tx = tx.GetNthTransform(0)
    return Registration(sitk.Euler3DTransform(tx), float(reg.GetMetricValue()),
                        int(reg.GetOptimizerIteration()))


def organ_errors_mm(registration: Registration, patient_to_scanner) -> list[float]:
    """|T(c) - T_true(c)| (mm) at the organ centres c of :data:`ORGANS`."""
    t_true = np.asarray(patient_to_scanner, dtype=float)
    out = []
    for s in STRUCTURES:
        if s.name in ORGANS:
            c = np.asarray(s.shapes[0].centre_mm, dtype=float)
            got = np.array(registration.transform.TransformPoint(tuple(float(v) for v in c)))
            out.append(float(np.linalg.norm(got - (t_true[:3, :3] @ c + t_true[:3, 3]))))
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    path = build_study(tmp_path_factory.mktemp("demo") / "study", PhantomConfig())
    truth = json.loads((path.parent / "truth" / "truth.json").read_text())
    cts = [read_image(path.parent / tp["ct"]) for tp in _timepoints(path)]
    return {"cts": cts, "truth": truth["patient_to_scanner"]}


def _timepoints(study_toml):
    import tomllib

    return tomllib.loads(study_toml.read_text())["timepoints"]


def _register_all(register, cts, at_once: int = 1):
    """Every time point registered to the first and checked, ``at_once`` at a time in
    threads, as assemble_series does."""
    def one(moving):
        reg = register(cts[0], moving)
        plausibility(cts[0], moving, reg)
        return reg

    if at_once == 1:
        return [one(m) for m in cts[1:]]
    with ThreadPoolExecutor(at_once) as pool:
        return list(pool.map(one, cts[1:]))


def _run(benchmark, demo, register, at_once: int = 1):
    benchmark.group = GROUP
    cpu = []

    def timed():
        c0 = time.process_time()
        out = _register_all(register, demo["cts"], at_once)
        cpu.append(time.process_time() - c0)
        return out

    regs = benchmark.pedantic(timed, rounds=ROUNDS, warmup_rounds=0)
    errors = [max(organ_errors_mm(r, demo["truth"][i + 1])) for i, r in enumerate(regs)]
    benchmark.extra_info["cpu_s_per_round"] = [round(c, 2) for c in cpu]
    benchmark.extra_info["max_organ_error_mm_per_time_point"] = [round(e, 3) for e in errors]
    benchmark.extra_info["iterations"] = [r.iterations for r in regs]
    assert max(errors) < 1.0


def test_rigid_previous_gaussian_pyramid_60k(benchmark, demo):
    _run(benchmark, demo, previous_register_rigid)


def test_rigid_block_mean_pyramid(benchmark, demo):
    _run(benchmark, demo, register_rigid)


def test_rigid_block_mean_pyramid_two_at_once(benchmark, demo):
    from voxdose.imaging.assemble import PARALLEL_REGISTRATIONS

    _run(benchmark, demo, register_rigid, at_once=PARALLEL_REGISTRATIONS)


# -- the whole demo, stage by stage ---------------------------------------------------------

PREVIOUS_METRIC_MAX_VOXELS = 300_000


@contextlib.contextmanager
def _registration(previous: bool):
    """The registration the demo runs with: the previous one swapped in (one time point at
    a time, the previous plausibility images), or today's."""
    from voxdose.imaging import assemble
    from voxdose.imaging import registration as reg_mod

    saved = (reg_mod.register_rigid, reg_mod.METRIC_MAX_VOXELS,
             assemble.PARALLEL_REGISTRATIONS)
    if previous:
        reg_mod.register_rigid = previous_register_rigid
        reg_mod.METRIC_MAX_VOXELS = PREVIOUS_METRIC_MAX_VOXELS
        assemble.PARALLEL_REGISTRATIONS = 1
    try:
        yield
    finally:
        (reg_mod.register_rigid, reg_mod.METRIC_MAX_VOXELS,
         assemble.PARALLEL_REGISTRATIONS) = saved


@contextlib.contextmanager
def _cpu_timed_stages(split: dict):
    """Every pipeline stage (and the study build) records (wall s, CPU s) into ``split``."""
    from voxdose.phantom import study as phantom_study
    from voxdose.pipeline import run as run_mod

    def timed(key, fn):
        def wrapper(*args, **kw):
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kw)
            finally:
                split[key] = (time.perf_counter() - w0, time.process_time() - c0)
        return wrapper

    saved = run_mod.STAGES, run_mod.WRITE_STAGE, phantom_study.build_study
    run_mod.STAGES = tuple(dataclasses.replace(st, run=timed(st.key, st.run))
                           for st in saved[0])
    run_mod.WRITE_STAGE = dataclasses.replace(saved[1], run=timed("write", saved[1].run))
    phantom_study.build_study = timed("build_study", saved[2])
    try:
        yield
    finally:
        run_mod.STAGES, run_mod.WRITE_STAGE, phantom_study.build_study = saved


def demo_stage_split(out_dir: Path, previous: bool) -> dict:
    """``voxdose demo OUT --device cpu`` in this process: {stage: (wall s, CPU s)}, with
    ``total`` the whole command."""
    from voxdose.cli.app import main

    split: dict = {}
    shutil.rmtree(out_dir, ignore_errors=True)
    with _registration(previous), _cpu_timed_stages(split), \
            contextlib.redirect_stdout(sys.stderr):
        w0, c0 = time.perf_counter(), time.process_time()
        rc = main(["demo", str(out_dir), "--device", "cpu"])
        split["total"] = (time.perf_counter() - w0, time.process_time() - c0)
    assert rc in (0, None), rc
    return split


def record_demo(benchmark, group: str, run) -> None:
    """One round of ``run()`` (a demo's {stage: (wall s, CPU s)}) timed by pytest-benchmark,
    its stage split in ``extra_info``."""
    benchmark.group = group
    splits = []
    benchmark.pedantic(lambda: splits.append(run()), rounds=1, warmup_rounds=0)
    for key, (wall, cpu) in splits[-1].items():
        benchmark.extra_info[f"{key}_wall_s"] = round(wall, 2)
        benchmark.extra_info[f"{key}_cpu_s"] = round(cpu, 2)


def _demo(benchmark, tmp_path, previous: bool):
    record_demo(benchmark, "voxdose demo (full, CPU), stage split in extra_info",
                lambda: demo_stage_split(tmp_path / "demo", previous))


def test_demo_previous_registration(benchmark, tmp_path):
    _demo(benchmark, tmp_path, previous=True)


def test_demo_block_mean_pyramid(benchmark, tmp_path):
    _demo(benchmark, tmp_path, previous=False)


def _markdown(rows: dict) -> str:
    """rows: {label: [split, ...]} -> a table of the median wall / CPU seconds per stage."""
    keys = list(next(iter(rows.values()))[0])
    out = ["| stage | " + " | ".join(f"{k} wall / CPU s" for k in rows) + " |",
           "|---|" + "---|" * len(rows)]
    for key in keys:
        cells = []
        for splits in rows.values():
            wall = float(np.median([s[key][0] for s in splits]))
            cpu = float(np.median([s[key][1] for s in splits]))
            cells.append(f"{wall:.2f} / {cpu:.2f}")
        out.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    n_rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    base = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    rows: dict = {"previous": [], "new": []}
    for r in range(n_rounds):  # interleaved: the machine's load hits both alike
        for label in rows:
            rows[label].append(demo_stage_split(base / f"{label}_{r}", label == "previous"))
            print(label, r, {k: tuple(round(v, 2) for v in t)
                             for k, t in rows[label][-1].items()}, flush=True)
    print(_markdown(rows))
