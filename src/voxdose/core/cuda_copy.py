"""Compile one source file twice: the CPU copy is the normal import (``numba.njit``); this
helper executes a second copy of the same file with ``numba.cuda.jit(device=True)`` injected
as ``__voxdose_jit__``, so CPU and GPU share every formula (used by the kinetics fitter and
the Monte Carlo transport)."""

from __future__ import annotations

import importlib.util
from types import ModuleType


def device_copy(module: ModuleType, name: str) -> ModuleType:
    """A second instance of ``module`` whose ``@_jit`` functions are CUDA device functions."""
    from numba import cuda

    spec = importlib.util.spec_from_file_location(name, module.__file__)
    copy = importlib.util.module_from_spec(spec)
    copy.__voxdose_jit__ = cuda.jit(device=True)
    spec.loader.exec_module(copy)
    return copy
