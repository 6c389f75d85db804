"""Where a run's figures are drawn: in a helper process, while the pipeline goes on.

Drawing a figure is Python-bound matplotlib work (the demo's six figures: ~6 s of one
core), and the pipeline's computing stages leave the second core of a small machine
mostly idle. So a CPU run draws its figures in one helper process, a fresh interpreter
(``python -m voxdose.report.render``: never a fork of a process that runs threads, and
never a re-run of the caller's script, as multiprocessing's ``spawn`` would do for a
script without a ``__main__`` guard). A figure whose data are final is submitted as soon
as they are (:meth:`FigureRenderer.submit`, pickled through the helper's stdin by a sender
thread), drawn into the helper's own temporary folder and sent back as bytes; the results
writer writes those bytes where and when the figure belongs (:meth:`FigureRenderer.draw`),
so the results folder, the order of ``provenance.json``'s outputs and the pixels are what
drawing in the process gives (test).

Drawn in the process instead: runs on a GPU (their arrays may live on the device), a
machine with one core, :data:`SERIAL_ENV` set to 1, and every figure whose helper failed
for any reason (drawn again here, so that a real error in a figure is raised here, with
its own traceback).
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

from ..io.atomic import atomic_path

#: Set to 1 to draw every figure in the pipeline's own process.
SERIAL_ENV = "VOXDOSE_SERIAL_FIGURES"
_HEADER = struct.Struct("<Q")


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream):
    """The next message, or EOFError at the end of the stream."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    (n,) = _HEADER.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


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
    """The helper's loop: (job id, file name, plot function, args, keywords) in, (job id,
    result or None) out, until the input ends."""
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
            job, basename, fn, args, kwargs = _receive(stdin)
        except EOFError:
            return 0
        try:
            result = _render(basename, fn, args, kwargs)
        except BaseException:  # the pipeline draws it again and raises the real error
            result = None
        _send(stdout, (job, result))


class FigureRenderer:
    """Draws figures in a helper process once :meth:`start`-ed with ``parallel=True``,
    else in this process (the default)."""

    def __init__(self) -> None:
        self._proc = None
        self._jobs: dict[str, Future] = {}
        self._futures: dict[int, Future] = {}
        self._outbox: list = []
        self._cv = threading.Condition()
        self._next = 0

    @property
    def parallel(self) -> bool:
        """True while figures go to the helper process."""
        return self._proc is not None

    def start(self, parallel: bool) -> None:
        """Start the helper (and its imports) when ``parallel`` and the machine has a
        second core; otherwise import matplotlib on a background thread for this process."""
        if (parallel and self._proc is None and (os.cpu_count() or 1) >= 2
                and os.environ.get(SERIAL_ENV, "") != "1"):
            try:
                self._proc = _start_helper()
            except OSError:
                self._proc = None
            else:
                for target in (self._sender, self._reader):
                    threading.Thread(target=target, name=f"voxdose-figures-{target.__name__}",
                                     daemon=True).start()
                return
        from .png import import_matplotlib_in_background

        import_matplotlib_in_background()

    def submit(self, name: str, plot_fn, *args, **kwargs) -> None:
        """Start drawing the figure of result ``name`` now (``plot_fn(path, *args,
        **kwargs)``) in the helper; :meth:`draw` of the same name takes the result.
        Nothing happens without a helper."""
        if self._proc is None:
            return
        fut: Future = Future()
        with self._cv:
            job, self._next = self._next, self._next + 1
            self._futures[job] = fut
            self._outbox.append((job, Path(name).name, plot_fn, args, kwargs))
            self._cv.notify_all()
        self._jobs[name] = fut

    def draw(self, target: Path, name: str, plot_fn, *args, **kwargs):
        """Write the figure of result ``name`` at ``target``: the helper's drawing when it
        was submitted (or is submitted now), else ``plot_fn(target, *args, **kwargs)``
        here. Returns what ``plot_fn`` returns (a list of file names for a set)."""
        if name not in self._jobs:
            self.submit(name, plot_fn, *args, **kwargs)
        fut = self._jobs.pop(name, None)
        result = None if fut is None else fut.result()
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
        """Stop the helper (figures not taken are dropped)."""
        proc = self._proc
        with self._cv:
            self._proc = None
            self._outbox[:] = [None]          # what was not sent yet is dropped
            busy = bool(self._futures)
            self._cv.notify_all()
        self._jobs.clear()
        if proc is not None:
            if busy:                          # a failed run: its figures are not needed
                proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung figure
                proc.kill()
                proc.wait()
        self._fail_all()

    # -- the two threads that talk to the helper --------------------------------------
    def _sender(self) -> None:
        proc = self._proc
        while True:
            with self._cv:
                while not self._outbox:
                    self._cv.wait()
                msg = self._outbox.pop(0)
            try:
                if msg is None:
                    proc.stdin.close()
                    return
                _send(proc.stdin, msg)
            except Exception:  # a closed pipe, or arguments that do not pickle
                if msg is not None:
                    self._resolve(msg[0], None)
                if proc.poll() is not None:
                    self._fail_all()
                    return

    def _reader(self) -> None:
        proc = self._proc
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
        with self._cv:
            futures, self._futures = list(self._futures.values()), {}
        for fut in futures:
            if not fut.done():
                fut.set_result(None)


def _start_helper() -> subprocess.Popen:
    """``python -m voxdose.report.render`` with this voxdose first on its path."""
    root = str(Path(__file__).resolve().parents[2])   # the folder holding voxdose/
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.Popen([sys.executable, "-m", "voxdose.report.render"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


if __name__ == "__main__":
    raise SystemExit(serve())
