"""Kernel generation: Monte Carlo histories per second (CPU, Numba, all threads) and the
time to build a voxel S-value kernel from the shipped table, next to the analytic
foundation kernel built in the same run.

Run: ``python -m pytest benchmarks/bench_kernels.py --benchmark-only`` (or run this file
as a script for a plain printout).  The numbers recorded for the shipped tables are in
``kernels/*.json`` (``histories_per_second``, ``seconds``).
"""

from __future__ import annotations

import time

import pytest

from voxdose.montecarlo.dpk import simulate_dpk
from voxdose.kernels.point import load_point_kernel, point_kernel_for
from voxdose.kernels.voxel import voxel_kernel

CASES = {"Lu-177": (200_000, 200_000), "Y-90": (50_000, 1_000)}


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    simulate_dpk("Lu-177", 2_000, 2_000, n_batches=2)


@pytest.mark.parametrize("medium", ["water", "bone"])
@pytest.mark.parametrize("name", list(CASES))
def test_mc_histories_per_second(benchmark, name, medium):
    ne, nph = CASES[name]
    benchmark.group = "Monte Carlo DPK (CPU)"
    res = benchmark.pedantic(simulate_dpk, args=(name, ne, nph), kwargs={"medium": medium},
                             rounds=1, iterations=1)
    benchmark.extra_info["histories"] = res.n_electrons + res.n_photons
    benchmark.extra_info["histories_per_s"] = (res.n_electrons + res.n_photons) / res.seconds


@pytest.mark.parametrize("source", ["mc-table", "analytic"])
def test_voxel_kernel_build_lu177_4p8mm(benchmark, source):
    pk = load_point_kernel("Lu-177") if source == "mc-table" else point_kernel_for("Lu-177")
    benchmark.group = "voxel kernel Lu-177 4.8 mm, 200 mm (85^3)"
    benchmark.pedantic(voxel_kernel, args=(pk, (4.8, 4.8, 4.8)), rounds=1, iterations=1)


if __name__ == "__main__":
    simulate_dpk("Lu-177", 2_000, 2_000, n_batches=2)
    for (name, (ne, nph)), medium in [(c, m) for c in CASES.items()
                                      for m in ("water", "bone")]:
        r = simulate_dpk(name, ne, nph, medium=medium)
        print(f"{name} in {medium}: {r.n_electrons} e- + {r.n_photons} photons in "
              f"{r.seconds:.2f} s = "
              f"{(r.n_electrons + r.n_photons) / r.seconds:,.0f} histories/s")
    for label, pk in (("mc-table", load_point_kernel("Lu-177")),
                      ("analytic", point_kernel_for("Lu-177"))):
        t0 = time.perf_counter()
        voxel_kernel(pk, (4.8, 4.8, 4.8))
        print(f"voxel kernel Lu-177 4.8 mm 85^3 ({label}): {time.perf_counter() - t0:.2f} s")
