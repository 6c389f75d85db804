"""The whole ``voxdose demo --device cpu`` with its figures drawn in the pipeline's own
process (the previous way, ``VOXDOSE_SERIAL_FIGURES=1``) and in the helper process
(report/render.py, the default), in the same run (issue 14).

    python -m pytest benchmarks/bench_demo.py --benchmark-only
    python benchmarks/bench_demo.py [ROUNDS] [DIR]     # interleaved rounds, a markdown table

Each round reports the stage split (wall / CPU seconds of this process) and the whole
command; ``total_cpu_with_helper`` adds the CPU seconds of the helper process (a child,
counted once it has exited).
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import tempfile
from pathlib import Path

from bench_registration import _markdown, demo_stage_split, record_demo

SERIAL_ENV = "VOXDOSE_SERIAL_FIGURES"


@contextlib.contextmanager
def _figures(serial: bool):
    saved = os.environ.get(SERIAL_ENV)
    if serial:
        os.environ[SERIAL_ENV] = "1"
    else:
        os.environ.pop(SERIAL_ENV, None)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(SERIAL_ENV, None)
        else:
            os.environ[SERIAL_ENV] = saved


def demo_split(out_dir: Path, serial: bool) -> dict:
    """{stage: (wall s, CPU s)} of one demo, plus the helper's CPU in the total."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with _figures(serial):
        split = demo_stage_split(out_dir, previous=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    helper = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    wall, cpu = split["total"]
    split["total_cpu_with_helper"] = (wall, cpu + helper)
    return split


def _demo(benchmark, tmp_path, serial: bool):
    record_demo(benchmark, "voxdose demo (full, CPU): figures in the process vs a helper "
                "process", lambda: demo_split(tmp_path / "demo", serial))


def test_demo_figures_in_the_process(benchmark, tmp_path):
    _demo(benchmark, tmp_path, serial=True)


def test_demo_figures_in_a_helper_process(benchmark, tmp_path):
    _demo(benchmark, tmp_path, serial=False)


if __name__ == "__main__":
    n_rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    base = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp())
    rows: dict = {"figures in the process": [], "figures in a helper": []}
    for r in range(n_rounds):  # interleaved: the machine's load hits both alike
        for i, label in enumerate(rows):
            rows[label].append(demo_split(base / f"demo_{i}_{r}", serial=i == 0))
            print(label, r, {k: tuple(round(v, 2) for v in t)
                             for k, t in rows[label][-1].items()}, flush=True)
    print(_markdown(rows))
