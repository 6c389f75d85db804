"""Swap the physical decay: the TIA map of nuclide 2 from the kinetics fitted for nuclide 1.

Assumption (mono-exponential, stated): in every voxel the activity of nuclide 1 decreased as
``A1(t) = A0 exp(-lambda_eff1 t)`` from the administration on (uptake instantaneous), with
``lambda_eff1 = lambda_p1 + lambda_bio``.  The same molecule labelled with nuclide 2 has the
same biology (same uptake A0 per administered Bq and the same lambda_bio), only another
physical decay constant, so::

    lambda_bio   = max(lambda_eff1 - lambda_p1, 0)
    lambda_eff2  = lambda_p2 + lambda_bio
    A~2          = A0 / lambda_eff2 = A~1 * lambda_eff1 / lambda_eff2      (decays per voxel)

(times ``activity_ratio`` = administered activity of nuclide 2 / nuclide 1; 1 by default).
Voxels without a usable fit (lambda_eff1 not finite or <= 0) are treated as pure physical
decay (lambda_bio = 0).  Uptake phases and multi-exponential kinetics are not represented;
for them integrate the fitted curve times exp(-(lambda_p2 - lambda_p1) t) instead.
Arrays stay on their device (NumPy or CuPy; the TIA's).
"""

from __future__ import annotations

import numpy as np

from ..core.backend import backend_of
from ..core.errors import InputError
from ..core.grid import Image
from ..core.nuclide import Nuclide, load_nuclide


def effective_lambda_for(lambda_eff1_per_s, lambda_p1_per_s: float, lambda_p2_per_s: float):
    """lambda_eff2 = lambda_p2 + max(lambda_eff1 - lambda_p1, 0), 1/s, per voxel."""
    xp = backend_of(lambda_eff1_per_s).xp
    lam1 = xp.asarray(lambda_eff1_per_s, dtype=xp.float64)
    bad = ~xp.isfinite(lam1) | (lam1 <= 0)
    bio = xp.where(bad, 0.0, xp.clip(lam1 - float(lambda_p1_per_s), 0.0, None))
    return float(lambda_p2_per_s) + bio


def swap_tia(tia1_bq_s, lambda_eff1_per_s, lambda_p1_per_s: float, lambda_p2_per_s: float,
             activity_ratio: float = 1.0):
    """A~2 = A~1 * lambda_eff1 / lambda_eff2 * activity_ratio (arrays, decays per voxel)."""
    if lambda_p1_per_s <= 0 or lambda_p2_per_s <= 0:
        raise InputError("physical decay constants must be positive (1/s)")
    be = backend_of(tia1_bq_s, lambda_eff1_per_s)
    xp = be.xp
    lam1 = be.asarray(lambda_eff1_per_s, dtype=xp.float64)
    tia1 = be.asarray(tia1_bq_s, dtype=xp.float64)
    lam2 = effective_lambda_for(lam1, lambda_p1_per_s, lambda_p2_per_s)
    bad = ~xp.isfinite(lam1) | (lam1 <= 0)
    lam1_used = xp.where(bad, float(lambda_p1_per_s), lam1)  # A0 = A~1 lambda_eff1
    return tia1 * (lam1_used / lam2) * float(activity_ratio)


def swap_nuclide_tia(tia1: Image, lambda_eff1: Image | np.ndarray, nuclide1: Nuclide | str,
                     nuclide2: Nuclide | str, activity_ratio: float = 1.0) -> Image:
    """TIA image for ``nuclide2`` from ``nuclide1``'s TIA and fitted lambda_eff map (1/s)."""
    n1 = load_nuclide(nuclide1) if isinstance(nuclide1, str) else nuclide1
    n2 = load_nuclide(nuclide2) if isinstance(nuclide2, str) else nuclide2
    lam = lambda_eff1.data if isinstance(lambda_eff1, Image) else lambda_eff1
    if np.shape(lam) != tia1.grid.shape:
        raise InputError(f"lambda_eff map shape {np.shape(lam)} does not match the TIA grid "
                         f"{tia1.grid.shape}")
    data = swap_tia(tia1.data, lam, n1.decay_constant_per_s, n2.decay_constant_per_s,
                    activity_ratio)
    meta = dict(tia1.meta)
    meta.update({"nuclide": n2.name, "swapped_from": n1.name,
                 "swap_model": "mono-exponential: lambda_eff2 = lambda_p2 + "
                               "max(lambda_eff1 - lambda_p1, 0); A~2 = A~1 lambda_eff1/"
                               "lambda_eff2", "activity_ratio": float(activity_ratio)})
    return tia1.with_data(data, meta=meta)
