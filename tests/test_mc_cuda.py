"""The Monte Carlo's CUDA kernels (the same per-history source as the CPU path, compiled with
numba.cuda.jit(device=True)) run under NUMBA_ENABLE_CUDASIM=1 in a subprocess: energy is
conserved history by history, the same seed gives the CPU result, and another seed agrees
with a large CPU run statistically."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from voxdose.montecarlo import electron as mc_electron
from voxdose.montecarlo import photon as mc_photon
from voxdose.montecarlo.core import rng_states
from voxdose.montecarlo.dpk import _emission_arrays, simulate_dpk
from voxdose.core.errors import InputError
from voxdose.core.nuclide import load_nuclide

E_EDGES = np.linspace(0.0, 12.0, 241)            # mm, electrons (Y-90 range 11 mm)
P_EDGES = np.concatenate([[0.0], np.geomspace(0.5, 600.0, 60)])  # mm, photons

# (kind, nuclide, threads, histories per thread, seed)
RUNS = [("e", "Lu-177", 16, 6, 11), ("p", "Lu-177", 16, 8, 12), ("e", "Y-90", 8, 2, 13)]

CUDASIM_SCRIPT = r"""
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")            # uint64 wrap-around in the simulator's numpy
from voxdose.montecarlo import transport_cuda as mc_cuda
from voxdose.montecarlo import electron as mc_electron
from voxdose.montecarlo import photon as mc_photon
from voxdose.montecarlo.core import rng_states
from voxdose.montecarlo.dpk import _emission_arrays
from voxdose.core.nuclide import load_nuclide

cfg = json.loads(sys.stdin.read())
out = []
for kind, name, nt, nh, seed in cfg["runs"]:
    nuc = load_nuclide(name)
    st = rng_states(seed, nt)
    if kind == "e":
        edges = np.array(cfg["e_edges"])
        tally, acc = mc_cuda.run_electron_batches_cuda(
            st, nh, edges, *_emission_arrays(nuc),
            *mc_electron.table_args(mc_electron.electron_tables()), threads_per_block=8)
    else:
        edges = np.array(cfg["p_edges"])
        pl, py = nuc.photon_lines_mev, nuc.photon_yields
        keep = (pl >= mc_photon.P_CUT_MEV) & (py > 0)
        cum = np.cumsum(py[keep])
        tally, acc = mc_cuda.run_photon_batches_cuda(
            st, nh, edges, pl[keep], cum, float(cum[-1]),
            *mc_photon.table_args(mc_photon.photon_tables()), threads_per_block=8)
    out.append({"tally": tally.tolist(), "acc": acc.tolist()})
print(json.dumps(out))
"""


def _photon_lines(nuc):
    pl, py = nuc.photon_lines_mev, nuc.photon_yields
    keep = (pl >= mc_photon.P_CUT_MEV) & (py > 0)
    cum = np.cumsum(py[keep])
    return pl[keep], cum, float(cum[-1])


def _cpu(kind, name, nt, nh, seed):
    nuc = load_nuclide(name)
    st = rng_states(seed, nt)
    if kind == "e":
        return mc_electron.run_electron_batches(
            st, nh, E_EDGES, *_emission_arrays(nuc),
            *mc_electron.table_args(mc_electron.electron_tables()))
    return mc_photon.run_photon_batches(st, nh, P_EDGES, *_photon_lines(nuc),
                                        *mc_photon.table_args(mc_photon.photon_tables()))


def _mean_radius(tally, edges):
    """Energy-weighted mean deposition radius (mm) over all streams (rows), shells only, and
    its standard error (ratio estimator, delta method over the independent streams)."""
    mid = 0.5 * (edges[1:] + edges[:-1])
    num = tally[:, :-1] @ mid
    den = tally[:, :-1].sum(axis=1)
    r = num.sum() / den.sum()
    n = den.size
    se = math.sqrt(np.var(num - r * den, ddof=1) / n) / den.mean()
    return float(r), float(se)


@pytest.fixture(scope="module")
def gpu_runs():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    payload = json.dumps({"runs": RUNS, "e_edges": E_EDGES.tolist(),
                          "p_edges": P_EDGES.tolist()})
    proc = subprocess.run([sys.executable, "-c", CUDASIM_SCRIPT], input=payload, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return [(np.array(r["tally"]), np.array(r["acc"])) for r in res]


def test_cuda_kernels_conserve_energy(gpu_runs):
    for (kind, _name, nt, _nh, _), (tally, acc) in zip(RUNS, gpu_runs):
        assert tally.shape == (nt, (E_EDGES if kind == "e" else P_EDGES).size)
        # per stream: emitted = scored (+ beyond the last edge) + bremsstrahlung / escaped
        np.testing.assert_allclose(tally.sum(axis=1) + acc[:, 0], acc[:, 2], rtol=1e-12)
        assert np.all(acc[:, 2] > 0) and np.all(acc[:, 1] > 0)
        if kind == "e":  # electrons never leave the 12 mm sphere
            assert np.all(tally[:, -1] == 0.0)


def test_cuda_kernels_match_cpu_with_the_same_seed(gpu_runs):
    """Same generator, same streams: the simulator reproduces the CPU tallies (the only
    possible differences are libm roundings, which would show as tiny deviations)."""
    for run, (tally, acc) in zip(RUNS, gpu_runs):
        t_cpu, a_cpu = _cpu(*run)
        np.testing.assert_allclose(tally, t_cpu, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(acc, a_cpu, rtol=1e-9, atol=1e-12)


def test_cuda_kernels_agree_statistically_with_a_large_cpu_run(gpu_runs):
    """Mean deposition radius and energy fractions of the few GPU histories against 20 000
    CPU histories with another seed, within 4 standard errors (over GPU streams)."""
    for (kind, name, nt, nh, _), (tally, acc) in zip(RUNS, gpu_runs):
        edges = E_EDGES if kind == "e" else P_EDGES
        t_ref, a_ref = _cpu(kind, name, 40, 500, 999)
        ref_r, _ = _mean_radius(t_ref, edges)
        r, se = _mean_radius(tally, edges)
        assert abs(r - ref_r) < 4 * se, (name, kind, r, ref_r, se)
        # energy per history (source sampling) and lost fraction (brems / escape)
        e_hist = acc[:, 2] / nh
        e_ref = a_ref[:, 2].sum() / (40 * 500)
        se_e = e_hist.std(ddof=1) / math.sqrt(nt)
        assert abs(e_hist.mean() - e_ref) < 4 * se_e + 1e-6


def test_simulate_dpk_backend_argument():
    with pytest.raises(InputError, match="backend"):
        simulate_dpk("Lu-177", 10, 10, backend="opencl")
