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


# -- every engine: the terms of D(u) = sum_b m_b(u) (K_b (*) A)(u), against noise realisations
#    of the dose computed by the engine itself (D(A + sigma eps) - D(A): the engine is the
#    reference for what the dose is; the sigma formula never enters the realisations)

class _FakeKernel:
    """Just what the engines read from a VoxelKernel."""

    def __init__(self, data, spacing):
        self.data_gy_per_decay = data
        self.spacing_mm = spacing
        self.neglected_energy_fraction = 0.0

    def provenance(self):
        return {}


def _engine(kind):
    from voxdose.core.nuclide import load_nuclide
    from voxdose.dose.density import DensityBin
    from voxdose.dose.engine import DensityBinnedConvolution, KernelConvolution, LocalDeposition

    sp = (4.0, 4.0, 4.0)
    if kind in ("none", "scale"):
        return KernelConvolution(_FakeKernel(_kernel(), sp), density_mode=kind)
    if kind == "mvs":  # a narrow kernel for the dense bin, a wide one for the light bin
        wide = _kernel()
        narrow = np.zeros_like(wide)
        narrow[2:5, 2:5, 2:5] = wide[2:5, 2:5, 2:5] ** 2
        bins = (DensityBin(0.1, 1.05, 0.9, 0), DensityBin(1.05, np.inf, 1.4, 0))
        return DensityBinnedConvolution(bins, (_FakeKernel(wide, sp), _FakeKernel(narrow, sp)))
    return LocalDeposition(load_nuclide("Lu-177"), density_mode=kind.split("_")[1])


@pytest.mark.parametrize("kind", ["scale", "mvs", "ldm_none", "ldm_scale"])
def test_engine_sigma_and_mean_sigma_match_realisations_through_the_engine(kind):
    from voxdose.core.grid import Grid, Image
    from voxdose.dose.uncertainty import dose_sigma_image, engine_terms, mean_sigma_from_terms

    sigma, w = _case()
    grid = Grid.from_spacing(sigma.shape, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    rho = np.full(sigma.shape, 0.95)
    rho[:, :, 8:] = 1.3  # two density bins; 'scale' sees 0.95 and 1.3
    dens = Image(rho, grid, "density", "g/cm3")
    eng, be = _engine(kind), cpu_backend()
    tia = np.full(sigma.shape, 50.0)  # far above the noise: the engine's clip at 0 never acts
    base = np.asarray(eng.dose(Image(tia, grid, "tia", "Bq*s"), be, dens).data)
    rng = np.random.default_rng(21)
    n = 500
    sims = np.stack([np.asarray(eng.dose(Image(tia + sigma * rng.standard_normal(sigma.shape),
                                               grid, "tia", "Bq*s"), be, dens).data) - base
                     for _ in range(n)])
    pred = np.asarray(dose_sigma_image(eng, Image(sigma, grid, "s", "Bq*s"), be, dens).data)
    rel = sims.std(axis=0) / pred - 1.0
    assert abs(rel.mean()) < 0.01
    assert np.quantile(np.abs(rel), 0.99) < 4 / np.sqrt(2 * n)
    terms, _ = engine_terms(eng, grid, be, dens)
    res = mean_sigma_from_terms(sigma, terms, w, be, precision="float64")
    emp = float(np.std((sims * w).sum(axis=(1, 2, 3)) / w.sum()))
    assert emp == pytest.approx(res.independent_gy, rel=4 / np.sqrt(2 * n))
    # fully correlated (one common deviate): exactly the engine's dose of sigma
    corr = float((w * (np.asarray(eng.dose(Image(tia + sigma, grid, "t", "Bq*s"), be,
                                                dens).data) - base)).sum() / w.sum())
    assert res.fully_correlated_gy == pytest.approx(corr, rel=1e-9)
    # the default's float32 transforms: the same two numbers to float32 rounding
    fast = mean_sigma_from_terms(sigma, terms, w, be)
    assert fast.independent_gy == pytest.approx(res.independent_gy, rel=2e-6)
    assert fast.fully_correlated_gy == pytest.approx(corr, rel=2e-6)


def test_mvs_terms_use_each_bins_kernel():
    """A mutation check: swapping the bins' kernels changes sigma_D by far more than noise."""
    from voxdose.core.grid import Grid, Image
    from voxdose.dose.uncertainty import dose_sigma_image

    sigma, _ = _case()
    grid = Grid.from_spacing(sigma.shape, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    rho = np.full(sigma.shape, 0.95)
    rho[:, :, 8:] = 1.3
    dens, eng = Image(rho, grid, "density", "g/cm3"), _engine("mvs")
    s = np.asarray(dose_sigma_image(eng, Image(sigma, grid, "s", "Bq*s"), cpu_backend(),
                                    dens).data)
    light = np.asarray(dose_sigma_map(sigma, eng.kernels[0].data_gy_per_decay, cpu_backend()))
    dense = np.asarray(dose_sigma_map(sigma, eng.kernels[1].data_gy_per_decay, cpu_backend()))
    assert np.allclose(s[:, :, :8], light[:, :, :8]) and np.allclose(s[:, :, 8:], dense[:, :, 8:])
    assert np.median(light[:, :, 8:] / dense[:, :, 8:]) > 2


def test_bounded_tia_sigma_caps_diverged_fits_and_reports_them():
    from voxdose.core.grid import Grid, Image
    from voxdose.dose.uncertainty import bounded_tia_sigma

    grid = Grid.from_spacing((2, 2, 2), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    tia = Image(np.array([10.0, 20, 30, 40, 0, 1, 2, 3]).reshape(2, 2, 2), grid, "t", "Bq*s")
    sig = tia.with_data(np.array([1.0, 2, 3, 1e21, 5, 0.5, 0.5, 0.5]).reshape(2, 2, 2))
    out, info = bounded_tia_sigma(tia, sig)
    assert out.data.ravel().tolist() == [1.0, 2, 3, 40, 0, 0.5, 0.5, 0.5]
    assert info["n_voxels"] == 2 and info["tia_fraction"] == pytest.approx(40 / 106)
    assert info["sigma_squared_fraction"] == pytest.approx(1.0)
    assert out.meta["capped"] == info


def test_mean_sigma_with_fit_grid_parents_matches_shared_errors():
    """TIA errors fitted on a coarse grid and copied onto a 2x finer one (as after a
    partial-volume correction): fine voxels sharing a coarse voxel share its error.
    Realisations: coarse errors, repeated 2x2x2, scaled by a per-voxel factor, convolved
    directly (scipy.ndimage)."""
    from voxdose.core.grid import Grid
    from voxdose.dose.uncertainty import LinearTerm, fit_voxel_parents, mean_sigma_from_terms

    coarse = Grid.from_spacing((8, 8, 8), (8.0, 8.0, 8.0), (2.0, 2.0, 2.0))
    fine = Grid.from_spacing((16, 16, 16), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    parents = fit_voxel_parents(fine, coarse)
    up = np.arange(8 ** 3).reshape(8, 8, 8).repeat(2, 0).repeat(2, 1).repeat(2, 2)
    assert np.array_equal(parents, up)
    rng = np.random.default_rng(8)
    s_coarse = rng.uniform(0.5, 2.0, (8, 8, 8))
    factor = rng.uniform(1.0, 2.0, (16, 16, 16))
    s_fine = s_coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2) * factor
    _, w = _case()
    k = _kernel()
    res = mean_sigma_from_terms(s_fine, [LinearTerm(k)], w, cpu_backend(), parents=parents)
    n = 400
    means = []
    for _ in range(n):
        e = rng.standard_normal((8, 8, 8)).repeat(2, 0).repeat(2, 1).repeat(2, 2)
        d = ndimage.convolve(s_fine * e, k, mode="constant")
        means.append((w * d).sum() / w.sum())
    assert float(np.std(means)) == pytest.approx(res.independent_gy, rel=4 / np.sqrt(2 * n))
    alone = mean_sigma_from_terms(s_fine, [LinearTerm(k)], w, cpu_backend())
    assert res.independent_gy > 2 * alone.independent_gy  # shared errors add up
    assert res.fully_correlated_gy == pytest.approx(alone.fully_correlated_gy)
    # each voxel its own parent, or none (-1: outside the fit grid), or half and half:
    # every voxel independent, as without parents
    own = np.arange(parents.size).reshape(parents.shape)
    half = np.where(np.indices(parents.shape)[0] < 8, own, -1)
    for p in (own, np.full_like(parents, -1), half):
        one = mean_sigma_from_terms(s_fine, [LinearTerm(k)], w, cpu_backend(), parents=p)
        assert one.independent_gy == pytest.approx(alone.independent_gy, rel=1e-12)


@pytest.mark.parametrize("shape, kshape, box", [
    ((20, 17, 23), (7, 5, 9), ((6, 11), (3, 9), (10, 14))),      # kernel inside the grid
    ((12, 15, 10), (31, 25, 27), ((0, 4), (9, 15), (5, 6))),     # kernel wider than the grid
    ((18, 9, 14), (3, 19, 5), ((15, 18), (0, 9), (0, 2))),       # box on the faces
])
def test_convolution_of_a_box_equals_direct_convolution(shape, kshape, box):
    """The small-structure path of the mean sigma (FFTs of the structure's box and of the
    kernel window it needs) against scipy.ndimage's direct sum, with an asymmetric kernel
    (a flipped window would fail) and anisotropic shapes."""
    from voxdose.dose.convolution import convolve_in_box
    rng = np.random.default_rng(7)
    data = np.zeros(shape)
    sl = tuple(slice(*b) for b in box)
    data[sl] = rng.uniform(0.2, 1.0, data[sl].shape)
    k = rng.uniform(0.0, 1.0, kshape) * np.linspace(1.0, 3.0, kshape[2])
    want = ndimage.convolve(data, k, mode="constant", cval=0.0)
    window, where = convolve_in_box(data, box, k, cpu_backend())
    got = np.zeros(shape)
    got[where] = window
    assert np.max(np.abs(got - want)) < 1e-12 * np.max(np.abs(want))
    # only the structure's own voxels (the cross-fire split of the nuclide comparison)
    window, where = convolve_in_box(data, box, k, cpu_backend(), out_box=box)
    assert where == sl
    assert np.max(np.abs(window - want[sl])) < 1e-12 * np.max(np.abs(want))
    # float32 transforms: float32 result, rounding-level error
    window, where = convolve_in_box(data, box, k, cpu_backend(), precision="float32")
    assert window.dtype == np.float32
    got = np.zeros(shape)
    got[where] = window
    assert 1e-12 < np.max(np.abs(got - want)) / np.max(np.abs(want)) < 2e-6


def test_mean_sigma_small_structure_path_equals_whole_grid_path(monkeypatch):
    """The same two numbers whichever path a structure takes."""
    import voxdose.dose.uncertainty as unc
    sigma, w = _case((24, 20, 22))
    k = _kernel(15)
    be = cpu_backend()
    local = mean_dose_sigma(sigma, k, w, be, precision="float64")
    local32 = mean_dose_sigma(sigma, k, w, be)
    monkeypatch.setattr(unc, "box_convolution_is_cheaper", lambda *a: False)
    whole = mean_dose_sigma(sigma, k, w, be, precision="float64")
    assert local.independent_gy == pytest.approx(whole.independent_gy, rel=1e-12)
    assert local.fully_correlated_gy == pytest.approx(whole.fully_correlated_gy, rel=1e-12)
    whole32 = mean_dose_sigma(sigma, k, w, be)
    for a, b in ((local32, whole), (whole32, whole)):  # float32 transforms, either path
        assert a.independent_gy == pytest.approx(b.independent_gy, rel=2e-6)
        assert a.fully_correlated_gy == pytest.approx(b.fully_correlated_gy, rel=2e-6)
        assert a.independent_gy != b.independent_gy  # they did run in float32
    monkeypatch.setattr(unc, "box_convolution_is_cheaper", lambda *a: True)
    assert mean_dose_sigma(sigma, k, w, be, precision="float64").independent_gy == \
        pytest.approx(whole.independent_gy, rel=1e-12)


def test_float32_mean_sigma_over_a_kernels_dynamic_range():
    """The default float32 transforms against the float64 ones where rounding could show:
    a point-like kernel whose tail is 1e-6 of its centre (a beta core and a photon tail),
    sigma larger far from the structure than inside it, a 3-voxel lesion and a large
    organ. Both numbers within 2e-6 relative (measured on the demo: 2.2e-7)."""
    from voxdose.dose.uncertainty import LinearTerm, mean_sigma_from_terms
    n = 41
    r = np.linalg.norm(np.indices((n, n, n)) - n // 2, axis=0)
    k = np.exp(-3.0 * r) + 1e-6 / (1.0 + r ** 2)
    shape = (30, 34, 28)
    rng = np.random.default_rng(12)
    sigma = rng.uniform(0.5, 2.0, shape) * (1 + 20 * (np.indices(shape)[2] > 14))
    lesion = np.zeros(shape)
    lesion[8:10, 9:11, 5:7] = 1.0
    lesion[8, 9, 7] = 0.3
    organ = np.zeros(shape)
    organ[3:27, 4:30, 2:12] = 1.0
    be = cpu_backend()
    for w in (lesion, organ):
        ref = mean_sigma_from_terms(sigma, [LinearTerm(k)], w, be, precision="float64")
        got = mean_sigma_from_terms(sigma, [LinearTerm(k)], w, be)
        assert got.independent_gy == pytest.approx(ref.independent_gy, rel=2e-6)
        assert got.fully_correlated_gy == pytest.approx(ref.fully_correlated_gy, rel=2e-6)


def test_mean_sigma_narrows_the_engines_float64_spectrum_of_the_same_kernel_only():
    """After the dose, the structure-mean sigmas take the engine's float64 kernel spectrum
    rounded to complex64 instead of computing a float32 one: the two numbers stay within
    float32 rounding of the float64 reference (the same 2e-6 as computed afresh), the
    engine's cache is what was read, and a kernel that is not point symmetric (eq. 3
    convolves with K~ != K) or not the engine's kernel never takes it."""
    from voxdose.analysis.dvh_uncertainty import _spectrum_caches
    from voxdose.core.grid import Grid, Image
    from voxdose.dose.engine import KernelConvolution
    from voxdose.dose.uncertainty import LinearTerm, mean_sigma_from_terms

    sigma, w = _case((20, 18, 22))
    w = np.ones_like(w)              # the whole grid: the cached full-grid path
    grid = Grid.from_spacing(sigma.shape, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    eng = KernelConvolution(_FakeKernel(_kernel(9), (4.0, 4.0, 4.0)))
    be = cpu_backend()
    eng.dose(Image(sigma, grid, "tia", "Bq*s"), be)            # fills the engine's cache
    (key, spec64), = eng._spectra._d.items()
    # decoys inserted after it: another padding, the squared kernel, float64 of another h
    for decoy in ((key[0], (1, 2, 3), *key[2:]), (*key[:5], "squared"),
                  (*key[:3], (0, 0, 0), *key[4:])):
        eng._spectra.put(decoy, np.full_like(spec64, np.nan))
    terms = [LinearTerm(eng.kernel.data_gy_per_decay)]
    caches = _spectrum_caches(eng, terms)
    assert caches[0].float64_source is eng._spectra
    hits = eng._spectra.hits
    got = mean_sigma_from_terms(sigma, terms, w, be, caches)
    assert eng._spectra.hits == hits + 1 and len(caches[0]) == 1
    (key32, spec32), = caches[0]._d.items()
    assert key32 == (*key[:2], "float32", *key[3:])
    assert spec32.dtype == np.complex64 and np.array_equal(spec32, spec64.astype(np.complex64))
    ref = mean_sigma_from_terms(sigma, terms, w, be, precision="float64")
    assert got.independent_gy == pytest.approx(ref.independent_gy, rel=2e-6)
    assert got.fully_correlated_gy == pytest.approx(ref.fully_correlated_gy, rel=2e-6)
    # a spectrum of the kernel, not of K~: an asymmetric kernel is never narrowed
    lop = _kernel(9)
    lop[:, :, :4] *= 0.5
    eng2 = KernelConvolution(_FakeKernel(lop, (4.0, 4.0, 4.0)))
    assert _spectrum_caches(eng2, [LinearTerm(lop)])[0].float64_source is None
    assert _spectrum_caches(eng, [LinearTerm(_kernel(9))])[0].float64_source is None


def test_structure_mean_sigmas_in_threads_equal_one_at_a_time():
    """Two structures at once (the CPU default) give each structure's two numbers exactly
    as one at a time, in the same order; the shared spectrum cache survives a pickle."""
    import pickle

    from voxdose.analysis.dvh_uncertainty import structure_mean_sigmas
    from voxdose.dose.convolution import SpectrumCache
    from voxdose.dose.uncertainty import LinearTerm

    sigma, w = _case((20, 18, 22))
    ws = {f"s{k}": np.roll(w, 2 * k, axis=2) for k in range(5)}
    ws["whole"] = np.ones_like(w)
    terms = [LinearTerm(_kernel(9))]
    one = structure_mean_sigmas(sigma, terms, ws, cpu_backend(), [SpectrumCache(1)],
                                threads=1)
    two = structure_mean_sigmas(sigma, terms, ws, cpu_backend(), [SpectrumCache(1)],
                                threads=2)
    assert list(two) == list(ws) and two == one
    cache = pickle.loads(pickle.dumps(SpectrumCache(2)))
    cache.put("k", 1)
    assert cache.get("k") == 1
    narrow = pickle.loads(pickle.dumps(SpectrumCache(1, float64_source=cache)))
    assert narrow.float64_source is None      # another object's spectra stay behind


def test_float32_fully_correlated_sigma_is_not_biased_by_far_field_rounding():
    """A 9-voxel lesion in a 120^3 body whose sigma is 100x the lesion's, a kernel with no
    far field (exp(-3 r)): the float32 transforms' zero-mean rounding far away, summed as
    |g| s, gave +3.2e-3 relative (review, session 7); summed signed (g >= 0 exactly) it
    gives 1.1e-5, the independent number 2.7e-7."""
    from voxdose.dose.uncertainty import LinearTerm, mean_sigma_from_terms
    rng = np.random.default_rng(3)
    n_grid, n_k = 120, 121
    r = np.linalg.norm(np.indices((n_k,) * 3) - n_k // 2, axis=0)
    k = np.exp(-3.0 * r)
    lesion = np.zeros((n_grid,) * 3)
    c = n_grid // 2
    lesion[c:c + 2, c:c + 2, c:c + 2] = 1.0
    lesion[c, c, c + 2] = 0.3
    sigma = rng.uniform(0.5, 2.0, lesion.shape) * 100
    sigma[c - 2:c + 4, c - 2:c + 4, c - 2:c + 5] /= 100
    be = cpu_backend()
    ref = mean_sigma_from_terms(sigma, [LinearTerm(k)], lesion, be, precision="float64")
    got = mean_sigma_from_terms(sigma, [LinearTerm(k)], lesion, be)
    assert got.fully_correlated_gy == pytest.approx(ref.fully_correlated_gy, rel=3e-5)
    assert got.independent_gy == pytest.approx(ref.independent_gy, rel=2e-6)


def _parents_by_world_coordinates(grid, fit_grid):
    """The parent of every voxel, one voxel centre at a time through LPS mm (reference)."""
    out = np.empty(grid.shape, dtype=np.int64)
    n = np.array(fit_grid.shape)
    for idx in np.ndindex(*grid.shape):
        q = np.rint(fit_grid.world_to_index(grid.index_to_world(np.array(idx, float))))
        q = q.astype(np.int64)
        out[idx] = -1 if np.any(q < 0) or np.any(q >= n) else \
            (q[0] * n[1] + q[1]) * n[2] + q[2]
    return out


@pytest.mark.parametrize("case", ["parallel", "parallel_offset_outside", "rotated"])
def test_fit_voxel_parents_equal_nearest_centre_in_world_coordinates(case):
    """The per-axis path (parallel axes) and the general one (rotated) against each voxel's
    centre mapped through world coordinates; offsets chosen off the voxel-box ties."""
    from voxdose.core.grid import Grid
    from voxdose.dose.uncertainty import fit_voxel_parents

    fit = Grid.from_spacing((7, 6, 9), (4.42, 4.42, 3.9), (-10.3, 4.1, 20.7))
    if case == "parallel":
        grid = Grid.from_spacing((13, 11, 17), (2.21, 2.3, 1.95), (-11.2, 3.3, 19.6))
    elif case == "parallel_offset_outside":   # part of the grid beyond the fit grid
        grid = Grid.from_spacing((12, 10, 14), (3.0, 2.9, 3.1), (-25.1, -7.3, 5.2))
    else:
        c, s = np.cos(0.3), np.sin(0.3)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        direction = rot @ np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        grid = Grid.from_spacing((10, 12, 11), (2.5, 2.2, 2.4), (-5.3, 6.1, 25.4), direction)
    got = fit_voxel_parents(grid, fit)
    assert np.array_equal(got, _parents_by_world_coordinates(grid, fit))
    assert (got >= 0).any()
    if case == "parallel":
        assert (got >= 0).all()
    if case == "parallel_offset_outside":
        assert (got == -1).any()
