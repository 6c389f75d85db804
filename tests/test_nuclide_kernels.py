"""Nuclides without a shipped Monte Carlo table: built on first use (said, timed, cached),
read from the cache afterwards, refused when the kernels cannot hold their energy; the
analytic model only when asked for, with a warning.

Builds here use a few thousand histories (``$VOXDOSE_DPK_HISTORIES``) in a throw-away
cache; the production plan (<= 0.5 % in the voxel kernel's first three shells of voxels,
tests/test_mc_voxel_plan.py) is measured in docs/validation.md ("Nuclides without a
shipped table").

Published values (I-131, ICRP soft tissue, voxel S-values in mGy/(MBq s)):

* MIRD Pamphlet No. 17 (Bolch WE et al., J Nucl Med 1999;40:11S-36S, EGS4): source voxel
  0.920 (3 mm) and 0.129 (6 mm), as transcribed in a public test file of J. Mikell
  (``test_resample_radial_DPK_to_VSV.py``); not checked against the pamphlet;
* Lanconelli N et al., Phys Med Biol 2012;57:517 (DOSXYZnrc), database file
  ``131I3mmsoft.txt`` as redistributed in the MGH MIRDCalculation repository: source voxel
  0.899, face neighbour 3.02e-2 (3 mm).

Measured with the production table (1 840 000 electrons + 4 220 000 photons, planned
automatically): source voxel 0.9262 at 3 mm (+0.7 % against MIRD 17, +3.0 % against
Lanconelli), face neighbour 0.03063 (+1.4 %); 0.1283 at 6 mm (-0.5 % against MIRD 17).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import voxdose.kernels.point as pkmod
from voxdose.cli.app import main
from voxdose.core.errors import InputError, NuclideError
from voxdose.kernels.cache import dpk_cache_dir, read_cached_dpk
from voxdose.kernels.point import (
    HISTORIES_ENV,
    ApproximateKernelWarning,
    PointKernel,
    TabulatedPointKernel,
    histories_from_env,
    load_point_kernel,
)
from voxdose.montecarlo.dpk import TARGET_REL_UNCERTAINTY

TINY = "3000,1000"   # electrons, photons of the test builds (~1 s each)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """An empty kernel cache, tiny builds, and no kernel left over in memory."""
    monkeypatch.setenv("VOXDOSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(HISTORIES_ENV, TINY)
    pkmod._load_point_kernel_cached.cache_clear()
    yield tmp_path / "cache"
    pkmod._load_point_kernel_cached.cache_clear()


def _no_transport(*a, **k):
    raise AssertionError("the Monte Carlo ran although the table is cached")


def test_unshipped_nuclide_is_built_said_and_cached(cache, capsys, monkeypatch):
    pk = load_point_kernel("I-131")
    err = capsys.readouterr().err
    assert "building a Monte Carlo dose-point kernel for I-131 in water" in err
    assert f"cached in {cache / 'dpk'}" in err and "statistical uncertainty" in err
    assert isinstance(pk, TabulatedPointKernel) and not isinstance(pk, PointKernel)
    prov = pk.provenance()
    assert "built on first use" in prov["source"]
    rec = prov["table_record"]
    assert (rec["n_electron_histories"], rec["n_photon_histories"]) == (3000, 1000)
    assert rec["build"]["histories"] == [3000, 1000]
    assert len(rec["first_shells_rel_uncertainty"]) == 3
    # 3000 histories cannot reach 0.5 % in the voxel kernel's first shells of voxels: said,
    # and kept in provenance
    assert len(rec["build"]["achieved_rel_uncertainty"]) == 9
    assert max(rec["build"]["achieved_rel_uncertainty"]) > TARGET_REL_UNCERTAINTY
    assert not rec["build"]["target_met"]
    assert any("statistical uncertainty" in w and "mm voxels, shell" in w
               for w in prov["warnings"])
    assert "warning:" in err
    # the table holds the energy the Monte Carlo absorbed (its own record), per decay
    # (2e-4: shell edges re-derived from the CSV's 6-digit mid radii in the photon tail)
    assert pk.table_energy_mev == pytest.approx(pk.record["absorbed_in_table_mev_per_decay"],
                                                rel=1e-3)
    assert sorted(p.suffix for p in (cache / "dpk").iterdir()) == [".csv", ".json"]

    # second use (a new process: the in-memory cache cleared): read, never rebuilt
    pkmod._load_point_kernel_cached.cache_clear()
    monkeypatch.setattr("voxdose.montecarlo.dpk.simulate_dpk", _no_transport)
    again = load_point_kernel("I-131")
    assert "building" not in capsys.readouterr().err
    np.testing.assert_array_equal(again.dose_table_gy_per_decay, pk.dose_table_gy_per_decay)
    assert again.provenance()["warnings"] == prov["warnings"]

    # another history count is another table (the key holds the histories)
    monkeypatch.setenv(HISTORIES_ENV, "4000,1000")
    with pytest.raises(AssertionError, match="Monte Carlo ran"):
        load_point_kernel("I-131")
    # a changed CSV no longer matches its record's SHA-256: a miss, never read
    csv = next((cache / "dpk").glob("*.csv"))
    assert read_cached_dpk("I-131", "water", (3000, 1000)) is not None
    csv.write_text(csv.read_text().replace("e-0", "e-1", 1))
    assert read_cached_dpk("I-131", "water", (3000, 1000)) is None


def test_without_build_a_missing_table_is_refused(cache):
    with pytest.raises(NuclideError, match=r"voxdose dpk Lu-178m --medium lung --build"):
        load_point_kernel("Lu-178m", "lung", build=False)
    assert not dpk_cache_dir().exists()


def test_hidden_shipped_tables_give_a_monte_carlo_build_never_the_analytic(cache,
                                                                             monkeypatch):
    monkeypatch.setattr(pkmod, "shipped_table_path", lambda *a, **k: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ApproximateKernelWarning)
        pk = load_point_kernel("Lu-177", "soft-tissue")
    assert isinstance(pk, TabulatedPointKernel)
    assert pk.medium == "soft-tissue" and pk.density_g_cm3 == pytest.approx(1.03)
    # tissue kernels of the mvs mode come from the same (built) tables
    assert isinstance(pkmod.point_kernel_for_tissue_density("Lu-177", 1.1),
                      TabulatedPointKernel)


def test_analytic_model_only_when_asked_and_then_named_approximate():
    with pytest.warns(ApproximateKernelWarning, match="approximate analytic point kernel"):
        pk = load_point_kernel("Lu-177", "lung", model="analytic")
    assert isinstance(pk, PointKernel) and pk.density_g_cm3 == pytest.approx(0.26)
    assert "+-20 %" in pk.provenance()["warnings"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ApproximateKernelWarning)
        assert isinstance(load_point_kernel("Lu-177"), TabulatedPointKernel)
    with pytest.raises(InputError, match="unknown point-kernel model"):
        load_point_kernel("Lu-177", model="gaussian")


@pytest.mark.parametrize(("name", "kind"), [("Ac-225", "alpha"), ("Ra-223", "alpha"),
                                            ("F-18", "beta+"), ("Ga-68", "annihilation"),
                                            ("Cf-252", "fission")])
def test_emitters_the_kernels_cannot_hold_are_refused(cache, name, kind):
    for model in ("monte-carlo", "analytic"):
        with pytest.raises(NuclideError, match=rf"{kind}.*dpk"):
            load_point_kernel(name, model=model)
    assert not dpk_cache_dir().exists()   # refused before any build


def test_energies_beyond_the_transport_are_refused_before_building(cache, capsys):
    with pytest.raises(InputError, match="no pair production"):
        load_point_kernel("N-16")          # 6.1 MeV gamma
    assert "building" not in capsys.readouterr().err


def test_histories_from_the_environment():
    assert histories_from_env("5000") == (5000, 5000)
    assert histories_from_env("5000,0") == (5000, 0)
    assert histories_from_env("") is None
    for bad in ("many", "0,0", "-5,10", "1,2,3"):
        with pytest.raises(InputError, match=HISTORIES_ENV):
            histories_from_env(bad)


def test_dpk_command_builds_ahead_reads_the_cache_and_refuses(cache, capsys, tmp_path):
    assert main(["dpk", "Tb-161", "--build"]) == 0
    out = capsys.readouterr()
    assert "building a Monte Carlo dose-point kernel for Tb-161 in water" in out.err
    assert "Monte Carlo table" in out.out and str(cache / "dpk") in out.out
    assert "first 3 shells of voxels at most" in " ".join(out.out.split())
    csv = tmp_path / "tb161.csv"
    assert main(["dpk", "Tb-161", "--out", str(csv)]) == 0
    out = capsys.readouterr()
    assert "building" not in out.err and "built on first use" in out.out
    assert csv.read_text().startswith("r_mm,dose_Gy_per_decay")
    assert main(["dpk", "Lu-177", "--build"]) == 0
    assert "nothing to build" in capsys.readouterr().out
    assert main(["dpk", "Lu-177", "--kernel", "analytic", "--out", str(tmp_path / "a.csv")]) == 0
    assert "voxdose: warning: approximate analytic point kernel" in capsys.readouterr().out
    assert main(["dpk", "Ac-225", "--build"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voxdose: error: Ac-225 emits radiation") and "alpha" in err
    assert main(["dpk", "I-131"]) == 2
    assert "--out is needed" in capsys.readouterr().err


def test_i131_source_voxel_against_mird17_and_lanconelli():
    """A fresh I-131 table in ICRP soft tissue (30 000 electrons, 20 000 photons, ~3 s):
    3 mm source voxel against MIRD 17 (0.920) and Lanconelli (0.899), face neighbour
    against Lanconelli (3.02e-2).  The production table sits at +0.7 %, +3.0 % and +1.4 %;
    the tolerances (3 %, 5 %, 5 %) leave room for this run's ~0.5 % noise.  (At 3 mm the
    analytic model happens to be close as well, 0.934 and 0.0297: voxel averages hide its
    shape errors, which sit below 1 mm.)"""
    from voxdose.kernels.voxel import voxel_kernel
    from voxdose.montecarlo.dpk import simulate_dpk

    res = simulate_dpk("I-131", 30_000, 20_000, seed=131, medium="soft-tissue",
                       r_max_mm=200.0)
    pk = TabulatedPointKernel.from_table(
        res.r_mm, res.dose_gy_per_decay, nuclide="I-131", density_g_cm3=res.density_g_cm3,
        total_energy_mev=res.emitted_mev, electron_range_mm=res.max_electron_range_mm)

    def s_values(kernel):
        k = voxel_kernel(kernel, (3.0,) * 3, radius_mm=6.0).as_mgy_per_mbq_s()
        h = k.shape[0] // 2
        return float(k[h, h, h]), float(k[h, h, h + 1])

    self_s, face = s_values(pk)
    print(f"I-131 3 mm soft tissue: self {self_s:.4g} (MIRD 17 0.920, Lanconelli 0.899), "
          f"face {face:.4g} (Lanconelli 0.0302)")
    assert self_s == pytest.approx(0.920, rel=0.03)
    assert self_s == pytest.approx(0.899, rel=0.05)
    assert face == pytest.approx(3.02e-2, rel=0.05)


def test_run_refuses_an_alpha_emitter_before_any_work(small_study, tmp_path, capsys,
                                                      monkeypatch):
    """The study's nuclide is checked in the validate stage: no registration, no fit, no
    results folder (it was refused only at the kernel stage, after the TIA fit)."""
    import shutil

    import voxdose.pipeline.stages as stages
    from voxdose.cli.app import main

    def _no_work(*a, **k):
        raise AssertionError("the frames were read before the nuclide was refused")

    monkeypatch.setattr(stages, "assemble_series", _no_work)
    study = tmp_path / "study"
    shutil.copytree(small_study.parent, study)
    toml = study / "study.toml"
    toml.write_text(toml.read_text().replace('nuclide = "Lu-177"', 'nuclide = "Ac-225"'))
    assert main(["run", str(toml), "--out", str(tmp_path / "res"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("voxdose: error: Ac-225 emits radiation")
    assert "alpha" in err[0] and not (tmp_path / "res").exists()
