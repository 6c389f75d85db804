"""Run a cohort's studies as dask.distributed tasks: one task per study, each the whole
pipeline of ``voxdose run`` into ``DIR/<id>/`` (staged: complete or absent).

* Cluster: a ``distributed.LocalCluster`` on this machine (``dask_cuda.LocalCUDACluster``,
  one worker per GPU, when dask-cuda is installed and the device is ``auto`` or ``gpu``),
  or an existing scheduler (``--scheduler tcp://HOST:PORT``, workers started by the user
  with ``dask worker``; they need voxdose installed and the same paths to the studies).
* Resumable: a study whose results folder is complete (every file its provenance.json lists
  is there) and whose inputs still have the SHA-256 its provenance recorded (and the same
  planning limits and voxdose version) is skipped; every other study runs again, failed ones
  included.
* A failed study is one line (its error) in the outcome; the others go on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..core.errors import InputError
from .cohort_file import Cohort, CohortStudy

DONE, SKIPPED, FAILED = "done", "skipped", "failed"
PROVENANCE = "provenance.json"
#: seconds to wait for an existing scheduler to answer, and for its first worker
CONNECT_TIMEOUT_S = 10.0
WORKER_WAIT_S = 60.0


@dataclass
class Outcome:
    """What happened to one study in this run."""

    id: str
    status: str                     # done | skipped | failed
    error: str = ""                 # failed: the one-line error
    seconds: float = 0.0            # the task's own time (0 when skipped)
    reason: str = ""                # why it ran (no results, an input changed, ...)
    where: str = ""                 # the worker that ran it


@dataclass
class CohortRun:
    out_dir: Path
    outcomes: list[Outcome]
    wall_s: float
    cluster: str = ""
    counts: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == FAILED]


# ------------------------------------------------------------------ resumability

def _same(a, b) -> bool:
    return (a or None) == (b or None)


def stale_reason(res_dir: Path, study: CohortStudy, limits_gy=None, after_h=None) -> str:
    """'' when ``res_dir`` holds complete results of ``study`` whose inputs are unchanged;
    else why it must run (no results, incomplete, an input changed, other limits, ...)."""
    from ..io.atomic import sha256_file

    try:
        prov = json.loads((res_dir / PROVENANCE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no results yet"
    except (OSError, ValueError):
        return "provenance.json unreadable"
    outputs = prov.get("outputs") if isinstance(prov, dict) else None
    inputs = prov.get("inputs_sha256") if isinstance(prov, dict) else None
    if not isinstance(outputs, list) or not isinstance(inputs, dict) or not inputs:
        return "provenance.json lists no outputs or inputs"
    missing = [o for o in outputs if not (res_dir / str(o)).is_file()]
    if missing:
        return f"incomplete results ({missing[0]} missing)"
    if study.path not in {Path(p).resolve() for p in inputs}:
        return "results of another study file"
    for p, digest in inputs.items():
        q = Path(p)
        if not q.is_file() or sha256_file(q) != digest:
            return f"input changed: {q.name}"
    st = prov.get("study") or {}
    if limits_gy is None:  # the study's own [plan] (its file's hash alone misses a cohort
        limits_gy, after_h = _own_plan(study.path)  # limit given before and removed now)
    if not (_same(st.get("plan_limits_gy"), limits_gy)
            and _same(st.get("plan_after_h"), after_h)):
        return "other planning limits"
    if (prov.get("voxdose") or {}).get("voxdose") != __version__:
        return "results of another voxdose version"
    return ""


def _own_plan(study_file: Path) -> tuple[dict | None, dict | None]:
    """The [plan] limits_gy and after_h of a study file (None where absent)."""
    from ..io.toml_file import read_toml

    try:
        plan = read_toml(study_file).get("plan") or {}
    except (OSError, ValueError):
        return None, None
    return plan.get("limits_gy"), plan.get("after_h")


def _stale_reasons(cohort: Cohort, out_dir: Path) -> list[str]:
    """:func:`stale_reason` of every study, hashed on a few threads (hashlib releases the
    GIL: a cohort of large DICOM studies is checked at disk speed)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(s: CohortStudy) -> str:
        return stale_reason(out_dir / s.id, s, cohort.limits_gy, cohort.after_h)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, cohort.studies))


def remove_leftover_staging(out_dir: Path, study_id: str) -> None:
    """Hidden staging folders a killed run of ``study_id`` left behind (never results)."""
    for where in (out_dir, out_dir / study_id):
        if where.is_dir():
            for p in where.glob(f".{study_id}-staging-*"):
                shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------ the task

#: one study's figures at a time in a worker process (matplotlib's pyplot is not thread-safe;
#: only matters with --threads-per-worker > 1)
_FIGURES_LOCK = threading.Lock()


class _SerialWrites:
    """Pipeline reporter: the write stage (figures, report) holds a process-wide lock."""

    @contextmanager
    def stage(self, name: str, total: int = 1):
        if name.startswith("write"):
            with _FIGURES_LOCK:
                yield lambda done=None, tot=None: None
        else:
            yield lambda done=None, tot=None: None


def one_line(exc: BaseException) -> str:
    """An exception as one line: voxdose's own errors as they are, others with their type."""
    from ..core.errors import VoxdoseError

    text = " ".join(str(exc).split())
    if isinstance(exc, VoxdoseError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_study(study_path: str, out_dir: str, device: str = "auto",
              limits_gy: dict | None = None, after_h: dict | None = None) -> dict:
    """The dask task: the whole pipeline of one study into ``out_dir`` (staged). Never raises
    for a study's own failure: returns ``{"status": "failed", "error": one line}``."""
    import dataclasses
    import socket
    import warnings

    t0 = time.perf_counter()
    where = f"{socket.gethostname()} pid {os.getpid()}"
    try:
        from ..pipeline.run import run_pipeline
        from ..study.load import load_study

        study = load_study(Path(study_path))
        if limits_gy is not None:
            study = dataclasses.replace(study, plan_limits_gy=dict(limits_gy),
                                        plan_after_h=dict(after_h) if after_h else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # figures in the worker itself: the cohort's workers already use every core
            res = run_pipeline(study, Path(out_dir), device=device, reporter=_SerialWrites(),
                               figure_helper=False)
        return {"status": DONE, "seconds": time.perf_counter() - t0, "where": where,
                "device": res.provenance.get("device", "")}
    except MemoryError:
        return {"status": FAILED, "error": "not enough memory for this study; use fewer "
                "--workers", "where": where, "seconds": time.perf_counter() - t0}
    except Exception as exc:  # one study's failure must not stop the others
        return {"status": FAILED, "error": one_line(exc), "where": where,
                "seconds": time.perf_counter() - t0}


# ------------------------------------------------------------------ the cluster

def _cuda_workers(device: str) -> bool:
    """dask-cuda's LocalCUDACluster for the local cluster: installed, and a GPU wanted and
    usable here."""
    if device == "cpu":
        return False
    import importlib.util

    if importlib.util.find_spec("dask_cuda") is None:
        return False
    from ..core.backend import gpu_available

    return bool(gpu_available())


def default_workers(n_tasks: int) -> int:
    """Local workers: one per core, at most one per 4 GiB of memory and one per study."""
    cores = os.cpu_count() or 1
    try:
        import psutil

        by_memory = max(1, int(psutil.virtual_memory().total // (4 * 1024 ** 3)))
    except Exception:  # psutil comes with distributed; be safe anyway
        by_memory = cores
    return max(1, min(n_tasks, cores, by_memory))


def _local_cluster(n: int, n_given: bool, threads_per_worker: int, device: str):
    """A LocalCUDACluster (dask-cuda, GPUs) or a LocalCluster of ``n`` worker processes."""
    import warnings

    with warnings.catch_warnings():  # "port 8787 in use": dask takes another one
        warnings.simplefilter("ignore", UserWarning)
        if _cuda_workers(device):
            from dask_cuda import LocalCUDACluster

            return LocalCUDACluster(threads_per_worker=threads_per_worker,
                                    silence_logs=logging.ERROR,
                                    **({"n_workers": n} if n_given else {})), \
                "LocalCUDACluster"
        from distributed import LocalCluster

        return LocalCluster(n_workers=n, threads_per_worker=threads_per_worker,
                            processes=True, silence_logs=logging.ERROR), "LocalCluster"


@contextmanager
def open_client(scheduler: str | None, workers: int | None, threads_per_worker: int,
                device: str, n_tasks: int):
    """A ``distributed.Client`` on an existing scheduler or on a new local cluster (closed
    on exit); yields (client, description)."""
    from distributed import Client

    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"--scheduler {scheduler}: no dask scheduler answered ({one_line(exc)}"
                             "); start one with `dask scheduler` and workers with `dask worker "
                             f"{scheduler}`, or leave out --scheduler for a local cluster"
                             ) from None
        try:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            except TimeoutError:
                raise InputError(f"--scheduler {scheduler}: no worker connected within "
                                 f"{WORKER_WAIT_S:g} s; start one with `dask worker "
                                 f"{scheduler}`") from None
            yield client, f"scheduler {scheduler} ({len(client.nthreads())} workers)"
        finally:
            client.close()
        return
    cluster, what = _local_cluster(workers or default_workers(n_tasks), workers is not None,
                                   threads_per_worker, device)
    try:
        client = Client(cluster)
        try:
            nw = len(client.nthreads())
            yield client, f"{what}: {nw} workers x {threads_per_worker} thread(s)"
        finally:
            client.close()
    finally:
        cluster.close()


# ------------------------------------------------------------------ the run

def _running(client, keys: set) -> int:
    """Studies being computed now: per worker, at most its thread count of our tasks (the
    scheduler may already have queued the next one there)."""
    try:
        proc = client.processing()
        nthreads = client.nthreads()
    except Exception:  # the display must never stop the run
        return 0
    return sum(min(sum(1 for k in ks if str(k) in keys), nthreads.get(w, 1))
               for w, ks in proc.items())


def _submit(client, todo: list[CohortStudy], out_dir: Path, device: str, cohort: Cohort):
    futures = {}
    for s in todo:
        remove_leftover_staging(out_dir, s.id)
        key = f"voxdose-study-{s.id}-{uuid.uuid4().hex[:8]}"
        fut = client.submit(run_study, str(s.path), str(out_dir / s.id), device,
                            cohort.limits_gy, cohort.after_h, key=key, pure=False, retries=0)
        futures[fut] = s
    return futures


def _collect(client, futures: dict, outcomes: dict, reasons: dict, tick: Callable) -> None:
    """Wait for every task (as_completed), recording each outcome as it arrives."""
    from distributed import as_completed

    keys = {str(f.key) for f in futures}
    ac = as_completed(list(futures))
    while ac.count():
        batch = ac.next_batch(block=False)
        for fut in batch:
            s = futures[fut]
            try:
                r = fut.result()
            except Exception as exc:  # e.g. KilledWorker, voxdose missing
                r = {"status": FAILED, "error": one_line(exc)}
            outcomes[s.id] = Outcome(s.id, r["status"], r.get("error", ""),
                                     float(r.get("seconds", 0.0)), reasons[s.id],
                                     r.get("where", ""))
            keys.discard(str(fut.key))
        tick(_running(client, keys))
        if not batch:
            time.sleep(0.25)


def run_cohort(cohort: Cohort, out_dir, *, scheduler: str | None = None,
               workers: int | None = None, threads_per_worker: int = 1,
               device: str = "auto", progress: Callable | None = None) -> CohortRun:
    """Run every study that is not up to date; write summary.csv, pre_post.csv,
    failures.csv and cohort.html. ``progress(counts)`` is called as studies finish
    (counts: total, done, skipped, failed, running)."""
    from .summary import write_cohort_outputs

    t0 = time.perf_counter()
    out_dir = Path(out_dir).absolute()  # created by the first study's writer, not before
    outcomes: dict[str, Outcome] = {}
    reasons: dict[str, str] = {}
    todo = []
    for s, why in zip(cohort.studies, _stale_reasons(cohort, out_dir)):
        if why:
            reasons[s.id] = why
            todo.append(s)
        else:
            outcomes[s.id] = Outcome(s.id, SKIPPED, reason="up to date")

    def tick(running: int = 0) -> None:
        if progress is not None:
            st = [o.status for o in outcomes.values()]
            progress({"total": len(cohort.studies), "done": st.count(DONE),
                      "skipped": st.count(SKIPPED), "failed": st.count(FAILED),
                      "running": running})

    tick()
    cluster = "none (every study up to date)"
    if todo:
        with open_client(scheduler, workers, threads_per_worker, device, len(todo)) as (
                client, cluster):
            futures = _submit(client, todo, out_dir, device, cohort)
            try:
                _collect(client, futures, outcomes, reasons, tick)
            except BaseException:
                client.cancel(list(futures))
                raise
    ordered = [outcomes[s.id] for s in cohort.studies]
    write_cohort_outputs(cohort, out_dir, ordered)
    run = CohortRun(out_dir, ordered, time.perf_counter() - t0, cluster)
    run.counts = {k: sum(o.status == k for o in ordered) for k in (DONE, SKIPPED, FAILED)}
    return run
