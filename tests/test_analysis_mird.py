"""Organ-level MIRD check: sphere absorbed fractions from our point kernel, and the organ
S-value dose against the voxel dose on the demo phantom.

No published sphere absorbed-fraction table was available to this test suite, so the photon
absorbed fraction is checked against physical laws and an analytic limit instead:
0 <= phi <= 1, phi increasing with mass, phi -> 0.75 mu_en R for a small sphere (mean
distance from a uniform interior point to the surface is 3R/4), electrons ~fully absorbed
at organ masses, and the sphere's geometric factor against direct sampling.
"""

import json
from dataclasses import replace

import numpy as np
import pytest

from voxdose.analysis.dvh import compute_dvhs
from voxdose.analysis.mird import (organ_check, organ_check_csv, read_s_table, self_s_value,
                                   sphere_absorbed_fraction, sphere_geometric_factor,
                                   sphere_radius_mm)
from voxdose.montecarlo import water_data
from voxdose.dose.engine import KernelConvolution
from voxdose.kernels.point import point_kernel_for
from voxdose.kernels.voxel import voxel_kernel
from voxdose.core.errors import InputError
from voxdose.io.sitk_adapter import read_image, read_labels
from voxdose.core.units import MEV_PER_G_TO_GY


@pytest.fixture(scope="module")
def lu():
    return point_kernel_for("Lu-177")


def _mono_photon(pk, e_mev):
    mu = np.atleast_1d(water_data.mu_over_rho_cm2_g(e_mev)) / 10.0
    mu_en = np.atleast_1d(water_data.mu_en_over_rho_cm2_g(e_mev)) / 10.0
    return replace(pk, photon_energies_mev=np.array([e_mev]), photon_yields=np.array([1.0]),
                   photon_mu_per_mm=mu, photon_mu_en_per_mm=mu_en)


def test_geometric_factor_matches_sampling():
    rng = np.random.default_rng(7)
    n, radius = 200_000, 1.0
    p = rng.normal(size=(n, 3))
    p *= (rng.random(n) ** (1 / 3) / np.linalg.norm(p, axis=1))[:, None]   # uniform in ball
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1)[:, None]
    for r in (0.2, 0.7, 1.3, 1.9):
        inside = np.mean(np.linalg.norm(p + r * d, axis=1) <= radius)
        assert inside == pytest.approx(sphere_geometric_factor(r, radius), abs=0.005)
    assert sphere_geometric_factor(0.0, 1.0) == 1.0
    assert sphere_geometric_factor(2.0, 1.0) == pytest.approx(0.0)


def test_small_sphere_photon_limit(lu):
    # phi -> mu_en * 3R/4 as R -> 0 (no build-up yet, attenuation negligible)
    mono = _mono_photon(lu, 0.208366)
    for m in (1e-3, 1e-2):
        expect = 0.75 * mono.photon_mu_en_per_mm[0] * sphere_radius_mm(m)
        assert sphere_absorbed_fraction(mono, m) == pytest.approx(expect, rel=0.03)


def test_absorbed_fraction_physical_laws(lu):
    masses = [0.1, 1.0, 10.0, 100.0, 1000.0, 1e5]
    phi_p = [sphere_absorbed_fraction(lu, m, "photons") for m in masses]
    phi_e = [sphere_absorbed_fraction(lu, m, "electrons") for m in masses]
    assert all(0.0 <= v <= 1.0 for v in phi_p + phi_e)
    assert np.all(np.diff(phi_p) > 0) and np.all(np.diff(phi_e) > 0)
    assert phi_e[3] > 0.99                      # Lu-177 electrons in 100 g: ~all absorbed
    # huge sphere: the energy-conserving kernel absorbs (nearly) everything
    assert sphere_absorbed_fraction(_mono_photon(lu, 0.208366), 1e8) > 0.95
    y90 = point_kernel_for("Y-90")
    e_y = [sphere_absorbed_fraction(y90, m, "electrons") for m in (1.0, 10.0, 1000.0)]
    assert np.all(np.diff(e_y) > 0) and 0.5 < e_y[0] < 0.9 and e_y[2] > 0.95


def test_self_s_value_energy_bookkeeping(lu):
    s = self_s_value(lu, 300.0)
    expect = (lu.electron_kernel_energy_mev + lu.local_energy_mev
              + lu.photon_kernel_energy_mev * s.photon_af) / 300.0 * MEV_PER_G_TO_GY
    assert s.gy_per_decay == pytest.approx(expect, rel=1e-12)
    assert s.mgy_per_mbq_s == pytest.approx(expect * 1e9)
    # mass scaling: S ~ 1/m when photons are a small part (Lu-177)
    assert self_s_value(lu, 150.0).gy_per_decay / s.gy_per_decay == pytest.approx(2.0, rel=0.05)
    with pytest.raises(InputError):
        self_s_value(lu, 0.0)


def test_user_s_table(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("organ,S\nkidney_left,3.0e-5\n")
    assert read_s_table(p) == {"kidney_left": 3.0e-5}
    p.write_text("organ,S\nkidney_left,-1\n")
    with pytest.raises(InputError, match="line 2"):
        read_s_table(p)
    p.write_text("name,value\na,1\n")
    with pytest.raises(InputError, match="organ,S"):
        read_s_table(p)


def test_organ_check_on_demo_phantom(small_study, lu):
    """The phantom's true TIA (decays per 9.6 mm voxel) convolved with the Lu-177 kernel,
    against A~_organ x S_self(sphere of the organ's mass).

    Tolerances: (a) the voxel dose from the organ's own activity only vs the MIRD self dose:
    3 % (measured 0.4-2.4 %: sphere vs ellipsoid photon absorbed fraction, and electrons of
    the boundary voxels crossing into neighbours; Lu-177 photons carry 19 % of the energy and
    are 11-26 % absorbed, so shape effects stay at the per-cent level). (b) The full voxel
    mean (including cross-dose from all other structures) vs the MIRD self dose for the
    high-uptake solid organs: 5 % (measured 1-3 %); the body and the lungs, whose self-dose
    is small compared with the photon cross-dose they receive, are excluded from (b).
    """
    st = small_study.parent
    names = {int(k): v for k, v in json.loads((st / "structure_names.json").read_text()).items()}
    labels = read_labels(st / "truth" / "labels_spect.nii.gz", names)
    tia = read_image(st / "truth" / "tia_true_bq_s.nii.gz")
    eng = KernelConvolution(voxel_kernel(lu, tia.grid.spacing_mm))
    dose = eng.dose(tia)
    dvhs = {h.name: h for h in compute_dvhs(dose, labels)}
    organs, self_vox = {}, {}
    for value, name in names.items():
        m = labels.data == value
        organs[name] = (float(tia.data[m].sum()), dvhs[name].mass_g)
        self_vox[name] = float(eng.dose(tia.with_data(tia.data * m)).data[m].mean())
    rows = {r.organ: r for r in organ_check(lu, organs, {n: h.mean_gy for n, h in dvhs.items()},
                                            user_s={"kidney_left": 3e-5})}
    for name, r in rows.items():
        assert self_vox[name] == pytest.approx(r.mird_gy, rel=0.03), name
    for name in ("liver", "spleen", "kidney_left", "kidney_right", "marrow_L3"):
        assert abs(rows[name].diff_percent) < 5.0, (name, rows[name].diff_percent)
    assert rows["kidney_left"].user_gy == pytest.approx(organs["kidney_left"][0] * 3e-5 * 1e-9)
    text = organ_check_csv(list(rows.values()))
    assert text.splitlines()[0].startswith("organ,mass_g,tia_bq_s,s_self_mgy_per_mbq_s")


# Y-90 beta absorbed fractions in unit-density water spheres (full spectrum, Monte Carlo):
# Akabani et al. and Amato et al. as tabulated by Hashempour, Ghorbani, Amato & Knaup,
# Asia Ocean J Nucl Med Biol 2019;7(1) (PMC6352054): (radius cm, absorbed fraction).
Y90_SPHERE_AF = [(0.25, 0.39), (1.00, 0.80), (1.33, 0.85), (1.68, 0.88), (2.87, 0.93)]


@pytest.mark.parametrize(("radius_cm", "published"), Y90_SPHERE_AF)
def test_y90_electron_absorbed_fraction_against_published(radius_cm, published):
    """Our sphere integral (Gauss-Legendre, by parts) with the foundation electron kernel
    against the published Monte Carlo values.  Measured: ours - published = -0.0078,
    -0.0017, -0.0029, -0.0015, -0.0014 at 0.25, 1.00, 1.33, 1.68, 2.87 cm; tolerance 0.015
    (the published values are quoted to 0.01)."""
    pk = point_kernel_for("Y-90")
    mass_g = 4.0 / 3.0 * np.pi * radius_cm**3
    assert sphere_absorbed_fraction(pk, mass_g, "electrons") == pytest.approx(published,
                                                                              abs=0.015)
