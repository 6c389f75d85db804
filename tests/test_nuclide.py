"""Decay data come from ICRP-107 (icrp107-database) and radioactivedecay."""

import math

import pytest

from voxdose.core.errors import NuclideError
from voxdose.core.nuclide import canonical_name, load_nuclide


@pytest.mark.parametrize("name", ["Lu-177", "177Lu", "Lu177", "lu-177", " 177-Lu "])
def test_lu177_spellings(name):
    assert canonical_name(name) == "Lu-177"


@pytest.mark.parametrize("name", ["Y-90", "90Y", "Y90", "y-90"])
def test_y90_spellings(name):
    assert canonical_name(name) == "Y-90"


@pytest.mark.parametrize("bad", ["Xx-999", "Lutetium", "", "Fe-56"])
def test_unknown_or_stable_nuclide_is_a_clear_error(bad):
    with pytest.raises(NuclideError):
        load_nuclide(bad)


def test_lu177_matches_icrp107():
    # ICRP Publication 107 (2008), Lu-177: T1/2 = 6.647 d; mean beta energy 0.13327 MeV;
    # all electrons 0.14792 MeV; all photons 0.035098 MeV per decay.
    n = load_nuclide("Lu-177")
    assert n.half_life_s == pytest.approx(6.647 * 86400, rel=1e-3)
    assert n.beta_energy_per_decay_mev == pytest.approx(0.13327, rel=1e-3)
    assert n.electron_energy_per_decay_mev == pytest.approx(0.14792, rel=1e-3)
    assert n.photon_energy_per_decay_mev == pytest.approx(0.035098, rel=1e-3)
    assert n.decay_constant_per_s == pytest.approx(math.log(2) / n.half_life_s)


def test_y90_matches_icrp107():
    # ICRP-107, Y-90: T1/2 = 64.1 h (2.67 d), mean beta energy 0.93290 MeV per decay.
    n = load_nuclide("90Y")
    assert n.half_life_h == pytest.approx(64.1, rel=2e-3)
    assert n.beta_energy_per_decay_mev == pytest.approx(0.93290, rel=1e-3)
    assert n.photon_energy_per_decay_mev < 1e-4


def test_beta_spectrum_normalised_and_mean_consistent():
    import numpy as np

    for name in ("Lu-177", "Y-90"):
        n = load_nuclide(name)
        area = np.trapezoid(n.beta_pdf_per_mev, n.beta_energy_mev)
        mean = np.trapezoid(n.beta_pdf_per_mev * n.beta_energy_mev, n.beta_energy_mev)
        assert area == pytest.approx(1.0, rel=1e-6)
        assert mean == pytest.approx(n.beta_mean_energy_mev, rel=5e-3)
