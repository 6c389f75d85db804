"""Dose rate at a time t and dose delivered after a time t0 (convolution side).

The engines are linear in their input, so the same kernel (or local deposition) turns

* an activity map A(x, t) in **Bq per voxel** at time t into the dose-rate map
  ``Ddot(x, t) = sum_y A(y, t) S(x <- y)`` in **Gy/s**, and
* a map of the decays that happen after t0, ``A~_{t0}(y) = int_{t0}^inf A(y, t) dt``
  (decays per voxel), into the dose delivered after t0, ``D_{t0}(x) = sum_y A~_{t0}(y)
  S(x <- y)`` in **Gy** (e.g. what the marrow still receives after a stem-cell transplant
  given t0 after therapy).

The kinetics module produces A(t) and A~_{t0} from the fitted per-voxel curves.  For a
mono-exponential voxel ``A(t) = A0 exp(-lambda t)`` (no uptake phase), whose TIA from 0 is
``A~ = A0 / lambda``, the helpers below give the analytic maps used in the tests:
``A(t) = lambda A~ exp(-lambda t)`` and ``A~_{t0} = A~ exp(-lambda t0)``.
"""

from __future__ import annotations

import numpy as np

from ..core.grid import Image


def dose_rate(engine, activity_bq: Image, backend=None, density: Image | None = None,
              time_s: float | None = None) -> Image:
    """Dose-rate map (Gy/s) from an activity map in Bq per voxel at one time."""
    out = engine.apply(activity_bq, backend, density, quantity="absorbed dose rate",
                       unit="Gy/s")
    if time_s is not None:
        out.meta["time_s"] = float(time_s)
    return out


def dose_after(engine, tia_after_bq_s: Image, t0_s: float, backend=None,
               density: Image | None = None) -> Image:
    """Dose (Gy) delivered after ``t0_s``, from the decays per voxel that happen after t0."""
    out = engine.apply(tia_after_bq_s, backend, density,
                       quantity=f"absorbed dose delivered after t0 = {t0_s:g} s", unit="Gy")
    out.meta["t0_s"] = float(t0_s)
    return out


def mono_exponential_activity(tia_bq_s, lambda_eff_per_s, t_s):
    """A(t) = lambda A~ exp(-lambda t), Bq per voxel (mono-exponential from t = 0)."""
    lam = np.asarray(lambda_eff_per_s, dtype=np.float64)
    return np.asarray(tia_bq_s, dtype=np.float64) * lam * np.exp(-lam * float(t_s))


def mono_exponential_tia_after(tia_bq_s, lambda_eff_per_s, t0_s):
    """A~_{t0} = A~ exp(-lambda t0), decays per voxel after t0 (mono-exponential from 0)."""
    lam = np.asarray(lambda_eff_per_s, dtype=np.float64)
    return np.asarray(tia_bq_s, dtype=np.float64) * np.exp(-lam * float(t0_s))
