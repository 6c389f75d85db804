"""Shared Numba pieces of the project's Monte Carlo: random numbers, rotations, scoring.

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

import math

import numpy as np
from numba import njit

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


@njit(cache=True, inline="always")
def rand(st):
    """Uniform double in [0, 1) from the xorshift128+ state ``st`` (uint64[2])."""
    s1 = st[0]
    s0 = st[1]
    st[0] = s0
    s1 ^= s1 << np.uint64(23)
    s1 = s1 ^ s0 ^ (s1 >> np.uint64(17)) ^ (s0 >> np.uint64(26))
    st[1] = s1
    return float((s1 + s0) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def rand_pos(st):
    """Uniform double in (0, 1] (safe for -log)."""
    return 1.0 - rand(st)


@njit(cache=True)
def isotropic(st):
    """Isotropic unit vector."""
    w = 2.0 * rand(st) - 1.0
    phi = 2.0 * math.pi * rand(st)
    s = math.sqrt(max(0.0, 1.0 - w * w))
    return s * math.cos(phi), s * math.sin(phi), w


@njit(cache=True)
def rotate(u, v, w, cost, phi):
    """Direction (u, v, w) turned by polar cos_theta = ``cost`` and azimuth ``phi``."""
    sint = math.sqrt(max(0.0, 1.0 - cost * cost))
    cp = math.cos(phi)
    sp = math.sin(phi)
    if abs(w) > 0.99999999:
        un = sint * cp
        vn = sint * sp
        wn = cost if w > 0 else -cost
    else:
        tmp = math.sqrt(1.0 - w * w)
        un = u * cost + sint * (u * w * cp - v * sp) / tmp
        vn = v * cost + sint * (v * w * cp + u * sp) / tmp
        wn = w * cost - sint * cp * tmp
    nrm = 1.0 / math.sqrt(un * un + vn * vn + wn * wn)
    return un * nrm, vn * nrm, wn * nrm


@njit(cache=True)
def score(x, y, z, e, edges_mm, row):
    """Add energy ``e`` (MeV) at the point (x, y, z) in cm to the shell tally ``row``.

    ``row`` has len(edges) entries: shells 0..n-2 and the last slot for r >= edges[-1].
    """
    r = math.sqrt(x * x + y * y + z * z) * 10.0
    n = edges_mm.size
    if r >= edges_mm[n - 1]:
        row[n - 1] += e
        return
    i = np.searchsorted(edges_mm, r, side="right") - 1
    if i < 0:
        i = 0
    row[i] += e


@njit(cache=True, inline="always")
def interp_uniform(x, x0, dx, table):
    """Linear interpolation of ``table`` sampled at x0 + k dx (clamped at the ends)."""
    f = (x - x0) / dx
    n = table.size
    if f <= 0.0:
        return table[0]
    if f >= n - 1:
        return table[n - 1]
    k = int(f)
    t = f - k
    return table[k] * (1.0 - t) + table[k + 1] * t
