"""CUDA twin of the CPU fitter: the same :mod:`lm_core` source compiled as device functions.

A second copy of ``lm_core.py`` is executed with ``numba.cuda.jit(device=True)`` injected,
so the CPU (``numba.njit``) and GPU paths share every formula. One thread fits one curve,
with scratch arrays in thread-local memory. Under ``NUMBA_ENABLE_CUDASIM=1`` the kernel runs
in Numba's CUDA simulator on the CPU (that is how CI tests it; it is slow, use few curves).
Inputs may be NumPy arrays (copied to the device) or CuPy arrays (used in place).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import cuda  # a global: the simulator swaps it for its own module

from ..core.cuda_copy import device_copy
from . import lm_core


@lru_cache(maxsize=1)
def _kernel():
    core = device_copy(lm_core, "voxdose.kinetics._lm_core_cuda")
    fit_curve = core.fit_curve
    MT, MP, NO = core.MAX_T, core.MAX_P, core.N_OUT
    MK, NTC = core.MAX_K, core.N_TCOL

    @cuda.jit
    def fit_kernel(t_h, Y, model, lam_phys, lift, poisson, background, noise_rel, tail_fitted,
                   out, params):
        v = cuda.grid(1)
        if v >= Y.shape[0]:
            return
        y = cuda.local.array(MT, np.float64)
        w = cuda.local.array(MT, np.float64)
        f = cuda.local.array(MT, np.float64)
        f2 = cuda.local.array(MT, np.float64)
        J = cuda.local.array((MT, MP), np.float64)
        A = cuda.local.array((MP, MP), np.float64)
        L = cuda.local.array((MP, MP), np.float64)
        g = cuda.local.array(MP, np.float64)
        d = cuda.local.array(MP, np.float64)
        pn = cuda.local.array(MP, np.float64)
        p = cuda.local.array(MP, np.float64)
        T = cuda.local.array((MK, NTC), np.float64)
        best = cuda.local.array(NO, np.float64)
        fit_curve(t_h, Y, v, Y.shape[1], model, lam_phys, lift, poisson, background, noise_rel,
                  tail_fitted, y, w, p, params[v], f, f2, J, A, L, g, d, pn, T, out[v], best)

    return fit_kernel


def fit_block_cuda(t_h, curves, model, lam_phys, lift, poisson, background, noise_rel,
                   tail_fitted, out, params, threads_per_block: int = 128) -> None:
    """Fit ``curves`` (N, T) on the GPU; results written into ``out`` (N, N_OUT) and
    ``params`` (N, MAX_P) (host or device arrays)."""
    from numba import cuda

    kernel = _kernel()
    n = curves.shape[0]
    if n == 0:
        return
    on_host = isinstance(out, np.ndarray)
    d_t = cuda.to_device(np.ascontiguousarray(t_h, dtype=np.float64))
    d_y = cuda.to_device(np.ascontiguousarray(curves)) if isinstance(curves, np.ndarray) \
        else curves
    d_out = cuda.to_device(out) if on_host else out
    d_par = cuda.to_device(params) if on_host else params
    blocks = (n + threads_per_block - 1) // threads_per_block
    kernel[blocks, threads_per_block](d_t, d_y, model, lam_phys, lift, poisson, background,
                                      noise_rel, tail_fitted, d_out, d_par)
    if on_host:
        d_out.copy_to_host(out)
        d_par.copy_to_host(params)
