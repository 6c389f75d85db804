"""Dose sigma from TIA sigma, checked against brute-force noise realisations convolved with
an independent direct convolution (scipy.ndimage.convolve), never with the FFT code."""

import numpy as np
import pytest
from scipy import ndimage

from voxdose.core.backend import cpu_backend
from voxdose.dose.uncertainty import dose_sigma_map, mean_dose_sigma


def _kernel(n=7):
    r = np.linalg.norm(np.indices((n, n, n)) - n // 2, axis=0)
    return 1.0 / (1.0 + r ** 2)  # symmetric, falls off like a point kernel


def _case(shape=(16, 16, 16)):
    rng = np.random.default_rng(3)
    sigma = rng.uniform(0.5, 2.0, shape)
    w = np.zeros(shape)
    w[5:11, 4:12, 6:10] = 1.0
    w[4, 4:12, 6:10] = 0.4  # partial-volume rim
    return sigma, w


def test_sigma_map_matches_noise_realisations():
    sigma, _ = _case()
    k = _kernel()
    pred = dose_sigma_map(sigma, k, cpu_backend())
    rng = np.random.default_rng(11)
    n = 600
    sims = np.stack([ndimage.convolve(sigma * rng.standard_normal(sigma.shape), k,
                                      mode="constant") for _ in range(n)])
    emp = sims.std(axis=0)
    # the sample std of n Gaussian draws has relative sd 1/sqrt(2n) = 2.9 %
    rel = emp / pred - 1.0
    assert abs(rel.mean()) < 0.01
    assert np.quantile(np.abs(rel), 0.99) < 4 / np.sqrt(2 * n)
    # and it is not the naive sqrt(K (*) sigma^2) or K (*) sigma
    naive = ndimage.convolve(sigma, k, mode="constant")
    assert np.median(naive / pred) > 1.5


@pytest.mark.parametrize("correlated", [False, True])
def test_mean_dose_sigma_independent_and_fully_correlated(correlated):
    sigma, w = _case()
    k = _kernel()
    res = mean_dose_sigma(sigma, k, w, cpu_backend())
    rng = np.random.default_rng(5)
    if correlated:  # one common normal deviate: D = eps * (K (*) sigma), exactly
        base = ndimage.convolve(sigma, k, mode="constant")
        means = rng.standard_normal(800) * (w * base).sum() / w.sum()
    else:
        means = [(w * ndimage.convolve(sigma * rng.standard_normal(sigma.shape), k,
                                       mode="constant")).sum() / w.sum() for _ in range(800)]
    emp = float(np.std(means))
    want = res.fully_correlated_gy if correlated else res.independent_gy
    assert emp == pytest.approx(want, rel=4 / np.sqrt(2 * 800))
    assert res.fully_correlated_gy > 3 * res.independent_gy


def test_empty_structure_has_zero_sigma():
    sigma, w = _case()
    res = mean_dose_sigma(sigma, _kernel(), np.zeros_like(w), cpu_backend())
    assert res.independent_gy == 0.0 and res.fully_correlated_gy == 0.0
