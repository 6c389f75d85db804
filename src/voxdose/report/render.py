"""Where a run's figures are drawn: in a helper process, while the pipeline goes on.

Drawing a figure is Python-bound matplotlib work (the demo's six figures: ~6 s of one
core), and the pipeline's computing stages leave the second core of a small machine
mostly idle. So a CPU run draws its figures in a helper process (one per process,
started by the first run that needs it and kept for the next), a fresh interpreter
(``python -P -c`` running :func:`serve`: never a fork of a process that runs threads, and
never a re-run of the caller's script, as multiprocessing's ``spawn`` would do for a
script without a ``__main__`` guard). A figure whose data are final is submitted as soon
as they are (:meth:`FigureRenderer.submit`, pickled through the helper's stdin by a sender
thread), drawn into the helper's own temporary folder and sent back as bytes; the results
writer writes those bytes where and when the figure belongs (:meth:`FigureRenderer.draw`),
so the results folder, the order of ``provenance.json``'s outputs and the pixels are what
drawing in the process gives (test).

Drawn in the process instead: runs on a GPU (their arrays may live on the device), a
process with one core, the studies of a cohort (its workers already use every core), a
frozen application, :data:`SERIAL_ENV` set to 1, and every figure whose helper failed or
ended for any reason (drawn again here, so that a real error in a figure is raised here,
with its own traceback).
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future, TimeoutError
from pathlib import Path

from ..io.atomic import atomic_path

#: Set to 1 to draw every figure in the pipeline's own process.
SERIAL_ENV = "VOXDOSE_SERIAL_FIGURES"
#: Seconds a figure may take in the helper before the helper is stopped (the demo's
#: slowest takes ~2 s).
DRAW_TIMEOUT_S = 300.0
_HEADER = struct.Struct("<Q")


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive_bytes(stream) -> bytes:
    """The next message's bytes, or EOFError at the end of the stream."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    (n,) = _HEADER.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return data


def _receive(stream):
    """The next message, or EOFError at the end of the stream."""
    return pickle.loads(_receive_bytes(stream))


def _job_message(job: int, basename: str, plot_fn, args: tuple, kwargs: dict) -> tuple:
    """What the helper is sent: the job id and the job pickled on its own, so that a job
    the helper cannot unpickle still has an id to answer."""
    return job, pickle.dumps((basename, plot_fn, args, kwargs),
                             protocol=pickle.HIGHEST_PROTOCOL)


def _render(basename: str, plot_fn, args: tuple, kwargs: dict):
    """Draw ``plot_fn(target, *args, **kwargs)`` into a temporary folder and return
    ("file", bytes) or, for a function that writes a set of files into the folder
    ``target`` and returns their names, ("set", [(name, bytes), ...])."""
    with tempfile.TemporaryDirectory(prefix="voxdose-figure-") as tmp:
        target = Path(tmp) / basename
        written = plot_fn(target, *args, **kwargs)
        if isinstance(written, (list, tuple)):
            return "set", [(str(n), (target / n).read_bytes()) for n in written]
        return "file", target.read_bytes()


def serve(stdin=None, stdout=None) -> int:
    """The helper's loop: (job id, pickled (file name, plot function, args, keywords)) in,
    (job id, result or None) out, until the input ends. A job it cannot unpickle (a plot
    function it cannot import) or draw is answered None."""
    stdin = stdin or sys.stdin.buffer
    if stdout is None:  # the protocol keeps file 1; anything else printed goes to stderr
        stdout = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot

    from . import compare_plots, dpk_plot, plots, tac_plots  # noqa: F401

    while True:
        try:
            data = _receive_bytes(stdin)
        except EOFError:
            return 0
        job, payload = pickle.loads(data)   # (int, bytes): always readable
        result = None
        try:
            basename, fn, args, kwargs = pickle.loads(payload)
            result = _render(basename, fn, args, kwargs)
        except BaseException:  # a function it cannot import, or a failing figure: the
            result = None      # pipeline draws it again and raises the real error
        _send(stdout, (job, result))


def serve_and_exit() -> None:
    """The helper process's whole life: :func:`serve`, then out at once (``os._exit``).
    Every reply was flushed as it was sent and every figure closed when written, so the
    interpreter's own teardown (unloading matplotlib and NumPy) would only keep the
    parent waiting at its exit (0.17 s on a 2-core machine)."""
    rc = serve()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)


class _Helper:
    """One helper process and the two threads that talk to it: a sender (jobs are pickled
    and written off the pipeline's thread, so a large one never blocks it) and a reader
    (results resolve their futures). ``dead`` once it has ended: its futures give None."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.dead = False
        self._futures: dict[int, Future] = {}
        self._outbox: list = []
        self._cv = threading.Condition()
        self._next = 0
        self.proc = _start_helper()
        for target in (self._sender, self._reader):
            threading.Thread(target=target, name=f"voxdose-figures-{target.__name__}",
                             daemon=True).start()

    def submit(self, basename: str, plot_fn, args: tuple, kwargs: dict) -> Future | None:
        fut: Future = Future()
        with self._cv:
            if self.dead:
                return None
            job, self._next = self._next, self._next + 1
            self._futures[job] = fut
            self._outbox.append((job, basename, plot_fn, args, kwargs))
            self._cv.notify_all()
        return fut

    def kill(self) -> None:
        self.proc.kill()
        self._fail_all()

    def stop(self) -> None:
        """End the helper after the jobs already sent (at exit)."""
        with self._cv:
            self._outbox.append(None)
            self._cv.notify_all()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def _sender(self) -> None:
        proc = self.proc
        while True:
            with self._cv:
                while not self._outbox:
                    self._cv.wait()
                msg = self._outbox.pop(0)
            try:
                if msg is None:
                    proc.stdin.close()
                    return
                _send(proc.stdin, _job_message(*msg))
            except Exception:  # a closed pipe, or arguments that do not pickle
                if msg is not None:
                    self._resolve(msg[0], None)
                if proc.poll() is not None:
                    self._fail_all()
                    return

    def _reader(self) -> None:
        proc = self.proc
        while True:
            try:
                job, result = _receive(proc.stdout)
            except Exception:  # the helper ended (or died): draw the rest here
                self._fail_all()
                return
            self._resolve(job, result)

    def _resolve(self, job: int, result) -> None:
        with self._cv:
            fut = self._futures.pop(job, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def _fail_all(self) -> None:
        """Every figure not back yet, and every later one, is drawn in the process."""
        with self._cv:
            self.dead = True
            self._outbox[:] = [None]
            self._cv.notify_all()
            futures, self._futures = list(self._futures.values()), {}
        for fut in futures:
            if not fut.done():
                fut.set_result(None)


_SHARED: list = [None]          # this process's helper, started on first use
_SHARED_LOCK = threading.Lock()


def _shared_helper() -> _Helper | None:
    """The process's helper (one for every run in it: its start-up, ~1 s of imports, is
    paid once), started now if there is none alive; None when it cannot start."""
    import atexit

    with _SHARED_LOCK:
        h = _SHARED[0]
        if h is None or h.dead or h.pid != os.getpid():   # none, ended, or a fork's copy
            try:
                h = _Helper()
            except OSError:
                return None
            if _SHARED[0] is None:
                atexit.register(_stop_shared)
            _SHARED[0] = h
        return h


def _stop_shared() -> None:
    h = _SHARED[0]
    if h is not None and not h.dead and h.pid == os.getpid():
        h.stop()


class FigureRenderer:
    """One run's figures: drawn in the process's helper once :meth:`start`-ed with
    ``parallel=True``, else in this process (the default)."""

    def __init__(self) -> None:
        self._helper: _Helper | None = None
        self._jobs: dict[str, Future] = {}

    @property
    def parallel(self) -> bool:
        """True while figures go to the helper process."""
        return self._helper is not None and not self._helper.dead

    @property
    def _proc(self):
        """The helper's process (None without one)."""
        return None if self._helper is None else self._helper.proc

    def start(self, parallel: bool) -> None:
        """Use (or start) the helper when ``parallel`` and the machine has a second core;
        otherwise import matplotlib on a background thread for this process."""
        if (parallel and self._helper is None and _cores() >= 2
                and os.environ.get(SERIAL_ENV, "") != "1"
                and not getattr(sys, "frozen", False)):   # a frozen app has no "-c"
            self._helper = _shared_helper()
            if self._helper is not None:
                return
        from .png import import_matplotlib_in_background

        import_matplotlib_in_background()

    def submit(self, name: str, plot_fn, *args, **kwargs) -> None:
        """Start drawing the figure of result ``name`` now (``plot_fn(path, *args,
        **kwargs)``) in the helper; :meth:`draw` of the same name takes the result.
        Nothing happens without a helper, or when ``name`` was submitted already."""
        if self.parallel and name not in self._jobs:   # once per name
            fut = self._helper.submit(Path(name).name, plot_fn, args, kwargs)
            if fut is not None:
                self._jobs[name] = fut

    def draw(self, target: Path, name: str, plot_fn, *args, **kwargs):
        """Write the figure of result ``name`` at ``target``: the helper's drawing when it
        was submitted (or is submitted now), else ``plot_fn(target, *args, **kwargs)``
        here. Returns what ``plot_fn`` returns (a list of file names for a set)."""
        if name not in self._jobs:
            self.submit(name, plot_fn, *args, **kwargs)
        fut = self._jobs.pop(name, None)
        result = None
        if fut is not None:
            try:
                result = fut.result(timeout=DRAW_TIMEOUT_S)
            except TimeoutError:          # a hung helper: stop it, draw everything here
                self._helper.kill()
        if result is not None:
            kind, payload = result
            if kind == "file":
                _write_bytes(Path(target), payload)
                return None
            Path(target).mkdir(parents=True, exist_ok=True)
            for n, data in payload:
                _write_bytes(Path(target) / n, data)
            return [n for n, _ in payload]
        return plot_fn(target, *args, **kwargs)

    def close(self) -> None:
        """This run is over: its figures not taken are dropped (the helper stays for the
        process's next run, and ends with the process)."""
        self._jobs.clear()
        self._helper = None


def _cores() -> int:
    """The cores this process may run on (its affinity where the system says)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: The helper's start: no current folder on its path (``-P``: a ``voxdose/`` or
#: ``numpy.py`` in the working folder must not shadow the real ones), this voxdose's
#: folder added when the interpreter would not find it otherwise.
_HELPER_CODE = ("import sys; root = sys.argv[1]\n"
                "if root not in sys.path: sys.path.insert(0, root)\n"
                "from voxdose.report.render import serve_and_exit; serve_and_exit()")


def _start_helper() -> subprocess.Popen:
    """A fresh interpreter running :func:`serve`, with this voxdose on its path."""
    root = str(Path(__file__).resolve().parents[2])   # the folder holding voxdose/
    return subprocess.Popen([sys.executable, "-P", "-c", _HELPER_CODE, root],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)

