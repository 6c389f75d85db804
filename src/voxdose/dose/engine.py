"""Dose engines: TIA map (decays per voxel) -> absorbed-dose map (Gy).

MIRD voxel formalism: the mean absorbed dose in target voxel x is

    D(x) = sum_y  A~(y) * S(x <- y)                                   [Gy]

with A~(y) the time-integrated activity (number of decays) in source voxel y and
S(x <- y) the voxel S-value (Gy per decay). Every engine shares one driver
(:meth:`DoseEngine.dose`) and differs only in :meth:`DoseEngine._deposit`:

* :class:`KernelConvolution`: S depends only on x - y in a homogeneous medium, so D is a
  3D convolution, done as a zero-padded *linear* FFT convolution (never circular);
* :class:`LocalDeposition`: S(x <- y) = delta_xy * E_local / m_voxel: the non-penetrating
  energy of each decay is absorbed in its own voxel.

Every engine is linear in A~ (tested). Arrays may be NumPy or CuPy: the backend is taken
from the input (one code path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backend import Backend, backend_of
from ..grid import Image
from ..nuclide import Nuclide
from ..units import MEV_PER_G_TO_GY


class DoseEngine:
    """Shared driver. Subclasses implement ``_deposit(tia_decays, grid, backend) -> Gy``."""

    method = "abstract"

    def dose(self, tia: Image, backend: Backend | None = None) -> Image:
        """Absorbed dose (Gy) from a TIA image in decays per voxel (Bq*s)."""
        be = backend or backend_of(tia.data)
        data = be.asarray(tia.data, dtype=be.xp.float64)
        dose = self._deposit(data, tia.grid, be)
        return Image(dose, tia.grid, "absorbed dose", "Gy",
                     {"dose_method": self.method, **self.provenance()})

    def _deposit(self, tia_decays, grid, backend):  # pragma: no cover - abstract
        raise NotImplementedError

    def provenance(self) -> dict:
        return {}


def _fast_shape(shape, backend: Backend):
    return tuple(backend.fft.next_fast_len(int(n), real=True) if backend.name == "cpu"
                 else _next_smooth(int(n)) for n in shape)


def _next_smooth(n: int) -> int:
    """Smallest 2^a 3^b 5^c 7^d >= n (cuFFT-friendly sizes)."""
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def fft_convolve_same(data, kernel, backend: Backend, kernel_spectrum_cache: dict | None = None):
    """Linear convolution of ``data`` with an odd-shaped, centred ``kernel``, cropped to
    ``data``'s shape ('same'). Zero padding to at least N + K - 1 per axis removes the
    circular wrap-around of the discrete Fourier transform.
    """
    xp, fft = backend.xp, backend.fft
    n = data.shape
    k = kernel.shape
    if any(s % 2 == 0 for s in k):
        raise ValueError(f"kernel shape must be odd on every axis, got {k}")
    padded = _fast_shape([a + b - 1 for a, b in zip(n, k)], backend)
    key = (backend.name, padded)
    spec = kernel_spectrum_cache.get(key) if kernel_spectrum_cache is not None else None
    if spec is None:
        spec = fft.rfftn(xp.asarray(kernel, dtype=xp.float64), s=padded, axes=(0, 1, 2))
        if kernel_spectrum_cache is not None:
            kernel_spectrum_cache[key] = spec
    full = fft.irfftn(fft.rfftn(data, s=padded, axes=(0, 1, 2)) * spec, s=padded,
                      axes=(0, 1, 2))
    h = [s // 2 for s in k]
    return full[h[0]:h[0] + n[0], h[1]:h[1] + n[1], h[2]:h[2] + n[2]]


@dataclass(eq=False)
class KernelConvolution(DoseEngine):
    """D = A~ (*) S: convolution with a voxel S-value kernel (Gy per decay) in water.

    The kernel's voxel size must equal the TIA grid's (checked to 1 um).
    """

    kernel: object  # voxdose.dose.voxel_kernel.VoxelKernel
    method: str = "kernel"
    _spectra: dict = field(default_factory=dict, repr=False)

    def _deposit(self, tia_decays, grid, backend):
        ks = np.asarray(self.kernel.spacing_mm, dtype=float)
        if not np.allclose(ks, grid.spacing_mm, atol=1e-3):
            raise ValueError(f"kernel voxel size {ks} mm differs from the TIA grid's "
                             f"{grid.spacing_mm} mm; build a kernel for this grid")
        out = fft_convolve_same(tia_decays, self.kernel.data_gy_per_decay, backend, self._spectra)
        # FFT round-off can leave tiny negatives far from activity; dose is non-negative
        return backend.xp.maximum(out, 0.0)

    def provenance(self) -> dict:
        return {"kernel": self.kernel.provenance()}


@dataclass(eq=False)
class LocalDeposition(DoseEngine):
    """Local energy deposition: D(x) = A~(x) * E_local / (rho * V_voxel).

    E_local = all electron energy per decay (beta, conversion and Auger electrons, ICRP-107)
    plus photons below 10 keV; penetrating photons are ignored (their energy leaves the voxel).
    Density is water (1 g/cm^3) unless given.
    """

    nuclide: Nuclide
    density_g_cm3: float = 1.0
    photon_cut_mev: float = 0.010
    method: str = "ldm"

    @property
    def local_energy_mev(self) -> float:
        n = self.nuclide
        soft = n.photon_lines_mev < self.photon_cut_mev
        return n.electron_energy_per_decay_mev + float(
            np.sum(n.photon_lines_mev[soft] * n.photon_yields[soft]))

    def _deposit(self, tia_decays, grid, backend):
        mass_g = self.density_g_cm3 * grid.voxel_volume_ml
        return tia_decays * (self.local_energy_mev * MEV_PER_G_TO_GY / mass_g)

    def provenance(self) -> dict:
        return {"nuclide": self.nuclide.name, "local_energy_mev_per_decay": self.local_energy_mev,
                "density_g_cm3": self.density_g_cm3,
                "photon_cut_mev": self.photon_cut_mev}
