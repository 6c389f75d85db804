"""Zero-padded linear FFT convolution for dose kernels: cached spectra, pruned transforms,
float32 option, and blockwise (overlap-save) evaluation under a memory budget.

What
    ``out[i] = sum_j data[j] k[c + i - j]`` for every voxel i of ``data`` ('same' output; the
    kernel is odd-shaped with its centre c = K // 2), computed with real FFTs.  Arrays are
    NumPy or CuPy; the backend supplies ``xp`` and ``fft`` (one code path).

Why the padding is only N + h (not N + K - 1)
    The full linear convolution has length N + 2h (K = 2h + 1); 'same' keeps its indices
    [h, h + N).  A circular convolution of period P aliases index i onto i +- P, so the kept
    indices are exact as soon as P >= N + h: i + P >= N + 2h lies beyond the full result and
    i - P < 0 before it.  This is ~2x fewer FFT points than N + K - 1 for a kernel as large
    as the grid.  Kernel offsets beyond N - 1 can never connect two voxels of the grid, so
    the kernel is first cropped to h_a <= N_a - 1 per axis.

Pruned transforms
    The forward transform runs axis by axis (x, then y, then z), each pass padding only the
    axis it transforms, so the zero rows of the padded array are never transformed.  The
    inverse does the reverse and keeps only the wanted rows after each pass.  On the CPU this
    is 1.3-1.7x faster than ``rfftn``/``irfftn`` on the padded array (measured, 128^3 and
    256^3); on a GPU the single 3D cuFFT plan is used instead (``strategy='full'``).  Both
    strategies give the same result to rounding (tested).

Precision
    ``precision='float64'``: float64 data, complex128 spectra (error ~1e-15 of the maximum).
    ``precision='float32'``: float32 data and complex64 spectra (the kernel spectrum is also
    computed in float32, except a mirror-symmetric kernel's, which is summed in float64 and
    stored as complex64); half the memory and ~1.7x faster.  The error is set by FFT rounding,
    ~5e-7 of the *maximum* dose on 128^3-256^3 grids (measured; see docs/benchmarks.md):
    voxels whose dose is below ~1e-5 of the maximum (far from all activity) carry a relative
    error above 1e-2.  Sums over organs are unaffected (rounding is zero-mean).
    Default of every entry point (:data:`DEFAULT_PRECISION`, docs/defaults.md): float64
    arithmetic, results stored as float32 images.  Measured on a 128^3 Lu-177 map (4.8 mm,
    CPU): float32 FFTs differ from float64 by 3.4e-7 of the maximum, ten times the 3.3e-8 of
    storing the float64 result as float32, for 0.22 s instead of 0.44 s.

Kernel spectra of symmetric kernels
    A voxel S-value kernel is even in every axis, so its spectrum is real up to the phase of
    its corner placement and separable into three cosine sums over its octant
    (:func:`even_kernel_spectrum`): matrix products of 1/8 of the kernel instead of an FFT
    of the whole padded kernel, and no padded copy of it.  Taken whenever the cropped
    kernel is exactly symmetric (:func:`is_mirror_symmetric`); any other kernel is
    transformed by FFT, and so is every kernel on a GPU (cuFFT does the padded kernel in
    about a millisecond).

Blockwise (overlap-save)
    When the one-shot problem does not fit ``memory_budget_bytes``, the output is tiled;
    each tile's input region is the tile grown by the kernel half-width (clipped to the
    grid), convolved with period P >= t + h + max(halo) and cropped back to the tile.  All
    tiles share one P, so the kernel spectrum is computed once.  Equal to the one-shot
    result to float rounding (tested).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..kernels.symmetry import is_mirror_symmetric, octant_view

PRECISIONS = ("float32", "float64")
#: The FFT precision of every entry point (``voxdose run``, ``dose``, the engines).
DEFAULT_PRECISION = "float64"
STRATEGIES = ("pruned", "full")


def _dtypes(xp, precision: str):
    if precision == "float32":
        return xp.float32, xp.complex64
    if precision == "float64":
        return xp.float64, xp.complex128
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def next_smooth(n: int) -> int:
    """Smallest 2^a 3^b 5^c 7^d >= n (sizes cuFFT handles fastest)."""
    n = max(1, int(n))
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def fast_len(n: int, backend) -> int:
    """A fast real-FFT length >= n for this backend."""
    if backend.name == "cpu":
        return int(backend.fft.next_fast_len(int(n), real=True))
    return next_smooth(int(n))


def _fft_kwargs(backend, workers):
    # scipy.fft takes worker threads; cupyx.scipy.fft has no such argument
    if backend.name == "cpu":
        return {"workers": -1 if workers is None else int(workers)}
    return {}


def default_workers() -> int:
    """Worker threads for scipy.fft: every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def rfftn_padded(x, padded, backend, ctype, workers=None, strategy="pruned"):
    """Real FFT of ``x`` zero-padded to ``padded`` (3 axes), result in ``ctype``."""
    fft = backend.fft
    kw = _fft_kwargs(backend, workers)
    if strategy == "full":
        out = fft.rfftn(x, s=tuple(padded), axes=(0, 1, 2), **kw)
        return out.astype(ctype, copy=False)
    a = fft.rfft(x, n=padded[2], axis=2, **kw).astype(ctype, copy=False)
    # the y and z passes run in place in one buffer of the padded shape (zeros where the
    # data have none): no padded copy per pass (20 % faster at 256^3, the same numbers)
    n0, n1 = a.shape[:2]
    xp = backend.xp
    out = xp.empty((int(padded[0]), int(padded[1]), a.shape[2]), dtype=a.dtype)
    out[n0:] = 0
    rows = out[:n0]
    rows[:, n1:] = 0
    rows[:, :n1] = a
    del a
    _into(rows, fft.fft(rows, axis=1, overwrite_x=True, **kw), xp)
    _into(out, fft.fft(out, axis=0, overwrite_x=True, **kw), xp)
    return out


def _into(dst, result, xp) -> None:
    """Put an FFT's result into ``dst``, unless the FFT ran in place (overwrite_x): then
    ``result`` is a view of ``dst``'s own memory (a copy onto itself would cost a pass)."""
    if result is dst or (result.shape == dst.shape and xp.may_share_memory(dst, result)):
        return
    dst[...] = result


def irfftn_window(spec, padded, start, length, backend, workers=None, strategy="pruned"):
    """Inverse of :func:`rfftn_padded` keeping only ``[start_a, start_a + length_a)`` per axis."""
    fft = backend.fft
    kw = _fft_kwargs(backend, workers)
    s0, s1, s2 = (int(v) for v in start)
    n0, n1, n2 = (int(v) for v in length)
    if strategy == "full":
        full = fft.irfftn(spec, s=tuple(padded), axes=(0, 1, 2), overwrite_x=True, **kw)
        return full[s0:s0 + n0, s1:s1 + n1, s2:s2 + n2]
    a = fft.ifft(spec, axis=0, overwrite_x=True, **kw)[s0:s0 + n0]
    a = fft.ifft(a, axis=1, overwrite_x=True, **kw)[:, s1:s1 + n1]
    return fft.irfft(a, n=padded[2], axis=2, **kw)[:, :, s2:s2 + n2]


def crop_kernel(kernel_shape, data_shape) -> tuple[tuple[int, int, int], tuple[slice, ...]]:
    """Half-widths after cropping to what can reach inside the grid, and the crop slices."""
    h = []
    sl = []
    for k, n in zip(kernel_shape, data_shape):
        if k % 2 == 0:
            raise ValueError(f"kernel shape must be odd on every axis, got {tuple(kernel_shape)}")
        hk = k // 2
        he = min(hk, max(int(n) - 1, 0))
        h.append(he)
        sl.append(slice(hk - he, hk + he + 1))
    return tuple(h), tuple(sl)


class SpectrumCache:
    """Kernel spectra keyed by (backend, padded shape, dtype, kernel crop, strategy), LRU.

    One cache belongs to one kernel (the engine owns it), so the kernel itself is not part
    of the key.  ``max_entries`` bounds the memory held (a spectrum is as large as the
    padded problem's half spectrum).  ``float64_source``: another cache *of the same
    kernel* (an engine's) whose float64 spectra a float32 request may narrow instead of
    computing its own (:func:`kernel_spectrum`).
    """

    def __init__(self, max_entries: int = 4, float64_source: SpectrumCache | None = None):
        import threading

        self.max_entries = int(max_entries)
        self.float64_source = float64_source
        self._d: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()  # structures may share one cache from threads

    def get(self, key):
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
                self.hits += 1
            return v

    def put(self, key, value) -> None:
        with self._lock:
            self.misses += 1
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.max_entries:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def __getstate__(self):  # a lock does not pickle: a copy gets its own; the source
        # (another object's cache, up to four complex128 spectra) does not travel with it
        return {k: (None if k == "float64_source" else v) for k, v in self.__dict__.items()
                if k != "_lock"}

    def __setstate__(self, state) -> None:
        import threading

        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._d)


def even_kernel_spectrum(kernel, padded, backend, ctype):
    """The real FFT of a cropped, mirror-symmetric kernel (2h + 1 per axis) placed at the
    corner of ``padded`` (what :func:`rfftn_padded` gives), from its octant by cosine sums.

    Per axis, with the kernel at [0, 2h] and period P,
    ``sum_n K(n - h) e^{-2 pi i k n / P} = e^{-2 pi i k h / P} [K(0) + 2 sum_{m=1..h} K(m)
    cos(2 pi k m / P)]``; the three axes separate, so the bracket is three matrix products
    of the octant (h + 1 per axis) with (k, m) cosine tables, for k <= P/2 only (the bracket
    is even in k: C(P - k) = C(k)), and the phases multiply at the end.  Work ~ M^4 per
    axis (M = h + 1) in BLAS, against an FFT of the whole padded kernel: 0.05-0.2 s instead
    of 0.7 s for the demo's 251 x 227 x 319 label-grid kernel.  Arithmetic in float64
    whatever ``ctype`` (the angles reduced exactly, (k m) mod P in integers); agrees with
    the FFT to ~1e-15 of the largest coefficient (tests/test_dose_convolution.py)."""
    return _even_spectrum_of_octant(octant_view(np.asarray(kernel, dtype=np.float64)), padded,
                                    backend, ctype)


def _even_spectrum_of_octant(octant, padded, backend, ctype):
    """:func:`even_kernel_spectrum` from the octant itself (offsets 0..h per axis)."""
    xp = backend.xp
    h = [n - 1 for n in octant.shape]
    octant = xp.asarray(np.ascontiguousarray(octant, dtype=np.float64))
    p = [int(v) for v in padded]

    def cosines(axis: int):  # (P // 2 + 1, h + 1): w_m cos(2 pi k m / P), w = 1, 2, 2, ...
        kk = np.arange(p[axis] // 2 + 1, dtype=np.int64)[:, None]
        m = np.arange(h[axis] + 1, dtype=np.int64)[None, :]
        c = np.cos((2.0 * np.pi / p[axis]) * ((kk * m) % p[axis]))
        c[:, 1:] *= 2.0
        return xp.asarray(c)

    # x: (Mz, My, Mx) @ (Mx, Kx); y: (Ky, My) @ (Mz, My, Kx); z: (Kz, Mz) @ (Mz, Ky * Kx)
    a = xp.matmul(octant, cosines(2).T)
    a = xp.matmul(cosines(1), a)
    kz, ky, kx = p[0] // 2 + 1, a.shape[1], a.shape[2]
    a = xp.matmul(cosines(0), a.reshape(a.shape[0], ky * kx)).reshape(kz, ky, kx)

    def phase(axis: int, n: int):  # e^{-2 pi i k h / P}, k = 0..n-1
        kk = np.arange(n, dtype=np.int64)
        ph = np.exp((-2j * np.pi / p[axis]) * ((kk * h[axis]) % p[axis]))
        return xp.asarray(ph)

    # C(k) for k = 0..P-1 is C(min(k, P - k)): four strided copies into the result, then the
    # phases in place (no temporaries of the spectrum's size: fresh memory is what costs)
    spec = xp.empty((p[0], p[1], kx), dtype=ctype)
    for zdst, zsrc in ((slice(0, kz), slice(0, kz)), (slice(kz, p[0]), slice(p[0] - kz, 0, -1))):
        for ydst, ysrc in ((slice(0, ky), slice(0, ky)),
                           (slice(ky, p[1]), slice(p[1] - ky, 0, -1))):
            spec[zdst, ydst] = a[zsrc, ysrc]
    spec *= (phase(0, p[0])[:, None] * phase(1, p[1])[None, :]).astype(ctype)[:, :, None]
    spec *= phase(2, kx).astype(ctype)[None, None, :]
    return spec


def kernel_spectrum(kernel, padded, h, crop, backend, precision, cache=None, workers=None,
                    strategy="pruned", squared: bool = False):
    """The (cached) real FFT of the cropped kernel zero-padded to ``padded`` (on the
    CPU by :func:`even_kernel_spectrum` when the cropped kernel is mirror symmetric);
    ``squared``: of the kernel squared voxel by voxel (K^2, the variance propagation),
    squared after cropping (of the octant only, when symmetric)."""
    xp = backend.xp
    rtype, ctype = _dtypes(xp, precision)
    key = (backend.name, tuple(int(p) for p in padded), precision, tuple(h), strategy,
           "squared" if squared else "kernel")
    spec = cache.get(key) if cache is not None else None
    if spec is None and cache is not None and precision == "float32":
        spec = _narrowed(cache, key, ctype)
        if spec is not None:
            cache.put(key, spec)
    if spec is None:
        kc = kernel[crop]
        # CPU only, like the pruned strategy: a GPU transforms the padded kernel in ~1 ms
        if backend.name == "cpu" and isinstance(kc, np.ndarray) and is_mirror_symmetric(kc):
            octant = np.asarray(octant_view(kc), dtype=np.float64)
            spec = _even_spectrum_of_octant(octant ** 2 if squared else octant, padded,
                                            backend, ctype)
        else:
            k = xp.asarray(kc, dtype=rtype)
            spec = rfftn_padded(k * k if squared else k, padded, backend, ctype, workers,
                                strategy)
        if cache is not None:
            cache.put(key, spec)
    return spec


def _narrowed(cache: SpectrumCache, key, ctype):
    """The float64 spectrum of ``key`` (the same problem; in ``cache`` or its
    ``float64_source``) rounded to ``ctype`` (complex64), or None.  One rounding of the
    float64 coefficients: at least as close to the exact spectrum as the float32 path
    (which rounds the phases and their products too); ~0.15 s on the demo's label grid
    (the new array's memory, mostly) instead of the 0.3-0.36 s of computing it."""
    wide = (*key[:2], "float64", *key[3:])
    for c in (cache, cache.float64_source):
        spec64 = c.get(wide) if c is not None else None
        if spec64 is not None:
            return spec64.astype(ctype)
    return None


# ------------------------------------------------------------------------------------------
# data that are zero outside a box (one structure): FFTs of the box, not of the grid
# ------------------------------------------------------------------------------------------
def support_box(a, xp) -> tuple[tuple[int, int], ...] | None:
    """(first, stop) per axis of the non-zero voxels of the 3D array ``a``; None when every
    voxel is zero."""
    out = []
    for axis in range(3):
        other = tuple(i for i in range(3) if i != axis)
        nz = xp.flatnonzero(xp.any(a != 0, axis=other))
        if nz.size == 0:
            return None
        out.append((int(nz[0]), int(nz[-1]) + 1))
    return tuple(out)


def _box_axes(n, box, h, out_box):
    """Per axis: (output window [o0, o1), the kernel offsets' first value off0, window
    length L = M + b - 1) for :func:`convolve_in_box`."""
    axes = []
    for a in range(3):
        s0, s1 = box[a]
        o0, o1 = max(0, s0 - h[a]), min(int(n[a]), s1 + h[a])
        if out_box is not None:
            o0, o1 = max(o0, int(out_box[a][0])), min(o1, int(out_box[a][1]))
        axes.append((o0, max(o1, o0), o0 - (s1 - 1), max(o1 - o0, 0) + (s1 - s0) - 1))
    return axes


def convolve_in_box(data, box, kernel, backend, out_box=None, precision: str = "float64"):
    """The 'same' linear convolution of ``data`` with the odd-shaped, centred ``kernel``
    (as :func:`fft_convolve_same`; ``precision`` of the transforms and the result as
    there, float64 by default), for data that are zero outside ``box``
    ((first, stop) per axis), evaluated on ``out_box`` (default: wherever it can be
    non-zero). Returns (window, slices): the result on the window, and the slices
    of the grid it covers.

    Per axis, with the data on [s, s+b), a kernel half-width h and a grid of n voxels, the
    output can be non-zero only on [max(0, s-h), min(n, s+b+h)); on an output window
    [o0, o1) of M voxels it uses the kernel offsets [o0-(s+b-1), o1-1-s] (M+b-1 of them),
    and the window is the 'valid' part of the linear convolution of that kernel window
    with the box: exact with a circular period P >= M+b-1 (the wrapped tail lands below
    the valid part). Three transforms of P (box, kernel window, inverse) instead of two
    of n+h: far cheaper for a small structure (and tiny when only the structure's own
    voxels are wanted, ``out_box=box``). The window is in ``precision``'s real type."""
    xp = backend.xp
    rtype, ctype = _dtypes(xp, precision)
    k = np.asarray(kernel, dtype=np.float64)
    n = tuple(int(v) for v in data.shape)
    h, _ = crop_kernel(k.shape, n)
    hk = tuple(v // 2 for v in k.shape)
    axes = _box_axes(n, box, h, out_box)
    where = tuple(slice(o0, o1) for o0, o1, _, _ in axes)
    if any(o1 <= o0 for o0, o1, _, _ in axes):
        return xp.zeros(tuple(o1 - o0 for o0, o1, _, _ in axes), dtype=rtype), where
    kern_sl, place_sl, periods = [], [], []
    for a, (_o0, _o1, off0, length) in enumerate(axes):
        lo, hi = max(off0, -h[a]), min(off0 + length - 1, h[a])  # offsets the kernel has
        kern_sl.append(slice(lo + hk[a], max(hi, lo - 1) + hk[a] + 1))
        place_sl.append(slice(lo - off0, max(hi, lo - 1) - off0 + 1))
        periods.append(fast_len(length, backend))
    kw = xp.zeros(tuple(length for *_, length in axes), dtype=rtype)
    kw[tuple(place_sl)] = xp.asarray(k[tuple(kern_sl)], dtype=rtype)
    spec = rfftn_padded(kw, periods, backend, ctype)
    del kw
    d = xp.asarray(data[tuple(slice(s0, s1) for s0, s1 in box)], dtype=rtype)
    spec *= rfftn_padded(d, periods, backend, ctype)
    start = tuple(s1 - s0 - 1 for s0, s1 in box)
    length = tuple(o1 - o0 for o0, o1, _, _ in axes)
    return xp.ascontiguousarray(irfftn_window(spec, periods, start, length, backend)), where


def box_convolution_is_cheaper(shape, box, kernel_shape, backend, out_box=None) -> bool:
    """:func:`convolve_in_box` costs less than :func:`fft_convolve_same` on the whole grid
    (3 transforms of the box's periods against 2 of the grid's, n log n), and its two half
    spectra fit the backend's memory budget."""
    if box is None:
        return False
    h, _ = crop_kernel(kernel_shape, shape)
    full = local = 1.0
    half = 1
    for a, (*_, length) in enumerate(_box_axes(shape, box, h, out_box)):
        full *= fast_len(int(shape[a]) + h[a], backend)
        p = fast_len(max(length, 1), backend)
        local *= p
        half *= p // 2 + 1 if a == 2 else p
    need = 2 * half * 16 + 2 * math.prod(int(v) for v in shape) * 8
    return (3.0 * local * math.log2(max(local, 2.0)) < 2.0 * full * math.log2(max(full, 2.0))
            and need <= default_budget_bytes(backend))


# ------------------------------------------------------------------------------------------
# memory planning
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockPlan:
    """How a convolution will run: tile shape, FFT period, number of tiles, bytes estimate."""

    tile: tuple[int, int, int]
    padded: tuple[int, int, int]
    n_tiles: int
    estimated_bytes: int
    budget_bytes: int | None

    @property
    def blockwise(self) -> bool:
        return self.n_tiles > 1

    def to_dict(self) -> dict:
        return {"tile_zyx": list(self.tile), "fft_shape_zyx": list(self.padded),
                "n_tiles": self.n_tiles, "estimated_peak_gb": self.estimated_bytes / 1e9,
                "memory_budget_gb": None if self.budget_bytes is None
                else self.budget_bytes / 1e9}


def estimate_bytes(data_shape, tile, padded, precision: str, backend_name: str = "cpu") -> int:
    """Peak bytes of one convolution, an upper estimate.

    Input (float64 as handed in) + output (working dtype) + the cached kernel spectrum +
    two half spectra alive during a transform pass (+ one more on a GPU for cuFFT's work
    area) + the tile's input region in the working dtype.
    """
    rsize = 4 if precision == "float32" else 8
    n_data = math.prod(int(v) for v in data_shape)
    spec = int(padded[0]) * int(padded[1]) * (int(padded[2]) // 2 + 1) * 2 * rsize
    region = math.prod(min(int(n), int(p)) for n, p in zip(data_shape, padded))
    n_specs = 3 + (1 if backend_name == "gpu" else 0)
    return int(n_data * 8 + n_data * rsize + n_specs * spec + region * rsize)


def plan_blocks(data_shape, h, backend, precision: str, budget_bytes: int | None,
                min_tile: int = 8, max_tiles_per_axis: int = 16) -> BlockPlan:
    """The cheapest tiling that fits the budget.

    Candidates: k_a tiles per axis (1 <= k_a <= 16, tiles of ceil(N_a / k_a) >= ``min_tile``
    voxels); cost = n_tiles x FFT points x log2(FFT points); memory from
    :func:`estimate_bytes`.  One shot (k = 1, 1, 1) when it fits.  When nothing fits, the
    tiling with the smallest memory is used (and its estimate reported).
    """
    n = [int(v) for v in data_shape]
    lengths: list[dict] = [{}, {}, {}]  # fast FFT length per axis and tile size, computed once

    def padded_for(t):
        out = []
        for a in range(3):
            if t[a] not in lengths[a]:
                m = t[a] + h[a] if t[a] >= n[a] else t[a] + 2 * h[a]
                lengths[a][t[a]] = fast_len(m, backend)
            out.append(lengths[a][t[a]])
        return tuple(out)

    def choices(a):
        ks = []
        for k in range(1, max_tiles_per_axis + 1):
            t = math.ceil(n[a] / k)
            if k > 1 and t < min_tile:
                break
            if not ks or t != ks[-1][1]:
                ks.append((k, t))
        return ks

    best = None       # (cost, tile, padded, n_tiles, bytes) among those that fit
    smallest = None   # (bytes, tile, padded, n_tiles) overall
    cz, cy, cx = choices(0), choices(1), choices(2)
    for _kz, tz in cz:
        for _ky, ty in cy:
            for _kx, tx in cx:
                tile = (tz, ty, tx)
                p = padded_for(tile)
                n_tiles = (math.ceil(n[0] / tz) * math.ceil(n[1] / ty) * math.ceil(n[2] / tx))
                est = estimate_bytes(n, tile, p, precision, backend.name)
                if budget_bytes is None:
                    return BlockPlan(tile, p, n_tiles, est, budget_bytes)  # no limit: one shot
                if smallest is None or est < smallest[0]:
                    smallest = (est, tile, p, n_tiles)
                if est <= budget_bytes:
                    pts = float(math.prod(p))
                    cost = n_tiles * pts * math.log2(max(pts, 2.0))
                    if best is None or cost < best[0]:
                        best = (cost, tile, p, n_tiles, est)
    if best is not None:
        return BlockPlan(best[1], best[2], best[3], best[4], budget_bytes)
    return BlockPlan(smallest[1], smallest[2], smallest[3], smallest[0], budget_bytes)


def available_memory_bytes(backend) -> int:
    """Free memory of the backend's device: MemAvailable on the host; free + pooled on a GPU."""
    if backend.name == "gpu":
        free, _total = backend.xp.cuda.Device().mem_info
        pool = backend.xp.get_default_memory_pool()
        return int(free + pool.free_bytes())
    from ..core.backend import host_available_memory_bytes

    return host_available_memory_bytes()


def default_budget_bytes(backend) -> int:
    """Default memory budget: 60 % of the host's available memory, 80 % of a GPU's free."""
    frac = 0.8 if backend.name == "gpu" else 0.6
    return int(frac * available_memory_bytes(backend))


# ------------------------------------------------------------------------------------------
# the convolution
# ------------------------------------------------------------------------------------------
def fft_convolve_same(data, kernel, backend, kernel_spectrum_cache=None, *,
                      precision: str = DEFAULT_PRECISION, workers: int | None = None,
                      strategy: str | None = None, memory_budget_bytes: int | None = None,
                      plan: BlockPlan | None = None, progress=None,
                      squared_kernel: bool = False):
    """Linear convolution of 3D ``data`` with an odd-shaped, centred ``kernel``, cropped to
    ``data``'s shape ('same'), by zero-padded real FFTs (never circular).

    ``precision`` 'float64' | 'float32' (see module docstring for the error);
    ``workers``: scipy.fft threads on the CPU (default: all cores);
    ``strategy``: 'pruned' (CPU default) or 'full' (GPU default);
    ``memory_budget_bytes``: run blockwise when the one-shot estimate exceeds it
    (None: no limit); ``progress(done, total)``: called after each tile;
    ``squared_kernel``: convolve with K^2 (voxel by voxel) instead, without building it.
    Returns an array of the working dtype on the data's backend.
    """
    xp = backend.xp
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    strategy = strategy or ("pruned" if backend.name == "cpu" else "full")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if data.ndim != 3 or np.ndim(kernel) != 3:
        raise ValueError("data and kernel must be 3D")
    if workers is None and backend.name == "cpu":
        workers = default_workers()
    rtype, _ = _dtypes(xp, precision)
    n = tuple(int(v) for v in data.shape)
    h, crop = crop_kernel(np.shape(kernel), n)
    if plan is None:
        plan = plan_blocks(n, h, backend, precision, memory_budget_bytes)
    padded = plan.padded
    spec = kernel_spectrum(kernel, padded, h, crop, backend, precision, kernel_spectrum_cache,
                           workers, strategy, squared=squared_kernel)
    if not plan.blockwise:
        x = xp.asarray(data, dtype=rtype)
        a = rfftn_padded(x, padded, backend, spec.dtype, workers, strategy)
        del x
        a *= spec
        out = irfftn_window(a, padded, h, n, backend, workers, strategy)
        if progress is not None:
            progress(1, 1)
        return xp.ascontiguousarray(out)

    out = xp.empty(n, dtype=rtype)
    t = plan.tile
    starts = [range(0, n[a], t[a]) for a in range(3)]
    total = plan.n_tiles
    done = 0
    for z0 in starts[0]:
        for y0 in starts[1]:
            for x0 in starts[2]:
                t0 = (z0, y0, x0)
                t1 = tuple(min(t0[a] + t[a], n[a]) for a in range(3))
                lo = tuple(max(0, t0[a] - h[a]) for a in range(3))
                hi = tuple(min(n[a], t1[a] + h[a]) for a in range(3))
                region = xp.asarray(data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=rtype)
                a_ = rfftn_padded(region, padded, backend, spec.dtype, workers, strategy)
                del region
                a_ *= spec
                start = tuple(t0[a] - lo[a] + h[a] for a in range(3))
                length = tuple(t1[a] - t0[a] for a in range(3))
                out[t0[0]:t1[0], t0[1]:t1[1], t0[2]:t1[2]] = irfftn_window(
                    a_, padded, start, length, backend, workers, strategy)
                del a_
                done += 1
                if progress is not None:
                    progress(done, total)
    return out
