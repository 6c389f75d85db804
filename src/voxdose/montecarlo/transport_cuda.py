"""CUDA twin of the CPU Monte Carlo: the same :mod:`voxdose.montecarlo.transport` source
compiled as device functions.

A second copy of ``transport.py`` is executed with ``numba.cuda.jit(device=True)``
injected (:func:`voxdose.core.cuda_copy.device_copy`, as :mod:`voxdose.kinetics.cuda_fit`
does for the fitter), so the CPU (``numba.njit``) and GPU paths share every formula of the
electron and photon transport.  The tables reach the kernels as the same named tuples as
on the CPU (:class:`~voxdose.montecarlo.transport.ElectronArrays`,
:class:`~voxdose.montecarlo.transport.PhotonArrays`), their arrays copied to the device;
Numba flattens a tuple argument at the launch.
One CUDA thread is one independent stream: it owns a xorshift128+ state (the same
generator and seeding as the CPU batches, :func:`voxdose.montecarlo.core.rng_states`), runs
``n_per_thread`` histories and scores into its own tally row (no atomics).  So a GPU run
with ``n_threads`` streams is statistically the same as a CPU run with
``n_batches = n_threads``, and with the same seed it draws the same random numbers.  The
per-shell uncertainty is the standard error over the threads.

Under ``NUMBA_ENABLE_CUDASIM=1`` the kernels run in Numba's CUDA simulator on the CPU
(that is how CI tests them; it is slow: use tens of histories).  No GPU has been lent to
the sessions that wrote this, so it has not been timed on hardware.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import cuda  # a global: the simulator swaps it for its own module

from ..core.cuda_copy import device_copy
from . import transport

#: Depth of the per-thread delta-ray stack (thread-local memory); a delta ray that finds
#: it full is absorbed where it is produced (never happens in practice: depth <= ~5).
STACK_DEPTH = 32


@lru_cache(maxsize=1)
def _kernels():
    core = device_copy(transport, "voxdose.montecarlo._transport_cuda")
    electron_history = core.electron_history
    photon_history = core.photon_history
    depth = STACK_DEPTH

    @cuda.jit
    def electron_kernel(states, n_per_thread, edges_mm, tally, acc, beta_yield, beta_e,
                        beta_p, beta_cdf, line_e, line_cum, n_total, tab, pt):
        t = cuda.grid(1)
        if t >= states.shape[0]:
            return
        stack = cuda.local.array((depth, 7), np.float64)
        st = states[t]
        row = tally[t]
        a = acc[t]
        for _ in range(n_per_thread):
            electron_history(st, edges_mm, row, a, stack, beta_yield, beta_e, beta_p,
                             beta_cdf, line_e, line_cum, n_total, tab, pt)

    @cuda.jit
    def photon_kernel(states, n_per_thread, edges_mm, tally, acc, line_e, line_cum, n_total,
                      pt):
        t = cuda.grid(1)
        if t >= states.shape[0]:
            return
        st = states[t]
        row = tally[t]
        a = acc[t]
        for _ in range(n_per_thread):
            photon_history(st, edges_mm, row, a, line_e, line_cum, n_total, pt)

    return electron_kernel, photon_kernel


def _dev(a):
    return cuda.to_device(np.ascontiguousarray(a, dtype=np.float64))


def _launch(kernel, states, n_per_thread, edges_mm, args, threads_per_block, n_acc):
    n = states.shape[0]
    edges = np.ascontiguousarray(edges_mm, dtype=np.float64)
    d_tally = cuda.to_device(np.zeros((n, edges.size)))
    d_acc = cuda.to_device(np.zeros((n, n_acc)))
    d_states = cuda.to_device(np.ascontiguousarray(states, dtype=np.uint64))
    blocks = (n + threads_per_block - 1) // threads_per_block
    kernel[blocks, threads_per_block](d_states, int(n_per_thread), _dev(edges), d_tally,
                                      d_acc, *args)
    cuda.synchronize()
    return d_tally.copy_to_host(), d_acc.copy_to_host()


def _to_device(t):
    """A table structure (named tuple) with its arrays copied to the device."""
    if isinstance(t, tuple):
        fields = [_to_device(f) for f in t]
        return type(t)(*fields) if hasattr(t, "_fields") else tuple(fields)
    return _dev(t) if isinstance(t, np.ndarray) else float(t)


def run_electron_batches_cuda(states, n_per_thread, edges_mm, beta_yield, beta_e, beta_p,
                              beta_cdf, line_e, line_cum, n_total, tab, pt,
                              threads_per_block: int = 128):
    """GPU twin of :func:`voxdose.montecarlo.electron.run_electron_batches` (same arguments,
    ``tab, pt = table_args(tables)`` of :mod:`voxdose.montecarlo.electron`, and results:
    ``tally[n_streams, n_edges]`` MeV, ``acc[n_streams, 4]``: escaped MeV, steps, emitted
    MeV, bremsstrahlung photon MeV); one thread per row of ``states``."""
    kernel, _ = _kernels()
    args = [float(beta_yield), _dev(beta_e), _dev(beta_p), _dev(beta_cdf), _dev(line_e),
            _dev(line_cum), float(n_total), _to_device(tab), _to_device(pt)]
    return _launch(kernel, states, n_per_thread, edges_mm, args, threads_per_block, 4)


def run_photon_batches_cuda(states, n_per_thread, edges_mm, line_e, line_cum, n_total, pt,
                            threads_per_block: int = 128):
    """GPU twin of :func:`voxdose.montecarlo.photon.run_photon_batches` (``pt`` from
    :func:`voxdose.montecarlo.photon.table_args`; escaped MeV, interactions, emitted MeV in
    ``acc``)."""
    _, kernel = _kernels()
    args = [_dev(line_e), _dev(line_cum), float(n_total), _to_device(pt)]
    return _launch(kernel, states, n_per_thread, edges_mm, args, threads_per_block, 3)


def cuda_available() -> bool:
    """True when a CUDA device (or the simulator) is usable."""
    try:
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - driver problems
        return False
