"""A recording "gpu" backend for tests: NumPy underneath, arrays that behave like CuPy's.

What it proves without a GPU: where voxdose's heavy work runs when ``--device gpu`` is
asked for, and that the data stay on the device between stages.

* :class:`DeviceArray` wraps a NumPy array the way a CuPy array wraps device memory: it
  works with its backend's ``xp`` (and with NumPy functions, through ``__array_function__``,
  as CuPy does), but mixing it with a host (NumPy) array, or converting it to one
  implicitly (``np.asarray``), is recorded as an error: CuPy raises ``TypeError`` there.
  ``to_numpy`` (its ``get()``) and ``xp.asarray(host)`` are the explicit transfers; both are
  recorded with their size and stage.
* :func:`recording_backend` is a :class:`~voxdose.core.backend.Backend` named "gpu" whose
  ``xp``, ``fft`` and ``ndimage`` record every heavy call they run ("gpu"), and whose
  ``fit_block`` runs the CPU Numba driver on the array data but records the call as the
  device path (the CUDA fitter cannot run here; it is the same ``lm_core`` source, tested
  under Numba's CUDA simulator by ``tests/test_kinetics_fit.py``).
* :func:`record_host` patches ``scipy.fft``, ``scipy.ndimage``, the heavy NumPy functions
  and the CPU fit driver so that the same calls made on host arrays are recorded as "cpu".

"Heavy" is a fixed list on both sides (FFTs, ``scipy.ndimage`` functions, per-voxel fits
and the reductions/sorts/histograms of :data:`HEAVY_NUMPY`) and counts the voxels a call
processes (its largest array), from :attr:`Recorder.min_voxels` up; array *methods* and
operators on host arrays (``a.sum()``, ``a @ b``) cannot be patched and are not counted.
The stage a call belongs to comes from the pipeline's reporter (:class:`RecordingReporter`).
"""

from __future__ import annotations

import functools
import sys
import time
import types
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
import scipy.ndimage
from numpy.lib.mixins import NDArrayOperatorsMixin

from voxdose.core.backend import Backend

FFT_FUNCS = ("rfft", "irfft", "fft", "ifft", "rfftn", "irfftn", "fftn", "ifftn")
NDIMAGE_FUNCS = ("distance_transform_edt", "binary_dilation", "binary_erosion",
                 "binary_fill_holes", "gaussian_filter", "uniform_filter", "convolve",
                 "map_coordinates", "affine_transform", "zoom", "label", "sum_labels",
                 "mean", "median_filter", "labeled_comprehension")
HEAVY_NUMPY = ("argsort", "sort", "bincount", "histogram", "dot", "matmul", "einsum",
               "tensordot", "cumsum", "sum", "mean", "average", "nonzero", "argwhere",
               "unique", "isin")
#: NumPy's own functions, before any patch (the device side calls these).
_NP = {name: getattr(np, name) for name in dir(np)}
_FFT = {name: getattr(scipy.fft, name) for name in FFT_FUNCS}
_NDI = {name: getattr(scipy.ndimage, name) for name in NDIMAGE_FUNCS}


@dataclass
class Recorder:
    """What ran where: heavy calls, transfers and CuPy-incompatible uses, per stage."""

    min_voxels: int = 4096
    stage: str = "outside the pipeline"
    calls: list = field(default_factory=list)      # (stage, kind, op, voxels, where)
    host_sites: dict = field(default_factory=dict)  # (stage, kind, op, code) -> voxels
    transfers: list = field(default_factory=list)  # (stage, direction, nbytes)
    errors: list = field(default_factory=list)     # (stage, what, where in the code)

    def heavy(self, kind: str, op: str, voxels: int, where: str) -> None:
        if voxels >= self.min_voxels:
            self.calls.append((self.stage, kind, op, int(voxels), where))
            if where == "cpu":  # where in voxdose the host call was made
                key = (self.stage, kind, op, _caller())
                self.host_sites[key] = self.host_sites.get(key, 0) + int(voxels)

    def transfer(self, direction: str, nbytes: int) -> None:
        self.transfers.append((self.stage, direction, int(nbytes)))

    def error(self, what: str) -> None:
        self.errors.append((self.stage, what, _caller()))

    def voxels(self, where: str | None = None, stages=None, kind=None) -> int:
        return sum(c[3] for c in self.calls if (where is None or c[4] == where)
                   and (stages is None or c[0] in stages) and (kind is None or c[1] == kind))

    def share(self, where: str = "gpu", exclude=()) -> float:
        """The share of the heavy voxels (outside the ``exclude`` stages) run ``where``."""
        stages = {c[0] for c in self.calls} - set(exclude)
        total = self.voxels(stages=stages)
        return self.voxels(where, stages) / total if total else 1.0

    def by_stage(self) -> dict:
        """{stage: {kind: {where: voxels}}}."""
        out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        for stage, kind, _op, v, where in self.calls:
            out[stage][kind][where] += v
        return {s: {k: dict(w) for k, w in kinds.items()} for s, kinds in out.items()}

    def stages_on(self, where: str = "cpu", exclude=()) -> dict:
        """{stage: [(kind, op, voxels)]} of the heavy calls run ``where``."""
        out: dict = defaultdict(list)
        for stage, kind, op, v, w in self.calls:
            if w == where and stage not in exclude:
                out[stage].append((kind, op, v))
        return dict(out)

    def summary(self, exclude=()) -> str:
        lines = [f"heavy voxels on the gpu: {100 * self.share('gpu', exclude):.2f} %"]
        for stage, kinds in self.by_stage().items():
            lines.append(f"  {stage}: " + ", ".join(
                f"{k} gpu {w.get('gpu', 0):,} cpu {w.get('cpu', 0):,}" for k, w in kinds.items()))
        moved = defaultdict(int)
        for stage, d, n in self.transfers:
            moved[(stage, d)] += n
        lines += [f"  transfer {d} in {s}: {n / 1e6:.2f} MB" for (s, d), n in moved.items()]
        lines += [f"  CuPy would refuse in {s}: {w} at {c}" for s, w, c in self.errors]
        lines += [f"  on the host in {s}: {k} {op} {v:,} voxels at {c}"
                  for (s, k, op, c), v in self.host_sites.items() if s not in exclude]
        return "\n".join(lines)


def _caller() -> str:
    """file:line of the first frame outside this module and NumPy/SciPy."""
    f = sys._getframe(2)
    while f is not None:
        name = f.f_code.co_filename
        if not (name == __file__ or "/numpy/" in name or "/scipy/" in name
                or "functools" in name):
            return f"{name.rsplit('/src/', 1)[-1]}:{f.f_lineno} ({f.f_code.co_name})"
        f = f.f_back
    return "?"


# -- device arrays ------------------------------------------------------------------------

class DeviceArray(NDArrayOperatorsMixin):
    """A NumPy array "on the device" of one :func:`recording_backend`."""

    __slots__ = ("_a", "_be")
    __array_priority__ = 100

    def __init__(self, a: np.ndarray, be):
        self._a = a
        self._be = be

    # the hooks voxdose.core.backend reads: this array's backend, and its explicit copy
    @property
    def __voxdose_backend__(self):
        return self._be

    def get(self, *args, **kwargs) -> np.ndarray:
        self._be.recorder.transfer("device->host", self._a.nbytes)
        return self._a.copy()

    # CuPy refuses an implicit conversion (np.asarray, np.array, mixing with NumPy)
    def __array__(self, dtype=None, copy=None):
        self._be.recorder.error(f"implicit device->host conversion of {self._a.shape}")
        return self._a if dtype is None else self._a.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        be = self._be
        _check_mixing(be, inputs, f"np.{ufunc.__name__}")
        args = _unwrap(inputs)
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        res = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(res, be)

    def __array_function__(self, func, types_, args, kwargs):
        be = self._be
        _check_mixing(be, (args, kwargs), f"np.{func.__name__}")
        if func.__name__ in HEAVY_NUMPY:
            be.recorder.heavy("reduction", func.__name__, _largest(args), "gpu")
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)), be)

    def __getattr__(self, name):
        if name.startswith("__"):  # no __array_interface__ etc.: NumPy must call __array__
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr, self._be)
        be = self._be

        @functools.wraps(attr)
        def method(*args, **kwargs):
            _check_mixing(be, (args, kwargs), f"ndarray.{name}")
            if name in HEAVY_NUMPY:
                be.recorder.heavy("reduction", name, self._a.size, "gpu")
            return _wrap(attr(*_unwrap(args), **_unwrap(kwargs)), be)

        return method

    def __getitem__(self, key):
        return _wrap(self._a[_index(self._be, key)], self._be)

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and value.ndim:
            self._be.recorder.transfer("host->device", value.nbytes)
        self._a[_index(self._be, key)] = _unwrap(value)

    shape = property(lambda s: s._a.shape)
    dtype = property(lambda s: s._a.dtype)
    ndim = property(lambda s: s._a.ndim)
    size = property(lambda s: s._a.size)
    nbytes = property(lambda s: s._a.nbytes)
    T = property(lambda s: _wrap(s._a.T, s._be))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(x, self._be) for x in self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __index__(self):
        return self._a.__index__()

    def __repr__(self):
        return f"DeviceArray({self._a!r})"


def _wrap(x, be):
    if isinstance(x, np.ndarray):
        return DeviceArray(x, be)
    if isinstance(x, tuple):
        return tuple(_wrap(v, be) for v in x)
    if isinstance(x, list):
        return [_wrap(v, be) for v in x]
    return x


def _unwrap(x):
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, (tuple, list)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _hosts(x):
    """The host (NumPy, not 0-d) arrays in ``x`` (nested in tuples, lists and dicts)."""
    if isinstance(x, np.ndarray):
        return [x] if x.ndim else []
    if isinstance(x, (tuple, list)):
        return [h for v in x for h in _hosts(v)]
    if isinstance(x, dict):
        return [h for v in x.values() for h in _hosts(v)]
    return []


def _check_mixing(be, args, what: str) -> None:
    for h in _hosts(args):
        be.recorder.error(f"{what} given a host array {h.shape}")


def _index(be, key):
    """An index for the wrapped array: device indices unwrapped; host index arrays are
    copied to the device (as CuPy does)."""
    for h in _hosts(key):
        be.recorder.transfer("host->device", h.nbytes)
    return _unwrap(key)


def _largest(x) -> int:
    if isinstance(x, (DeviceArray, np.ndarray)):
        return int(x.size)
    if isinstance(x, (tuple, list)):
        return max((_largest(v) for v in x), default=0)
    if isinstance(x, dict):
        return max((_largest(v) for v in x.values()), default=0)
    return 0


# -- the backend's namespaces ---------------------------------------------------------------

_CONSTRUCTORS = ("asarray", "array", "asanyarray")


class _XP(types.ModuleType):
    """The recording backend's array namespace (NumPy's names, device arrays)."""

    def __init__(self, be):
        super().__init__("recording_xp")
        self._be = be
        self.ndarray = DeviceArray
        self.cuda = _FakeCuda()

    def get_default_memory_pool(self):
        return _FakePool()

    def __getattr__(self, name):
        obj = _NP[name] if name in _NP else getattr(np, name)
        if isinstance(obj, type) or not callable(obj):
            return obj
        be = self._be
        if name in _CONSTRUCTORS:
            return functools.partial(_to_device, be)

        @functools.wraps(obj)
        def fn(*args, **kwargs):
            _check_mixing(be, (args, kwargs), f"xp.{name}")
            if name in HEAVY_NUMPY:
                be.recorder.heavy("reduction", name, _largest(args), "gpu")
            return _wrap(obj(*_unwrap(args), **_unwrap(kwargs)), be)

        return fn


def _to_device(be, a, dtype=None, copy=None, **kwargs):
    """``xp.asarray``: no-op for an array already on the device (same dtype); a recorded
    host->device copy otherwise."""
    if isinstance(a, DeviceArray):
        if dtype is None or np.dtype(dtype) == a.dtype:
            return a
        return DeviceArray(a._a.astype(dtype), be)
    arr = np.array(a, dtype=dtype, copy=True, **kwargs)
    if arr.ndim:
        be.recorder.transfer("host->device", arr.nbytes)
    return DeviceArray(arr, be)


class _FakePool:
    def free_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        return None


class _FakeEvent:
    def record(self, stream=None) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        return None


class _FakeCuda:
    """``xp.cuda`` as far as voxdose uses it: free memory, synchronisation, events."""

    Event = _FakeEvent

    class Device:
        id = 0

        @property
        def mem_info(self):
            return 8 * 1024**3, 16 * 1024**3

    class Stream:
        class null:
            @staticmethod
            def synchronize():
                return None

    @staticmethod
    def get_elapsed_time(start: _FakeEvent, end: _FakeEvent) -> float:
        """ms between two recorded events."""
        return 1e3 * (end.t - start.t)


def _namespace(be, name: str, funcs: dict, kind: str, extra=()) -> types.ModuleType:
    """A module of ``funcs`` that take and return device arrays and record ``kind``."""
    mod = types.ModuleType(name)

    def make(op, f):
        @functools.wraps(f)
        def fn(*args, **kwargs):
            _check_mixing(be, (args, kwargs), f"{name}.{op}")
            inp = _unwrap(args)
            out = f(*inp, **_unwrap(kwargs))
            be.recorder.heavy(kind, op, max(_largest(inp), _largest(out)), "gpu")
            return _wrap(out, be)
        return fn

    for op, f in funcs.items():
        setattr(mod, op, make(op, f))
    for op in extra:
        setattr(mod, op, getattr(scipy.fft, op))
    return mod


@dataclass(frozen=True)
class RecordingBackend(Backend):
    """A :class:`Backend` named "gpu" with a recorder and a per-curve fit driver."""

    recorder: Recorder = None

    def fit_block(self, t_h, curves, *args):
        """The device fit driver's signature (``kinetics.cuda_fit.fit_block_cuda``): the
        CPU Numba driver runs on the arrays' data; recorded as the device path."""
        import numba

        from voxdose.kinetics.lm_core import fit_block_cpu

        out, params = args[-2], args[-1]
        if not all(isinstance(a, DeviceArray) for a in (curves, out, params)):
            self.recorder.error("fit driver given host arrays")
        self.recorder.heavy("fit", "fit_block", curves.shape[0], "gpu")
        fit_block_cpu(np.asarray(_unwrap(t_h)), _unwrap(curves), *args[:-2], _unwrap(out),
                      _unwrap(params), numba.get_num_threads())


def recording_backend(recorder: Recorder | None = None) -> RecordingBackend:
    rec = recorder or Recorder()
    be = RecordingBackend("gpu", None, None, None, rec)
    object.__setattr__(be, "xp", _XP(be))
    object.__setattr__(be, "fft", _namespace(be, "recording_fft", _FFT, "fft",
                                             extra=("next_fast_len",)))
    object.__setattr__(be, "ndimage", _namespace(be, "recording_ndimage", _NDI, "ndimage"))
    return be


# -- the host side ------------------------------------------------------------------------

@contextmanager
def record_host(recorder: Recorder):
    """Record the heavy calls made on host arrays (SciPy FFTs and ndimage, the heavy NumPy
    functions, the CPU fit driver) as "cpu"; everything restored afterwards."""
    import voxdose.kinetics.fit as fit_mod

    saved = []

    def patch(obj, name, new):
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, new)

    def host(kind, op, f):
        @functools.wraps(f)
        def fn(*args, **kwargs):
            if not any(isinstance(a, DeviceArray) for a in args):
                recorder.heavy(kind, op, _largest((args, kwargs)), "cpu")
            return f(*args, **kwargs)
        return fn

    for op, f in _FFT.items():
        patch(scipy.fft, op, host("fft", op, f))
    for op, f in _NDI.items():
        patch(scipy.ndimage, op, host("ndimage", op, f))
    for op in HEAVY_NUMPY:
        patch(np, op, host("reduction", op, _NP[op]))
    cpu_fit = fit_mod._fit_block_cpu

    def fit_cpu(t_h, curves, *args):
        recorder.heavy("fit", "fit_block_cpu", curves.shape[0], "cpu")
        return cpu_fit(t_h, curves, *args)

    patch(fit_mod, "_fit_block_cpu", fit_cpu)
    try:
        yield recorder
    finally:
        for obj, name, old in reversed(saved):
            setattr(obj, name, old)


class RecordingReporter:
    """A pipeline reporter that tells the recorder which stage is running."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    @contextmanager
    def stage(self, name: str, total: int = 1):
        before = self.recorder.stage
        self.recorder.stage = name
        try:
            yield lambda done=None, tot=None: None
        finally:
            self.recorder.stage = before
