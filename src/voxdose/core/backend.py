"""One code path for CPU and GPU: a tiny backend bundle (xp, fft, ndimage).

Functions take the backend from their input arrays (:func:`backend_of`) or, in the
pipeline, from its context (moved there once after assembly, the data stay on the device
until the writers call :func:`to_numpy`); the entry points take ``device=`` ("auto" |
"cpu" | "gpu": the one vocabulary) and resolve it with :func:`resolve_device` (through
:func:`get_backend` for array work).  No global mutable device, nothing printed at import.

One probe (:func:`gpu_available`) decides "auto" for every command (``run``, ``dose``,
``tia``, ``bench``): the GPU is used only when CuPy imports, a real allocation on the GPU
succeeds (importing CuPy without a driver works; allocating fails) **and** Numba's CUDA
target sees it (the TIA fit runs there), so a run never does half its work on each device.
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
        """Move ``a`` onto this backend from wherever it is (no copy when it is already
        there with that dtype; a device array given to the CPU backend is copied back)."""
        if self.name == "cpu" and is_device_array(a):
            a = to_numpy(a)
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        """Bring ``a`` back to host memory as a NumPy array."""
        return to_numpy(a)


class _LazyModule:
    """A module imported on first attribute access: ``scipy.ndimage`` costs ~0.1 s of
    start-up and most commands (``voxdose dose``) never call it (issue 18)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("__") or attr == "_name":  # copy/pickle probes, not the module's
            raise AttributeError(attr)
        import importlib

        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name}>"


@lru_cache(maxsize=1)
def cpu_backend() -> Backend:
    import scipy.fft

    return Backend("cpu", np, scipy.fft, _LazyModule("scipy.ndimage"))


@lru_cache(maxsize=1)
def _gpu_probe() -> tuple[bool, str]:
    """(available, reason). Tries a real allocation, not just the import."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        return False, (f"CuPy is not importable ({type(exc).__name__}); install "
                       "voxdose[gpu-cuda12] or voxdose[gpu-cuda13] (README)")
    try:
        import cupy

        x = cupy.arange(4, dtype=cupy.float32)
        float((x * 2).sum())
    except Exception as exc:
        return False, f"no usable CUDA GPU ({type(exc).__name__}: {str(exc)[:80]})"
    try:
        from numba import cuda

        numba_ok = bool(cuda.is_available())
    except Exception:  # a broken Numba CUDA install
        numba_ok = False
    if not numba_ok:
        return False, "CuPy finds a GPU but Numba's CUDA target does not (the TIA fit runs there)"
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


def resolve_device(device: str = "auto") -> str:
    """'cpu' or 'gpu' for ``device``: 'cpu' and 'gpu' as given (a 'gpu' that is not there
    fails where it is used), 'auto' by the one probe (:func:`gpu_available`; warns once
    when it falls back to the CPU)."""
    device = str(device).lower()
    if device not in DEVICES:
        raise InputError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    if device != "auto":
        return device
    ok, why = _gpu_probe()
    if ok:
        return "gpu"
    _warn_fallback_once(why)
    return "cpu"


def get_backend(device: str = "auto") -> Backend:
    """Backend for ``device``: 'cpu', 'gpu' (error if none) or 'auto' (GPU if usable)."""
    return gpu_backend() if resolve_device(device) == "gpu" else cpu_backend()


@lru_cache(maxsize=1)
def _warn_fallback_once(why: str) -> None:
    warnings.warn(f"device 'auto': {why}; running on the CPU", RuntimeWarning, stacklevel=3)


def is_device_array(a) -> bool:
    """True for an array in device memory: a CuPy array, or an array that names its own
    backend (``__voxdose_backend__``; the recording test backend's, tests/recording_backend.py)."""
    return type(a).__module__.startswith("cupy") or hasattr(type(a), "__voxdose_backend__")


def backend_of(*arrays) -> Backend:
    """The backend that owns these arrays (GPU if any is a device array)."""
    for a in arrays:
        if is_device_array(a):
            return getattr(a, "__voxdose_backend__", None) or gpu_backend()
    return cpu_backend()


def to_numpy(a) -> np.ndarray:
    """``a`` in host memory: a device array is copied back (the one device->host transfer
    of a result, at the writers); a host array is returned as it is."""
    if is_device_array(a):
        return a.get()
    return np.asarray(a)


def synchronize(backend: Backend) -> None:
    """Wait for the work queued on ``backend``'s device (timing; a no-op on the CPU)."""
    if backend.name == "gpu":
        backend.xp.cuda.Stream.null.synchronize()


def host_available_memory_bytes() -> int:
    """MemAvailable of the host (Linux), else the physical pages available, else 8 GiB."""
    import os

    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    try:  # pragma: no cover
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 * 1024**3
