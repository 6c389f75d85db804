"""``voxdose cohort`` (many studies on dask.distributed, the pre -> post loop) and
``voxdose demo-cohort`` (synthetic patients with pre- and post-therapy studies).

The cohort file is checked completely before anything runs (one line, exit 2). Each study
runs as one dask task into ``OUT/<id>/`` (complete or absent); a failed study is listed in
``OUT/failures.csv`` and the exit code is 1; a rerun skips studies whose results are complete
and whose inputs are unchanged. See docs/cohort.md.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..core.errors import InputError
from .app import DEVICE_HELP, app, console, err_console

#: exit code when the cohort ran but at least one study failed (bad input is 2)
EXIT_STUDIES_FAILED = 1
#: exit code of an interrupted command (128 + SIGINT), as voxdose.cli.app.EXIT_INTERRUPTED
EXIT_INTERRUPTED = 130
_ADDRESS = re.compile(r"^((tcp|tls|ucx|ws|wss)://)?[^\s/:]+:\d{1,5}$")


def _check_options(cohort_file: Path, out: Path, scheduler: str | None, workers: int | None,
                   threads_per_worker: int, device: str) -> None:
    from ..core.backend import DEVICES
    from .checks import input_file, output_folder

    if device not in DEVICES:
        raise InputError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    if threads_per_worker < 1:
        raise InputError(f"--threads-per-worker must be >= 1, got {threads_per_worker}")
    if scheduler is not None:
        if not _ADDRESS.match(scheduler):
            raise InputError(f"--scheduler {scheduler!r} is not a scheduler address; give "
                             "tcp://HOST:PORT (as `dask scheduler` prints it)")
        if workers is not None:
            raise InputError("--workers sizes the local cluster; with --scheduler the "
                             "cluster's own workers run the studies: leave out --workers")
    input_file(cohort_file, what="cohort file")
    output_folder(out, "--out")


def _progress() -> Progress:
    return Progress(TextColumn("studies"), BarColumn(), TextColumn("{task.completed}/"
                    "{task.total}"), TextColumn("[green]{task.fields[done]} done[/] · "
                    "{task.fields[skipped]} up to date · [red]{task.fields[failed]} failed"
                    "[/] · {task.fields[running]} running"), TimeElapsedColumn(),
                    console=console, transient=False)


def _print_pre_post(out: Path) -> None:
    import csv

    rows = [r for r in csv.DictReader(open(out / "pre_post.csv", encoding="utf-8"))
            if r["structure"] in ("kidneys", "marrow")]
    if not rows:
        return
    t = Table(title="pre-therapy prediction vs post-therapy dose", title_style="bold",
              caption="pre_post.csv has every structure")
    for c in ("patient", "organ", "pre Gy/GBq", "planned GBq", "given GBq", "predicted Gy",
              "post Gy", "post/pre"):
        t.add_column(c, justify="left" if c in ("patient", "organ") else "right")
    for r in rows[:40]:
        f = {k: (f"{float(v):.3g}" if v else "–") for k, v in r.items()
             if k not in ("patient", "structure", "pre_id", "post_id", "limiting_organ")}
        t.add_row(r["patient"], r["structure"], f["pre_gy_per_gbq"],
                  f["planned_activity_gbq"], f["given_activity_gbq"], f["predicted_gy"],
                  f["post_gy"], f["ratio_post_pre"])
    console.print(t)


@app.command("cohort")
def cohort(
    cohort_file: Path = typer.Argument(..., help="cohort file (cohort.toml): the studies, "
                                       "their patient and phase (pre/post/other), limits"),
    out: Path = typer.Option(..., "--out", help="results folder: OUT/<id>/ per study, "
                             "summary.csv, pre_post.csv, failures.csv, cohort.html"),
    scheduler: str = typer.Option(None, "--scheduler", help="an existing dask scheduler, "
                                  "tcp://HOST:PORT (workers started with `dask worker`; "
                                  "they need voxdose and the same paths); default: a local "
                                  "cluster on this machine"),
    workers: int = typer.Option(None, "--workers", help="local cluster: worker processes "
                                "(default: one per core, at most one per 4 GiB of memory "
                                "and one per study)"),
    threads_per_worker: int = typer.Option(1, "--threads-per-worker", help="studies one "
                                           "local worker runs at a time"),
    device: str = typer.Option("auto", help=DEVICE_HELP + " (on each worker)"),
):
    """Run every study of a cohort on dask.distributed (one task per study; a rerun skips
    finished ones), then summary.csv, pre_post.csv (pre-therapy prediction vs post-therapy
    dose) and cohort.html."""
    from ..cohort.cohort_file import load_cohort
    from ..cohort.runner import run_cohort

    t0 = time.perf_counter()
    _check_options(cohort_file, out, scheduler, workers, threads_per_worker, device)
    c = load_cohort(cohort_file)  # every check before anything runs
    with _progress() as prog:
        task = prog.add_task("studies", total=len(c.studies), done=0, skipped=0, failed=0,
                             running=0)

        def show(n: dict) -> None:
            prog.update(task, completed=n["done"] + n["skipped"] + n["failed"],
                        **{k: n[k] for k in ("done", "skipped", "failed", "running")})

        try:
            run = run_cohort(c, out, scheduler=scheduler, workers=workers,
                             threads_per_worker=threads_per_worker, device=device,
                             progress=show)
        except KeyboardInterrupt:
            prog.stop()
            err_console.print("voxdose: interrupted: the studies that finished are complete "
                              f"in {out}/<id>/ (the others absent); run the same command "
                              "again to run the rest", highlight=False, markup=False,
                              soft_wrap=True)
            raise SystemExit(EXIT_INTERRUPTED) from None  # main() adds no second message
    _print_pre_post(run.out_dir)
    n = run.counts
    console.print(f"{len(c.studies)} studies: {n['done']} run, {n['skipped']} up to date, "
                  f"{n['failed']} failed ({run.cluster}); results in [bold]{run.out_dir}[/]: "
                  "summary.csv, pre_post.csv, failures.csv, cohort.html", highlight=False)
    console.print(f"total time {time.perf_counter() - t0:.1f} s")
    if run.failed:
        for o in run.failed[:10]:
            console.print(f"voxdose: failed: {o.id}: {o.error}", style="red", markup=False,
                          highlight=False, soft_wrap=True)
        console.print(f"{len(run.failed)} of {len(c.studies)} studies failed: see "
                      f"{run.out_dir / 'failures.csv'}; rerun the same command after fixing "
                      "them (finished studies are skipped)", style="red", highlight=False)
        return EXIT_STUDIES_FAILED
    return 0


@app.command("demo-cohort")
def demo_cohort(
    out_dir: Path = typer.Argument(..., help="folder for cohort.toml, patients.csv and the "
                                   "study folders pNN/pre, pNN/post"),
    patients: int = typer.Option(4, "--patients", help="number of synthetic patients, >= 1"),
    seed: int = typer.Option(20161, help="random seed of the patients (anatomy, kinetics, "
                             "noise, motion)"),
    full: bool = typer.Option(False, "--full", help="the full-resolution phantom (2.4 mm "
                              "CT, minutes per study) instead of the coarse one (4.8 mm)"),
):
    """Write N synthetic patients (seeded: anatomy scale, kinetics), each with a pre-therapy
    study at 200 MBq and a post-therapy study at the planned activity, and the cohort file."""
    from ..cohort.demo import build_cohort
    from .checks import output_folder

    if patients < 1:
        raise InputError(f"--patients must be >= 1, got {patients}")
    if seed < 0:
        raise InputError(f"--seed must be an integer >= 0; got {seed}")
    output_folder(out_dir, "OUT_DIR")
    with _progress_simple() as prog:
        task = prog.add_task("synthetic patients", total=patients)
        path = build_cohort(out_dir, patients, seed, 2.4 if full else 4.8,
                            progress=lambda d, t: prog.update(task, completed=d))
    console.print(f"wrote {patients} patients (pre 200 MBq, post at the planned activity: "
                  f"{out_dir / 'patients.csv'}) and [bold]{path}[/]; run it with:\n"
                  f"  voxdose cohort {path} --out {out_dir / 'results'}", highlight=False)


def _progress_simple() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=console, transient=False)
