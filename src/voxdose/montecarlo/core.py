"""Shared Numba pieces of the project's Monte Carlo: random numbers, rotations, scoring.

The jitted functions (``rand``, ``rotate``, ``score``, ...) are defined once in
:mod:`voxdose.montecarlo.transport` (CPU and CUDA) and re-exported here.

Random numbers
    xorshift128+ (Vigna 2014) on a per-batch uint64 state of two words, seeded from
    (seed, batch) through splitmix64.  Each batch of histories owns its generator and its
    tally row, so results do not depend on the number of threads (reproducible).

Direction change
    ``rotate(u, v, w, cos_theta, phi)`` turns the unit vector (u, v, w) by the polar angle
    theta and azimuth phi (standard formula, e.g. PENELOPE-2014 manual Eq. 1.131).

Scoring
    Energy is scored in spherical shells with edges ``edges_mm`` (any increasing grid
    starting at 0); a deposit at radius r >= edges[-1] goes to the "beyond" counter.
"""

from __future__ import annotations

import numpy as np

# the device-neutral pieces live in voxdose.montecarlo.transport (CPU and CUDA)
from .transport import (  # noqa: F401  (re-exported)
    interp_uniform,
    isotropic,
    rand,
    rand_pos,
    rotate,
    score,
)

_M64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """One step of splitmix64 (Python ints, masked to 64 bits)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def rng_states(seed: int, n_batches: int) -> np.ndarray:
    """(n_batches, 2) uint64 xorshift128+ states, independent streams per batch."""
    out = np.empty((n_batches, 2), dtype=np.uint64)
    for b in range(n_batches):
        s0 = splitmix64((int(seed) * 1_000_003 + b * 7919 + 1) & _M64)
        s1 = splitmix64(s0)
        out[b, 0] = s0 or 1
        out[b, 1] = s1 or 2
    return out

