"""One code path for CPU and GPU: a tiny backend bundle (xp, fft, ndimage).

Functions take the backend from their input arrays (:func:`backend_of`); only the
pipeline entry takes ``device=`` ("auto" | "cpu" | "gpu") and calls :func:`get_backend`.
No global mutable device, nothing printed at import.

"auto" uses the GPU only when CuPy imports **and** a real allocation on a GPU succeeds
(importing CuPy without a driver works; allocating fails).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np

from .errors import DeviceError, InputError

DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class Backend:
    """Array namespace, FFT module and ndimage module of one device."""

    name: str  # "cpu" or "gpu"
    xp: ModuleType
    fft: ModuleType
    ndimage: ModuleType

    def asarray(self, a, dtype=None):
        """Move ``a`` onto this backend (no copy when it is already there)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        """Bring ``a`` back to host memory as a NumPy array."""
        return to_numpy(a)


@lru_cache(maxsize=1)
def cpu_backend() -> Backend:
    import scipy.fft
    import scipy.ndimage

    return Backend("cpu", np, scipy.fft, scipy.ndimage)


@lru_cache(maxsize=1)
def _gpu_probe() -> tuple[bool, str]:
    """(available, reason). Tries a real allocation, not just the import."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return False, f"CuPy is not importable ({type(exc).__name__}); install voxdose[gpu]"
    try:
        import cupy

        x = cupy.arange(4, dtype=cupy.float32)
        float((x * 2).sum())
    except Exception as exc:
        return False, f"no usable CUDA GPU ({type(exc).__name__}: {str(exc)[:80]})"
    return True, "CUDA GPU available"


def gpu_available() -> bool:
    return _gpu_probe()[0]


@lru_cache(maxsize=1)
def gpu_backend() -> Backend:
    ok, why = _gpu_probe()
    if not ok:
        raise DeviceError(f"--device gpu was requested but {why}; use --device cpu or auto")
    import cupy
    import cupyx.scipy.fft
    import cupyx.scipy.ndimage

    return Backend("gpu", cupy, cupyx.scipy.fft, cupyx.scipy.ndimage)


def get_backend(device: str = "auto") -> Backend:
    """Backend for ``device``: 'cpu', 'gpu' (error if none) or 'auto' (GPU if usable)."""
    device = str(device).lower()
    if device not in DEVICES:
        raise InputError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return cpu_backend()
    if device == "gpu":
        return gpu_backend()
    ok, why = _gpu_probe()
    if ok:
        return gpu_backend()
    _warn_fallback_once(why)
    return cpu_backend()


@lru_cache(maxsize=1)
def _warn_fallback_once(why: str) -> None:
    warnings.warn(f"device 'auto': {why}; running on the CPU", RuntimeWarning, stacklevel=3)


def backend_of(*arrays) -> Backend:
    """The backend that owns these arrays (GPU if any is a CuPy array)."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            return gpu_backend()
    return cpu_backend()


def to_numpy(a) -> np.ndarray:
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)
