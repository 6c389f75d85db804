"""The Monte Carlo's table structures (one named tuple per particle, passed to the Numba and
CUDA code) and the composition of simulate_dpk from one run per source plus a merge."""

from __future__ import annotations

import numpy as np
import pytest

from voxdose.montecarlo import electron, photon, transport
from voxdose.montecarlo.core import rng_states
from voxdose.montecarlo.dpk import simulate_dpk


def test_table_args_are_the_named_tuples_of_the_transport():
    et = electron.electron_tables()
    tab, pt = electron.table_args(et)
    assert isinstance(tab, transport.ElectronArrays)
    assert isinstance(pt, transport.PhotonArrays)
    (pt2,) = photon.table_args(et.photons)
    assert isinstance(pt2, transport.PhotonArrays)
    assert all(np.array_equal(x, y) for x, y in zip(pt2, pt))
    for t, src in ((tab, et), (pt, et.photons)):
        for name, value in t._asdict().items():
            ref = getattr(src, name)
            if isinstance(value, np.ndarray):
                assert value.dtype == np.float64 and value.flags.c_contiguous
                assert np.array_equal(value, ref)
            else:
                assert type(value) is float and value == ref


def test_electron_batches_take_the_structures_and_are_reproducible():
    tab, pt = electron.table_args(electron.electron_tables())
    edges = np.linspace(0.0, 3.0, 61)
    src = (0.0, np.zeros(2), np.zeros(2), np.zeros(2), np.array([0.3]), np.array([1.0]), 1.0)
    a = electron.run_electron_batches(rng_states(5, 4), 50, edges, *src, tab, pt)
    b = electron.run_electron_batches(rng_states(5, 4), 50, edges, *src, tab, pt)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    tally, acc = a
    np.testing.assert_allclose(tally.sum(axis=1) + acc[:, 0], acc[:, 2], rtol=1e-12)
    assert np.all(acc[:, 1] > 0)


@pytest.fixture(scope="module")
def lu_runs():
    kw = {"seed": 31, "n_batches": 4}
    return (simulate_dpk("Lu-177", 400, 400, **kw), simulate_dpk("Lu-177", 400, 0, **kw),
            simulate_dpk("Lu-177", 0, 400, **kw))


def test_simulate_dpk_is_the_merge_of_its_two_sources(lu_runs):
    both, e_only, p_only = lu_runs
    # each source has its own seeded streams and the same tables: its part is unchanged
    assert np.array_equal(both.electron_shell_mev, e_only.electron_shell_mev)
    assert np.array_equal(both.photon_shell_mev, p_only.photon_shell_mev)
    assert both.electron_mev == e_only.electron_mev
    assert both.photon_mev == p_only.photon_mev
    assert both.bremsstrahlung_mev == e_only.bremsstrahlung_mev
    assert p_only.bremsstrahlung_mev == 0.0
    assert (both.n_electrons, both.n_photons) == (e_only.n_electrons, p_only.n_photons)
    np.testing.assert_allclose(both.energy_mev,
                               both.electron_shell_mev + both.photon_shell_mev,
                               rtol=1e-12, atol=1e-300)
    for key in ("electron_steps_per_history", "electron_mev_sampled"):
        assert both.settings[key] == e_only.settings[key]
    for key in ("photon_interactions_per_history", "photon_mev_sampled"):
        assert both.settings[key] == p_only.settings[key]
        assert key not in e_only.settings
    for r in lu_runs:
        assert abs(r.balance()) < 1e-9
