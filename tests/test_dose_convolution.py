"""FFT convolution: equals direct convolution, no wrap-around, float32 error, pruned ==
full transforms, kernel cropping, blockwise == one-shot, spectrum cache, engine settings."""

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import ndimage, signal

from voxdose.core.backend import cpu_backend
from voxdose.dose import convolution as conv
from voxdose.dose.convolution import SpectrumCache, fft_convolve_same, plan_blocks
from voxdose.dose.engine import KernelConvolution
from voxdose.core.errors import InputError
from voxdose.core.grid import Grid, Image

BE = cpu_backend()


@dataclass
class _Kernel:
    data_gy_per_decay: np.ndarray
    spacing_mm: tuple

    def provenance(self):
        return {"source": "test"}


def _radial_kernel(h=(6, 5, 7), decay=0.35):
    """A smooth, positive, centred kernel with anisotropic half-widths (not symmetric in
    value range: ~4 decades, like a dose kernel)."""
    z, y, x = np.meshgrid(*(np.arange(-a, a + 1) for a in h), indexing="ij")
    r = np.sqrt(z**2 + 1.3 * y**2 + 0.8 * x**2)
    k = np.exp(-decay * r) / (1.0 + r**2)
    k[h[0] + 1, h[1], h[2]] *= 1.7  # break the mirror symmetry: convolution, not correlation
    return k


def _even_kernel(h=(6, 5, 7), decay=0.35):
    """As :func:`_radial_kernel` but mirror symmetric in every axis (as every voxel S-value
    kernel is): the convolution takes the cosine-sum spectrum (even_kernel_spectrum)."""
    z, y, x = np.meshgrid(*(np.arange(-a, a + 1) for a in h), indexing="ij")
    r = np.sqrt(z**2 + 1.3 * y**2 + 0.8 * x**2)
    return np.exp(-decay * r) / (1.0 + r**2)


def _sparse_map(shape, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.random(shape) * (rng.random(shape) > 0.7)
    d[0, 0, 0] = 3.0
    d[-1, -1, -1] = 2.0
    return d


@pytest.mark.parametrize("make_kernel", [_radial_kernel, _even_kernel])
@pytest.mark.parametrize("strategy", ["pruned", "full"])
def test_fft_equals_direct_convolution(strategy, make_kernel):
    data = _sparse_map((11, 9, 13))
    k = make_kernel()
    got = fft_convolve_same(data, k, BE, strategy=strategy)
    direct = ndimage.convolve(data, k, mode="constant", cval=0.0)
    ref = signal.convolve(data, k, mode="same", method="direct")
    assert np.allclose(direct, ref, rtol=1e-12, atol=0)
    assert np.allclose(got, ref, rtol=1e-10, atol=1e-13 * ref.max())


@pytest.mark.parametrize("make_kernel", [_radial_kernel, _even_kernel])
def test_kernel_larger_than_grid_is_cropped_exactly(make_kernel):
    data = _sparse_map((5, 6, 4), seed=2)
    k = make_kernel(h=(9, 8, 10), decay=0.1)
    got = fft_convolve_same(data, k, BE)
    ref = signal.convolve(data, k, mode="same", method="direct")
    assert np.allclose(got, ref, rtol=1e-10, atol=1e-13 * ref.max())


def test_no_wraparound_from_an_edge_source():
    """A source on one face deposits nothing on the opposite face beyond the kernel reach
    (a circular convolution would wrap the kernel around onto it)."""
    n, h = 24, 8
    data = np.zeros((n, n, n))
    data[0, n // 2, n // 2] = 1.0
    k = np.ones((2 * h + 1,) * 3)
    for precision in ("float64", "float32"):
        out = fft_convolve_same(data, k, BE, precision=precision)
        assert np.allclose(out[: h + 1, n // 2 - h: n // 2 + h + 1, n // 2 - h: n // 2 + h + 1],
                           1.0, atol=1e-5)
        assert np.abs(out[h + 1:]).max() < 1e-6   # far side: exactly nothing to rounding
        assert np.abs(out[-1]).max() < 1e-6


def test_float32_error_against_float64():
    """float32 data + complex64 spectra: error ~1e-7 of the maximum (documented <= 1e-5)."""
    data = np.random.default_rng(1).random((40, 36, 32)) * 1e9
    k = _radial_kernel(h=(10, 10, 10))
    d64 = fft_convolve_same(data, k, BE, precision="float64")
    d32 = fft_convolve_same(data, k, BE, precision="float32")
    assert d32.dtype == np.float32 and d64.dtype == np.float64
    err = np.abs(d32 - d64).max() / d64.max()
    assert err < 1e-5
    assert err > 0  # it is really single precision


@pytest.mark.parametrize("make_kernel", [_radial_kernel, _even_kernel])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_blockwise_equals_one_shot(precision, make_kernel):
    data = _sparse_map((37, 29, 33), seed=5) * 1e6
    k = make_kernel(h=(6, 5, 7))
    one = fft_convolve_same(data, k, BE, precision=precision)
    # a budget far below the one-shot need forces several tiles on every axis
    plan = plan_blocks(data.shape, (6, 5, 7), BE, precision, budget_bytes=200_000)
    assert plan.n_tiles >= 8
    blocks = fft_convolve_same(data, k, BE, precision=precision, plan=plan)
    tol = 1e-12 if precision == "float64" else 2e-6
    assert np.abs(blocks - one).max() <= tol * np.abs(one).max()


def test_engine_blockwise_under_budget_equals_one_shot_and_records_plan():
    g = Grid.from_spacing((30, 26, 28), (3.0, 3.0, 3.0))
    tia = Image(_sparse_map(g.shape, seed=7) * 1e8, g)
    k = _Kernel(_radial_kernel(h=(5, 5, 5)), (3.0, 3.0, 3.0))
    big = KernelConvolution(k, memory_budget_gb=100.0).dose(tia)
    small = KernelConvolution(k, memory_budget_gb=0.0004).dose(tia)
    assert big.meta["convolution"]["memory_plan"]["n_tiles"] == 1
    assert small.meta["convolution"]["memory_plan"]["n_tiles"] > 1
    assert np.allclose(small.data, big.data, rtol=0, atol=1e-12 * big.data.max())


def test_spectrum_is_cached_per_padded_shape_and_precision():
    cache = SpectrumCache()
    k = _radial_kernel(h=(3, 3, 3))
    a = np.random.default_rng(0).random((16, 16, 16))
    fft_convolve_same(a, k, BE, cache)
    fft_convolve_same(a * 2, k, BE, cache)
    assert (cache.misses, cache.hits) == (1, 1)
    # float32: a new entry, narrowed from the float64 one (read: one more hit)
    fft_convolve_same(a, k, BE, cache, precision="float32")
    fft_convolve_same(np.ones((20, 16, 16)), k, BE, cache)
    assert (cache.misses, cache.hits, len(cache)) == (3, 2, 3)


def test_workers_do_not_change_the_result():
    a = _sparse_map((20, 18, 16))
    k = _radial_kernel(h=(4, 4, 4))
    one = fft_convolve_same(a, k, BE, workers=1)
    two = fft_convolve_same(a, k, BE, workers=2)
    assert np.allclose(one, two, rtol=1e-13, atol=1e-15)


def test_bad_settings_are_clear_errors():
    g = Grid.from_spacing((4, 4, 4), (3.0, 3.0, 3.0))
    k = _Kernel(np.ones((3, 3, 3)), (3.0, 3.0, 3.0))
    with pytest.raises(InputError, match="precision"):
        KernelConvolution(k, precision="float16").dose(Image(np.ones(g.shape), g))
    with pytest.raises(ValueError, match="odd"):
        fft_convolve_same(np.ones((4, 4, 4)), np.ones((2, 3, 3)), BE)


def test_mirror_symmetry_is_detected_exactly():
    k = _even_kernel()
    assert conv.is_mirror_symmetric(k)
    assert not conv.is_mirror_symmetric(_radial_kernel())
    bent = k.copy()
    bent[0, 2, 3] *= 1 + 1e-15                  # one voxel one rounding step off its mirror
    assert not conv.is_mirror_symmetric(bent)
    assert not conv.is_mirror_symmetric(k[:, :, :-1])  # an even axis has no centre


@pytest.mark.parametrize("padded", [(26, 22, 30), (27, 23, 31), (40, 33, 45), (13, 11, 15)])
def test_even_kernel_spectrum_equals_the_fft_of_the_padded_kernel(padded):
    """The cosine sums give the spectrum rfftn_padded gives (kernel at the corner, period P
    even or odd, P from 2h + 1 up), to ~1e-15 of the largest coefficient."""
    k = _even_kernel(h=(6, 5, 7), decay=0.2) * 3e-9
    ref = conv.rfftn_padded(k, padded, BE, np.complex128)
    got = conv.even_kernel_spectrum(k, padded, BE, np.complex128)
    assert got.shape == ref.shape and got.dtype == np.complex128
    assert np.abs(got - ref).max() <= 2e-15 * np.abs(ref).max()
    got32 = conv.even_kernel_spectrum(k, padded, BE, np.complex64)
    assert got32.dtype == np.complex64
    # the cosine sums in float64, then three float32 roundings (store, two phase products)
    assert np.abs(got32 - ref).max() <= 3e-7 * np.abs(ref).max()


def test_even_and_general_spectra_give_the_same_dose():
    """The same symmetric kernel through the cosine-sum spectrum and through the FFT
    spectrum (the symmetry hidden by moving one corner voxel by one ulp): the same dose to
    1e-14 of the maximum, float64."""
    data = _sparse_map((30, 25, 34), seed=9) * 1e7
    k = _even_kernel(h=(12, 11, 14), decay=0.15)
    hidden = k.copy()
    hidden[0, 0, 0] = np.nextafter(hidden[0, 0, 0], 1.0)
    assert not conv.is_mirror_symmetric(hidden)
    a = fft_convolve_same(data, k, BE)
    b = fft_convolve_same(data, hidden, BE)
    assert np.abs(a - b).max() <= 1e-14 * np.abs(b).max()


@pytest.mark.parametrize("make_kernel", [_radial_kernel, _even_kernel])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_squared_kernel_equals_the_convolution_with_k_squared(make_kernel, precision):
    """squared_kernel=True (the sigma maps' K^2, squared after cropping, of the octant when
    symmetric) gives the convolution with K**2 built by hand."""
    data = _sparse_map((21, 17, 19), seed=4) * 1e8
    k = make_kernel(h=(12, 11, 14), decay=0.2)          # larger than the grid: cropped
    got = fft_convolve_same(data, k, BE, precision=precision, squared_kernel=True)
    ref = fft_convolve_same(data, k ** 2, BE, precision=precision)
    tol = 1e-13 if precision == "float64" else 2e-6
    assert np.abs(got - ref).max() <= tol * np.abs(ref).max()
    direct = signal.convolve(data, k ** 2, mode="same", method="direct")
    assert np.abs(got - direct).max() <= (1e-12 if precision == "float64" else 2e-6) * direct.max()
