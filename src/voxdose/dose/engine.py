"""Dose engines: TIA map (decays per voxel) -> absorbed-dose map (Gy).

MIRD voxel formalism: the mean absorbed dose in target voxel x is

    D(x) = sum_y  A~(y) * S(x <- y)                                   [Gy]

with A~(y) the time-integrated activity (number of decays) in source voxel y and
S(x <- y) the voxel S-value (Gy per decay). Every engine shares one driver
(:meth:`DoseEngine.dose`) and differs only in :meth:`DoseEngine._deposit`:

* :class:`KernelConvolution`: S depends only on x - y in a homogeneous medium, so D is a
  3D convolution, done as a zero-padded *linear* FFT convolution (never circular; see
  :mod:`voxdose.dose.convolution` for padding, precision and blockwise evaluation);
* :class:`DensityBinnedConvolution` (density mode ``mvs``): S = S_{b(x)}(x - y), the kernel
  of the target voxel's density bin b(x) (see :mod:`voxdose.dose.density`);
* :class:`LocalDeposition`: S(x <- y) = delta_xy * E_local / m_voxel: the non-penetrating
  energy of each decay is absorbed in its own voxel.

The driver also applies the density mode ``scale`` (D * rho_water / rho(x)) for any engine,
and records the method, density mode, precision, memory plan and the energy per decay the
engine leaves out (``neglected_energy_fraction``) in the image's ``meta`` (so in every dose
sidecar).  Defaults (kernel radius, precision, local cut) are the project's one set,
docs/defaults.md.

Every engine is linear in A~ (tested); fed an activity map A(t) in Bq per voxel instead of
A~, the same engines give the dose *rate* in Gy/s (:mod:`voxdose.dose.rate`).
Arrays may be NumPy or CuPy: the backend is taken from the input (one code path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.backend import Backend, backend_of
from ..core.errors import InputError
from ..core.grid import Image
from ..core.nuclide import Nuclide, load_nuclide
from ..core.units import MEV_PER_G_TO_GY
from ..kernels.point import LOCAL_CUTOFF_MEV
from .convolution import (
    DEFAULT_PRECISION,
    PRECISIONS,
    SpectrumCache,
    crop_kernel,
    default_budget_bytes,
    fft_convolve_same,
    plan_blocks,
)
from .density import (
    DEFAULT_MVS_EDGES,
    RHO_WATER_G_CM3,
    DensityBin,
    bin_index,
    check_density,
    check_density_mode,
    mvs_bins,
)

__all__ = [
    "DensityBin",
    "DensityBinnedConvolution",
    "DoseEngine",
    "KernelConvolution",
    "LocalDeposition",
    "fft_convolve_same",
    "make_engine",
]


class DoseEngine:
    """Shared driver. Subclasses implement ``_deposit(values, grid, backend, rho) -> array``.

    ``density_mode``: 'none' (water) or 'scale' (D * rho_water / rho(x)) for every engine;
    'mvs' only for :class:`DensityBinnedConvolution`.
    """

    method = "abstract"
    density_mode = "none"
    supported_density_modes = ("none", "scale")

    def dose(self, tia: Image, backend: Backend | None = None, density: Image | None = None,
             *, progress=None) -> Image:
        """Absorbed dose (Gy) from a TIA image in decays per voxel (Bq*s).

        ``density``: mass density image (g/cm^3) on the TIA grid, needed by the density
        modes 'scale' and 'mvs'; ``progress(done, total)``: called as blocks finish.
        """
        return self.apply(tia, backend, density, progress=progress)

    def apply(self, values: Image, backend: Backend | None = None, density: Image | None = None,
              *, quantity: str = "absorbed dose", unit: str = "Gy", progress=None) -> Image:
        """Apply the (linear) engine to any per-voxel decay quantity: decays -> Gy,
        activity in Bq -> Gy/s."""
        mode = check_density_mode(self.density_mode)
        if mode not in self.supported_density_modes:
            raise InputError(f"{type(self).__name__} does not support density mode '{mode}'; "
                             f"use one of {', '.join(self.supported_density_modes)}")
        be = backend or backend_of(values.data)
        rho = None
        if mode != "none":
            if density is None:
                raise InputError(f"density mode '{mode}' needs a density (CT) image on the "
                                 "TIA grid; give --ct or use --density-mode none")
            check_density(density, values.grid)
            rho = be.asarray(density.data, dtype=be.xp.float64)
        data = be.asarray(values.data, dtype=self._input_dtype(values.data, be))
        self._progress = progress
        out = self._deposit(data, values.grid, be, rho)
        if mode == "scale":
            out = out * (RHO_WATER_G_CM3 / rho)
        meta = {"dose_method": self.method, "density_mode": mode,
                "neglected_energy_fraction": self.neglected_energy_fraction(),
                **self.provenance()}
        return Image(out, values.grid, quantity, unit, meta)

    def neglected_energy_fraction(self) -> float | None:
        """The share of the energy emitted per decay this engine deposits nowhere."""
        return None

    def _input_dtype(self, data, backend):
        """The type the input is computed in: float64 (exact for any input type)."""
        return backend.xp.float64

    def _deposit(self, values, grid, backend, rho):  # pragma: no cover - abstract
        raise NotImplementedError

    def provenance(self) -> dict:
        return {}


def _check_spacing(kernel, grid) -> None:
    ks = np.asarray(kernel.spacing_mm, dtype=float)
    if not np.allclose(ks, grid.spacing_mm, atol=1e-3):
        raise ValueError(f"kernel voxel size {ks} mm differs from the TIA grid's "
                         f"{grid.spacing_mm} mm; build a kernel for this grid")


@dataclass(eq=False)
class _Convolver:
    """Convolution settings and the kernel-spectrum cache of one kernel."""

    precision: str = DEFAULT_PRECISION
    memory_budget_gb: float | None = None
    workers: int | None = None
    strategy: str | None = None
    _plans: list = field(default_factory=list, repr=False)

    def convolve(self, data, kernel_data, backend, cache, progress=None):
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; "
                             f"got '{self.precision}'")
        budget = (default_budget_bytes(backend) if self.memory_budget_gb is None
                  else int(float(self.memory_budget_gb) * 1e9))
        h, _ = crop_kernel(kernel_data.shape, data.shape)
        plan = plan_blocks(data.shape, h, backend, self.precision, budget)
        self._plans.append(plan)
        out = fft_convolve_same(data, kernel_data, backend, cache, precision=self.precision,
                                workers=self.workers, strategy=self.strategy, plan=plan,
                                progress=progress)
        # FFT round-off leaves tiny negatives far from activity; dose is non-negative
        xp = backend.xp
        out = xp.maximum(out, 0.0, out=out)  # ``out`` is this call's own array
        return out.astype(xp.float64, copy=False)

    def input_dtype(self, data, backend):
        """float32 input stays float32 when the FFT runs in float32 (it would be converted
        to float64 and back, exactly); anything else is taken in float64."""
        xp = backend.xp
        if self.precision == "float32" and getattr(data, "dtype", None) == xp.float32:
            return xp.float32
        return xp.float64

    def settings(self) -> dict:
        last = self._plans[-1].to_dict() if self._plans else None
        return {"precision": self.precision, "fft": "zero-padded linear real FFT "
                "(pruned, period >= N + kernel half-width)", "memory_plan": last}


@dataclass(eq=False)
class KernelConvolution(DoseEngine):
    """D = A~ (*) S: convolution with a voxel S-value kernel (Gy per decay) in water.

    The kernel's voxel size must equal the TIA grid's (checked to 1 um).  ``precision``
    'float64' (default, :data:`~voxdose.dose.convolution.DEFAULT_PRECISION`) or 'float32';
    ``memory_budget_gb`` (None: 60 % of the available host memory, 80 % of a GPU's free
    memory) switches to blockwise convolution when the one-shot problem would not fit;
    ``workers``: scipy.fft threads (None: all cores).  ``density_mode`` 'none' or 'scale'.
    ``extent``: how the kernel's radius was chosen
    (:meth:`~voxdose.kernels.extent.KernelExtent.to_dict`), recorded in provenance.
    """

    kernel: object  # voxdose.kernels.voxel.VoxelKernel
    precision: str = DEFAULT_PRECISION
    memory_budget_gb: float | None = None
    workers: int | None = None
    density_mode: str = "none"
    strategy: str | None = None
    method: str = "kernel"
    extent: dict | None = None
    # not a constructor argument: a copy made by dataclasses.replace (another kernel,
    # perhaps) starts with a cache of its own; the cache is keyed per kernel by owning it
    _spectra: SpectrumCache = field(default_factory=SpectrumCache, repr=False, init=False)
    _conv: _Convolver | None = field(default=None, repr=False, init=False)

    def _convolver(self) -> _Convolver:
        if self._conv is None:
            self._conv = _Convolver(self.precision, self.memory_budget_gb, self.workers,
                                    self.strategy)
        return self._conv

    def _input_dtype(self, data, backend):
        return self._convolver().input_dtype(data, backend)

    def _deposit(self, tia_decays, grid, backend, rho):
        _check_spacing(self.kernel, grid)
        return self._convolver().convolve(tia_decays, self.kernel.data_gy_per_decay, backend,
                                          self._spectra, getattr(self, "_progress", None))

    def neglected_energy_fraction(self) -> float | None:
        value = getattr(self.kernel, "neglected_energy_fraction", None)
        return None if value is None else float(value)

    def provenance(self) -> dict:
        return {"kernel": self.kernel.provenance(), "kernel_extent": self.extent,
                "convolution": self._convolver().settings()}


@dataclass(eq=False)
class DensityBinnedConvolution(DoseEngine):
    """Density mode ``mvs``: D(x) = sum_y A~(y) S_{b(x)}(x - y).

    One range-scaled kernel per density bin (:class:`~voxdose.dose.density.DensityBin`);
    the TIA map is convolved with each, and every target voxel keeps the result of its own
    bin (chosen from the density image given to :meth:`dose`, by the bins' edges).  Build
    it with :meth:`for_density`.
    """

    bins: tuple  # of DensityBin
    kernels: tuple  # of VoxelKernel, one per bin
    precision: str = DEFAULT_PRECISION
    memory_budget_gb: float | None = None
    workers: int | None = None
    strategy: str | None = None
    method: str = "kernel"
    density_mode: str = "mvs"
    extents: tuple | None = None  # KernelExtent.to_dict() per bin
    kernel_source: str = "tissue tables"
    supported_density_modes = ("mvs",)
    _spectra: list = field(default_factory=list, repr=False)
    _conv: _Convolver | None = field(default=None, repr=False)

    def __post_init__(self):
        if len(self.bins) != len(self.kernels) or not self.bins:
            raise InputError("mvs needs one kernel per density bin (and at least one bin)")
        self._spectra = [SpectrumCache(max_entries=1) for _ in self.kernels]
        self._conv = _Convolver(self.precision, self.memory_budget_gb, self.workers,
                                self.strategy)

    @classmethod
    def for_density(cls, nuclide: Nuclide | str, spacing_mm_zyx, density, *,
                    edges=DEFAULT_MVS_EDGES, radius_mm: float | None = None,
                    point_kernel=None, kernel_cache: bool = False, **settings):
        """Build bins from a density map (Image or array, g/cm^3) and one kernel per bin:
        the kernel of a homogeneous medium of the bin's density.  By default that is the
        Monte Carlo table of the tissue the density stands for (lung < 0.6 g/cm^3, soft
        tissue < 1.15, cortical bone above: composition included), range-scaled from the
        table's density to the bin's; with ``point_kernel`` (a water kernel, e.g. the
        study's DPK table) it is that kernel range-scaled.  ``radius_mm`` None: each bin's
        kernel takes the one radius rule (:func:`voxdose.kernels.extent.kernel_extent`, on
        the density map's grid); ``kernel_cache``: keep the bin kernels on disk."""
        from ..kernels.extent import kernel_extent
        from ..kernels.point import point_kernel_for_tissue_density

        nuc = load_nuclide(nuclide) if isinstance(nuclide, str) else nuclide
        rho = density.data if isinstance(density, Image) else density
        bins = mvs_bins(rho, edges)

        def at(r):
            if point_kernel is None:
                return point_kernel_for_tissue_density(nuc, r)
            return point_kernel if r == 1.0 else point_kernel.range_scaled(r)

        kernels, extents = [], []
        for b in bins:
            pk = at(b.density_g_cm3)
            ext = kernel_extent(pk, spacing_mm_zyx, tuple(rho.shape), radius_mm)
            kernels.append(_build_kernel(pk, spacing_mm_zyx, ext.radius_mm, kernel_cache))
            extents.append(ext.to_dict())
        source = "tissue tables" if point_kernel is None else "the given point kernel"
        return cls(tuple(bins), tuple(kernels), extents=tuple(extents), kernel_source=source,
                   **settings)

    def _input_dtype(self, data, backend):
        return self._conv.input_dtype(data, backend)

    def _deposit(self, tia_decays, grid, backend, rho):
        xp = backend.xp
        idx = bin_index(rho, list(self.bins), xp)
        out = xp.zeros(tia_decays.shape, dtype=xp.float64)
        for i, (k, cache) in enumerate(zip(self.kernels, self._spectra)):
            sel = idx == i
            if not bool(sel.any()):
                continue
            _check_spacing(k, grid)
            d = self._conv.convolve(tia_decays, k.data_gy_per_decay, backend, cache)
            out = xp.where(sel, d, out)
            del d
        return out

    def neglected_energy_fraction(self) -> float | None:
        """The largest of the bins' kernels (each of its own medium)."""
        values = [getattr(k, "neglected_energy_fraction", None) for k in self.kernels]
        return None if None in values else float(max(values))

    def provenance(self) -> dict:
        kernel = ("the tissue table (lung/soft tissue/bone)" if self.kernel_source ==
                  "tissue tables" else "the given (water) point kernel")
        return {"mvs_bins": [b.to_dict() for b in self.bins],
                "mvs_bin_rule": "target voxel takes the kernel of its own density bin; bin "
                                "density = mean of its voxels denser than 0.1 g/cm3; "
                                f"kernel = {kernel} range-scaled to the bin density",
                "kernels": [k.provenance() for k in self.kernels],
                "kernel_extents": None if self.extents is None else list(self.extents),
                "convolution": self._conv.settings()}


@dataclass(eq=False)
class LocalDeposition(DoseEngine):
    """Local energy deposition: D(x) = A~(x) * E_local / (rho * V_voxel).

    E_local = all electron energy per decay (beta, conversion and Auger electrons, ICRP-107)
    plus photons below ``photon_cut_mev`` (default the one local-deposition cut,
    :data:`voxdose.kernels.point.LOCAL_CUTOFF_MEV` = 10 keV); the other photons are ignored
    (their energy leaves the voxel: ``neglected_energy_fraction``).
    Density is water (1 g/cm^3) unless given: a scalar ``density_g_cm3``, or per voxel with
    ``density_mode='scale'`` and a density image (then rho = rho(x)).
    """

    nuclide: Nuclide
    density_g_cm3: float = 1.0
    photon_cut_mev: float = LOCAL_CUTOFF_MEV
    density_mode: str = "none"
    method: str = "ldm"

    @property
    def local_energy_mev(self) -> float:
        n = self.nuclide
        soft = n.photon_lines_mev < self.photon_cut_mev
        return n.electron_energy_per_decay_mev + float(
            np.sum(n.photon_lines_mev[soft] * n.photon_yields[soft]))

    def _deposit(self, tia_decays, grid, backend, rho):
        mass_g = self.density_g_cm3 * grid.voxel_volume_ml
        return tia_decays * (self.local_energy_mev * MEV_PER_G_TO_GY / mass_g)

    def neglected_energy_fraction(self) -> float:
        n = self.nuclide
        total = n.electron_energy_per_decay_mev + n.photon_energy_per_decay_mev
        return float(1.0 - self.local_energy_mev / total) if total > 0 else 0.0

    def provenance(self) -> dict:
        return {"nuclide": self.nuclide.name, "local_energy_mev_per_decay": self.local_energy_mev,
                "density_g_cm3": self.density_g_cm3,
                "photon_cut_mev": self.photon_cut_mev}


def _build_kernel(pk, spacing_mm_zyx, radius_mm: float, cached: bool):
    """The voxel kernel of ``pk``: from the on-disk cache (``exact_spacing``: the same kernel
    as building it) or built."""
    if cached:
        from ..kernels.cache import voxel_kernel_cached

        return voxel_kernel_cached(pk, spacing_mm_zyx, radius_mm=radius_mm, exact_spacing=True)
    from ..kernels.voxel import voxel_kernel

    return voxel_kernel(pk, spacing_mm_zyx, radius_mm=radius_mm)


def make_engine(nuclide: Nuclide | str, spacing_mm_zyx, *, method: str = "kernel",
                density_mode: str = "none", density: Image | None = None,
                radius_mm: float | None = None, grid_shape=None, kernel=None,
                extent: dict | None = None, point_kernel=None, kernel_cache: bool = False,
                **settings) -> DoseEngine:
    """The engine for a method ('kernel' | 'ldm') and density mode ('none' | 'scale' | 'mvs').

    ``radius_mm``: the kernel radius; None: the one rule of every entry point
    (:func:`voxdose.kernels.extent.kernel_extent`, capped on ``grid_shape``, the TIA grid's
    shape, when given; in 'mvs' on the density image's);
    ``kernel``: a prebuilt water :class:`~voxdose.kernels.voxel.VoxelKernel` (else built;
    not for 'mvs', which builds one kernel per density bin from ``point_kernel``), with
    ``extent``, how its radius was chosen (recorded in provenance);
    ``point_kernel``: the water point kernel to build from (e.g. a user's DPK table read with
    :func:`~voxdose.kernels.point.read_dpk_csv`; default the project's best: the water table,
    or in 'mvs' each bin's tissue table);
    ``kernel_cache``: keep the built kernels on disk and reuse them
    (:func:`~voxdose.kernels.cache.voxel_kernel_cached` with ``exact_spacing``: the same
    kernel as building it);
    ``settings``: precision, memory_budget_gb, workers (convolution engines only).
    For 'ldm', 'mvs' means the same as 'scale' (each voxel's own mass); the engine records
    'scale'.
    """
    nuc = load_nuclide(nuclide) if isinstance(nuclide, str) else nuclide
    mode = check_density_mode(density_mode)
    method = str(method).lower()
    if method == "ldm":
        return LocalDeposition(nuc, density_mode="scale" if mode == "mvs" else mode)
    if method != "kernel":
        raise InputError(f"unknown dose method '{method}'; choose kernel or ldm")
    if mode == "mvs":
        if density is None:
            raise InputError("density mode 'mvs' needs a density (CT) image on the TIA grid")
        if kernel is not None:
            raise InputError("density mode 'mvs' builds one kernel per density bin: give the "
                             "point kernel (point_kernel=), not a water voxel kernel")
        return DensityBinnedConvolution.for_density(
            nuc, spacing_mm_zyx, density, radius_mm=radius_mm, point_kernel=point_kernel,
            kernel_cache=kernel_cache, **settings)
    if kernel is None:
        from ..kernels.extent import kernel_extent
        from ..kernels.point import load_point_kernel

        pk = point_kernel if point_kernel is not None else load_point_kernel(nuc)
        ext = kernel_extent(pk, spacing_mm_zyx, grid_shape, radius_mm)
        extent = ext.to_dict()
        kernel = _build_kernel(pk, spacing_mm_zyx, ext.radius_mm, kernel_cache)
    return KernelConvolution(kernel, density_mode=mode, extent=extent, **settings)
