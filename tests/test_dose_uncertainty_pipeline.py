"""The pipeline's dose sigma map, structure-mean sigmas and DVH bands (small study).

The numbers the pipeline wrote are checked against brute-force noise realisations of the
TIA, sigma_A' eps with eps independent standard normal, each convolved with the pipeline's
voxel kernel by a circular FFT convolution written here (period >= N + kernel half-width,
so no wrap-around reaches the grid; itself checked against scipy.signal.fftconvolve), never
with voxdose's convolution or its sigma formula.
"""

import json

import numpy as np
import pytest
from scipy import signal
from scipy.fft import next_fast_len

from voxdose.core.nuclide import load_nuclide
from voxdose.dose.uncertainty import MAX_RELATIVE_TIA_SIGMA
from voxdose.imaging.occupancy import fractional_occupancy
from voxdose.io.sitk_adapter import read_image, read_labels
from voxdose.kernels.cache import voxel_kernel_cached
from voxdose.kernels.point import load_point_kernel

N_REAL = 200  # realisations: the sample sd of each is within 1/sqrt(2 N) = 5 % (1 sd)


def _results(small_results):
    out = small_results.out_dir
    return out, json.loads((out / "dvh.json").read_text())


def test_sigma_maps_written_with_sidecars(small_results):
    out, _ = _results(small_results)
    dose = read_image(out / "dose_lu177_kernel_gy.nii.gz").data
    for method in ("kernel", "ldm"):
        s = read_image(out / f"dose_lu177_{method}_sigma_gy.nii.gz").data
        side = json.loads((out / f"dose_lu177_{method}_sigma_gy.json").read_text())
        assert side["unit"] == "Gy" and "independent voxel TIA errors" in side["assumption"]
        assert side["dose_method"] == method and side["tia_sigma_capped"]["n_voxels"] >= 0
        assert s.shape == dose.shape and np.all(np.isfinite(s)) and np.all(s >= 0)
    prov = json.loads((out / "provenance.json").read_text())
    assert {"dose_lu177_kernel_sigma_gy.nii.gz", "dose_lu177_ldm_sigma_gy.nii.gz"} <= {
        p.split("/")[-1] for p in prov["outputs"]}


def test_dvh_json_has_sigmas_and_bands_that_bracket_the_nominal_dvh(small_results):
    _, doc = _results(small_results)
    assert "Cauchy-Schwarz" in doc["uncertainty"]["correlation"]
    assert "envelope" in doc["uncertainty"]["dose_band"]
    for s in doc["structures"]:
        if not s["n_voxels"]:
            continue
        ind, cor = s["sigma_mean_independent_gy"], s["sigma_mean_fully_correlated_gy"]
        assert 0 < ind <= cor < s["mean_gy"]
        b = s["dose_band"]
        lo, v, hi = (np.asarray(b[k]) for k in ("volume_fraction_lower", "volume_fraction",
                                                 "volume_fraction_upper"))
        assert len(b["dose_gy"]) == len(v) == 201 and b["k"] == 1.0
        assert np.all(lo <= v) and np.all(v <= hi)
        assert np.any(lo < v) and np.any(v < hi)  # a band, not a line
        # the band's nominal curve is the DVH's: V >= 50 % at every edge up to D50, and
        # below 50 % beyond it; 0 past the maximum
        d = np.asarray(b["dose_gy"])
        assert np.all(v[d <= s["d50_gy"]] >= 0.5 - 1e-9)
        assert np.all(v[d > s["d50_gy"]] <= 0.5 + 1e-9)
        assert v[0] == pytest.approx(1.0) and np.all(v[d > s["max_gy"]] == 0)


def _circular_convolver(kernel, shape):
    """'same' linear convolution with ``kernel`` (odd, centred) on ``shape`` by numpy FFTs
    of period P >= N + h (offsets beyond N - 1 cannot connect two voxels: cropped)."""
    h = [min(k // 2, n - 1) for k, n in zip(kernel.shape, shape)]
    c = [k // 2 for k in kernel.shape]
    k = kernel[tuple(slice(ci - hi, ci + hi + 1) for ci, hi in zip(c, h))]
    period = tuple(next_fast_len(n + hi, real=True) for n, hi in zip(shape, h))
    kp = np.zeros(period)
    kp[tuple(slice(0, 2 * hi + 1) for hi in h)] = k
    kp = np.roll(kp, [-hi for hi in h], axis=(0, 1, 2))  # centre at offset 0
    axes = (0, 1, 2)
    spec = np.fft.rfftn(kp, axes=axes)

    def conv(x):
        y = np.fft.irfftn(np.fft.rfftn(x, s=period, axes=axes) * spec, s=period, axes=axes)
        return y[: shape[0], : shape[1], : shape[2]]

    return conv


def _fixture_arrays(small_study, small_results):
    out = small_results.out_dir
    tia = read_image(out / "tia_bq_s.nii.gz")
    sig = np.asarray(read_image(out / "tia_sigma_bq_s.nii.gz").data, dtype=np.float64)
    a = np.asarray(tia.data, dtype=np.float64)
    capped = np.minimum(sig, MAX_RELATIVE_TIA_SIGMA * np.maximum(a, 0))  # the documented rule
    prov = json.loads((out / "provenance.json").read_text())
    kern = voxel_kernel_cached(load_point_kernel(load_nuclide("Lu-177")), tia.grid.spacing_mm,
                               radius_mm=prov["dose"]["kernel_extent"]["radius_mm"],
                               exact_spacing=True).data_gy_per_decay
    names = {int(k): v for k, v in
             json.loads((small_study.parent / "structure_names.json").read_text()).items()}
    ct = read_labels(small_study.parent / "labels.nii.gz", names)
    occ = fractional_occupancy(ct.data, ct.grid, tia.grid, names)
    weights = {n: np.where(occ.fractions[v] >= 1e-6, np.minimum(occ.fractions[v], 1), 0)
               for v, n in names.items()}
    return capped, np.asarray(kern, dtype=np.float64), weights


def test_pipeline_sigmas_match_brute_force_realisations(small_study, small_results):
    out, doc = _results(small_results)
    s, k, weights = _fixture_arrays(small_study, small_results)
    conv = _circular_convolver(k, s.shape)
    rng = np.random.default_rng(16)
    x = s * rng.standard_normal(s.shape)
    ref = signal.fftconvolve(x, k, mode="same")  # the test's convolver, checked once
    assert np.max(np.abs(conv(x) - ref)) < 1e-9 * np.max(np.abs(ref))
    names = [st["name"] for st in doc["structures"] if st["n_voxels"]]
    w = np.stack([weights[n] for n in names])
    sum_sq = np.zeros(s.shape)
    means = []
    for _ in range(N_REAL):
        d = conv(s * rng.standard_normal(s.shape))
        sum_sq += d * d
        means.append((w * d).sum(axis=(1, 2, 3)) / w.sum(axis=(1, 2, 3)))
    emp = np.sqrt(sum_sq / N_REAL)  # zero-mean noise: the rms is the sd
    pred = np.asarray(read_image(out / "dose_lu177_kernel_sigma_gy.nii.gz").data, float)
    sel = pred > 1e-3 * pred.max()
    rel = emp[sel] / pred[sel] - 1.0
    assert abs(np.mean(rel)) < 0.01 and np.quantile(np.abs(rel), 0.99) < 4 / np.sqrt(2 * N_REAL)
    emp_mean = np.std(np.asarray(means), axis=0)
    want = {st["name"]: st for st in doc["structures"]}
    ratio = np.array([emp_mean[i] / want[n]["sigma_mean_independent_gy"]
                      for i, n in enumerate(names)])
    assert np.all(np.abs(ratio - 1) < 4 / np.sqrt(2 * N_REAL)), dict(zip(names, ratio))
    assert abs(np.mean(ratio) - 1) < 4 / np.sqrt(2 * N_REAL * len(names))
    # fully correlated: one common deviate, D = eps (K (*) sigma): exact
    ks = conv(s)
    for i, n in enumerate(names):
        got = want[n]["sigma_mean_fully_correlated_gy"]
        assert got == pytest.approx(float((w[i] * ks).sum() / w[i].sum()), rel=1e-5), n
