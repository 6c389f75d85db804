"""Command line: ``voxdose demo``, ``voxdose run`` (Typer + Rich).

Every command exits 0 on success; bad input gives one line on stderr and a non-zero exit
(2), and no partial output.
"""

from __future__ import annotations

import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..core.errors import VoxdoseError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="voxdose: voxel dosimetry for radiopharmaceutical therapy "
                       "(SPECT/CT time points -> TIA -> absorbed dose in Gy).")
# Not a terminal (CI, pipes): wide enough for the structure table instead of 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=110)
err_console = Console(stderr=True)

DEVICE_HELP = "compute device: auto (GPU if a usable CUDA GPU is found, else CPU), cpu, gpu"
#: The demo's partial-volume correction (its study file declares the phantom's FWHM):
#: region-based voxel-wise, on the TIA map (docs/validation.md, docs/pvc.md).
DEMO_PVC, DEMO_PVC_METHODS = "rbv", ("none", "gtm", "rbv", "iy")


class RichReporter:
    """Rich progress bars, one per pipeline stage."""

    def __init__(self, progress: Progress):
        self.progress = progress

    @contextmanager
    def stage(self, name: str, total: int = 1):
        task = self.progress.add_task(name, total=total)

        def advance(done=None, tot=None):
            if tot is not None:
                self.progress.update(task, total=tot)
            self.progress.update(task, completed=done if done is not None else total)

        yield advance
        self.progress.update(task, completed=self.progress.tasks[task].total)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn(
        "{task.completed}/{task.total}"), TimeElapsedColumn(), console=console, transient=False)


def _print_table(result, title: str) -> None:
    if not result.dvhs:
        console.print("[yellow]no structures given: no DVH table[/]")
        return
    ldm = {h.name: h for h in result.dvhs["ldm"]}
    t = Table(title=title, title_style="bold", caption="doses in Gy; LDM = local deposition")
    t.add_column("structure", no_wrap=True)
    for col in ("mL", "mean", "min", "max", "D2", "D50", "D98", "LDM mean"):
        t.add_column(col, justify="right", no_wrap=True)
    for h in result.dvhs["kernel"]:
        t.add_row(h.name, f"{h.volume_ml:.1f}", f"{h.mean_gy:.3g}", f"{h.min_gy:.3g}",
                  f"{h.max_gy:.3g}", f"{h.d(2):.3g}", f"{h.d(50):.3g}", f"{h.d(98):.3g}",
                  f"{ldm[h.name].mean_gy:.3g}")
    console.print(t)


def _print_decisions(result) -> None:
    d = result.decisions
    if d is not None and d.marrow is not None:
        m = d.marrow
        console.print(f"red marrow (EANM, L2-L4): {m.total_dose_gy:.3g} Gy "
                      f"({d.gy_per_gbq['marrow']:.3g} Gy/GBq)", highlight=False)
    if d is not None and d.plan is not None:
        console.print(f"plan: at most {d.plan.max_activity_gbq:.3g} GBq, limited by "
                      f"{d.plan.limiting_organ} (see plan.json)", highlight=False)
    if len(result.comparison) > 1:
        a, b = result.comparison[0], result.comparison[1]
        mb = {h.name: h.mean_gy for h in b.dvhs}
        kid = [h for h in a.dvhs if h.name.startswith("kidney")]
        if kid:
            h = kid[0]
            console.print(f"{b.nuclide} with the same biological kinetics: {h.name} "
                          f"{mb[h.name]:.3g} Gy vs {h.mean_gy:.3g} Gy for {a.nuclide} "
                          "(compare.json)", highlight=False)


def _print_pvc(result) -> None:
    """With a partial-volume correction: the kidney and marrow lines of both tables (the
    uncorrected results are in dvh_nopvc.csv, the comparison in pvc.json)."""
    pvc = result.pvc
    if not pvc:
        return
    xyz = pvc.get("fwhm_mm_xyz") or []
    fwhm = f"{xyz[0]:g}" if len(set(xyz)) == 1 else ", ".join(f"{v:g}" for v in xyz) or "-"
    t = Table(title=f"partial-volume correction ({pvc['method']}, FWHM {fwhm} mm, dose on the "
              "label grid)", title_style="bold",
              caption="mean dose in Gy; without: dvh_nopvc.csv; see pvc.json")
    for col in ("structure", "without PVC", "with PVC", "change"):
        t.add_column(col, justify="left" if col == "structure" else "right", no_wrap=True)
    rows = [(n, v["nopvc"], v["pvc"]) for n, v in pvc.get("mean_dose_gy", {}).items()
            if n.startswith(("kidney", "marrow"))]
    m = pvc.get("marrow_gy") or {}
    if m.get("pvc") is not None:
        rows.append(("red marrow (EANM, L2-L4)", m.get("nopvc"), m["pvc"]))
    for name, a, b in rows:
        change = f"{100 * (b / a - 1):+.1f} %" if a else "-"
        t.add_row(name, "-" if a is None else f"{a:.3g}", f"{b:.3g}", change)
    console.print(t)
    if not pvc.get("complete", True):
        console.print("voxdose: warning: partial-volume correction incomplete: structures "
                      f"missing from the label map: {', '.join(pvc['missing_structures'])}",
                      style="yellow", markup=False, highlight=False)


def _run(study_path: Path, out: Path, device: str, t_start: float,
         density_mode: str = "none") -> None:
    from ..core.backend import DEVICES
    from ..core.errors import InputError
    from ..study.load import load_study
    from ..pipeline.run import run_pipeline

    if device not in DEVICES:
        raise InputError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    from ..dose.density import check_density_mode
    from .checks import input_file, output_folder

    check_density_mode(density_mode)
    input_file(study_path, what="study file")
    output_folder(out, "--out")  # before any work: a bad location fails in a second
    study = load_study(study_path)  # fail on bad input before any progress bar is drawn
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        with _progress() as prog:
            result = run_pipeline(study, out, device=device, reporter=RichReporter(prog),
                                  density_mode=density_mode)
    for w in caught:
        if "device 'auto'" in str(w.message):
            console.print(str(w.message), style="yellow", markup=False)
    for w in result.provenance.get("warnings", []):
        console.print(f"voxdose: warning: {w}", style="yellow", markup=False, highlight=False)
    nuc = result.provenance["study"]["nuclide"]
    _print_table(result, f"{nuc} absorbed dose per structure (kernel convolution, water)")
    _print_decisions(result)
    _print_pvc(result)
    console.print(f"results in [bold]{out}[/]: {', '.join(result.files)}")
    console.print(f"total time {time.perf_counter() - t_start:.1f} s "
                  f"(device: {result.provenance['device']})")


@app.command()
def demo(
    out_dir: Path = typer.Argument(Path("voxdose-demo"), help="folder for study/ and results/"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    small: bool = typer.Option(False, "--small", help="coarse grid (4.8 mm CT, 9.6 mm SPECT): "
                               "the whole demo in seconds"),
    activity_mbq: float = typer.Option(7400.0, "--activity-mbq",
                                       help="administered activity, MBq, > 0 (default 7.4 "
                                       "GBq)"),
    seed: int = typer.Option(20161, help="random seed of the phantom's noise and misalignment"),
    density_mode: str = typer.Option("none", help="none (water), scale (dose x 1/rho) or mvs "
                                     "(density-binned kernels); density from the CT (g/cm^3)"),
    pvc: str = typer.Option(DEMO_PVC, "--pvc", help="partial-volume correction of the demo "
                            "study (its FWHM is known): none, gtm, rbv or iy (docs/pvc.md)"),
):
    """Build the synthetic patient study (Lu-177 CXCR4 ligand, SPECT/CT at 1-168 h) in
    OUT_DIR/study, run the whole pipeline into OUT_DIR/results, print a dose table."""
    from ..phantom.study import PhantomConfig, build_study

    _check_demo(out_dir, device, activity_mbq, seed, density_mode)
    if pvc not in DEMO_PVC_METHODS:
        from ..core.errors import InputError

        raise InputError(f"--pvc {pvc!r}: choose one of {', '.join(DEMO_PVC_METHODS)} (rc "
                         "needs a measured recovery table: use it with `voxdose run`)")
    t0 = time.perf_counter()
    _import_in_background(*_PIPELINE_IMPORTS, then=_warm_up_fit)  # during the build
    cfg = (PhantomConfig.small if small else PhantomConfig)(
        administered_activity_mbq=activity_mbq, seed=seed)
    with _progress() as prog:
        task = prog.add_task("synthetic study", total=len(cfg.times_h))
        study = build_study(out_dir / "study", cfg,
                            progress=lambda d, t: prog.update(task, completed=d, total=t),
                            pvc_method=pvc)
    _run(study, out_dir / "results", device, t0, density_mode)


#: What the pipeline imports as it goes, in its order: the pipeline itself, then the
#: libraries its stages import lazily on first use (scipy.optimize: the organ fits;
#: scipy.ndimage: the marrow VOIs; pydicom: the RT Dose), about 0.35 s on the critical path
#: otherwise (2-core AMD EPYC, docs/benchmarks.md).
_PIPELINE_IMPORTS = ("voxdose.pipeline.run", "voxdose.study.load", "scipy.optimize",
                     "scipy.ndimage", "pydicom")


def _warm_up_fit() -> None:
    from ..kinetics.fit import warm_up_cpu_driver

    warm_up_cpu_driver()


def _import_in_background(*modules: str, then=None) -> None:
    """Import ``modules`` on a daemon thread (the pipeline's ~0.8 s of imports, overlapped
    with building the demo's study, whose array work releases the GIL), then call ``then``
    (no arguments). A module that fails to import here, or a ``then`` that fails, fails
    again, with its error, where the command itself gets to it."""
    import importlib
    import threading

    def _import() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # pragma: no cover - reported by the command's own import
                return
        if then is not None:
            try:
                then()
            except Exception:  # pragma: no cover - the same call fails in the pipeline
                return

    threading.Thread(target=_import, name="voxdose-import", daemon=True).start()


def _check_demo(out_dir: Path, device: str, activity_mbq: float, seed: int,
                density_mode: str) -> None:
    """Every option of ``voxdose demo`` and its output folders, before the study is built."""
    from ..core.backend import DEVICES
    from ..core.errors import InputError
    from ..dose.density import check_density_mode
    from .checks import output_folder, positive

    if device not in DEVICES:
        raise InputError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
    check_density_mode(density_mode)
    positive(activity_mbq, "--activity-mbq", "MBq")
    if seed < 0:
        raise InputError(f"--seed must be an integer >= 0; got {seed}")
    output_folder(out_dir, "OUT_DIR")
    for sub in ("study", "results"):
        output_folder(out_dir / sub, "OUT_DIR")


@app.command()
def run(
    study: Path = typer.Argument(..., help="study file (study.toml); paths in it are relative "
                                           "to it, times in hours after administration"),
    out: Path = typer.Option(None, "--out", help="results folder (default: STUDY's folder/"
                                                 "results)"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    density_mode: str = typer.Option("none", help="none (water), scale (dose x 1/rho) or mvs "
                                     "(density-binned kernels); density from the CT (g/cm^3)"),
):
    """Run the pipeline on a user's study: register, fit TIA (Bq*s per voxel), dose (Gy), DVHs."""
    t0 = time.perf_counter()
    _run(study, out or study.parent / "results", device, t0, density_mode)


# Commands of later stages live in their own modules (cli/<group>.py) and register on ``app``
# when imported here; each keeps its options, help text and units next to its code.
def _register_commands() -> None:
    from . import analysis, cohort, dicom, dose, kernels, pvc, tia  # noqa: F401


_register_commands()


#: Exit code of an interrupted command (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def _interrupted() -> int:
    err_console.print("voxdose: interrupted: nothing was written (results are staged and "
                      "moved into place only when a command completes)", highlight=False,
                      soft_wrap=True, markup=False)
    return EXIT_INTERRUPTED


def _error(text: str) -> int:
    """``voxdose: error: TEXT`` as one line on stderr; the exit code of bad input (2)."""
    err_console.print(f"voxdose: error: {text}", highlight=False, soft_wrap=True,
                      markup=False)
    return 2


def _os_error_text(exc: OSError) -> str:
    """An OSError in words: what the system said, about which path, and that nothing was
    written (every command stages its outputs)."""
    import re

    what = exc.strerror or type(exc).__name__
    # a staged file by the name it was to have (the staging folder left out)
    paths = " -> ".join(re.sub(r"[/\\]\.[^/\\]*-staging-[^/\\]*", "", str(f))
                        for f in (exc.filename, exc.filename2) if f)
    return (f"{paths}: {what.lower()}" if paths else what.lower()) + \
        "; nothing was written: check the path, its permissions and the free space"


def _usage_error(exc) -> int:
    """A usage error of Typer's Click (bad option value, missing argument) as one line
    naming the command and where to find its help."""
    ctx = getattr(exc, "ctx", None)
    cmd = "voxdose"
    if ctx is not None and ctx.parent is not None and ctx.info_name:
        cmd += f" {ctx.info_name}"
    text = " ".join(str(exc.format_message()).split())
    err_console.print(f"voxdose: error: {cmd}: {text} (see '{cmd} --help')",
                      highlight=False, soft_wrap=True, markup=False)
    return int(exc.exit_code) or 2


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    try:
        # Typer turns Ctrl-C into Exit(130) and, without standalone mode, *returns* that code
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
            return _interrupted() if rv == EXIT_INTERRUPTED else rv
    except KeyboardInterrupt:
        return _interrupted()
    except VoxdoseError as exc:
        return _error(str(exc))
    except OSError as exc:  # the file system refused (a path checks could not foresee)
        return _error(_os_error_text(exc))
    except MemoryError:
        return _error("not enough memory for this computation; nothing was written: use "
                      "coarser voxels, a smaller kernel (--kernel-radius-mm, --half-width) "
                      "or --memory-budget-gb")
    except (typer.Exit, SystemExit) as exc:  # --help, click usage errors handled below
        return int(getattr(exc, "exit_code", getattr(exc, "code", 0)) or 0)
    except Exception as exc:  # usage errors of Typer's (vendored) Click: one line, exit 2
        if type(exc).__name__ == "NoArgsIsHelpError" and hasattr(exc, "show"):
            exc.show()  # `voxdose` alone: the help text
            return int(exc.exit_code)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            return _usage_error(exc)
        if isinstance(exc, RuntimeError) and "Symlink loop" in str(exc):  # Path.resolve
            return _error(f"{exc}; give the file itself")
        if type(exc).__name__ == "Abort":  # Click turns Ctrl-C into Abort
            if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
                return _interrupted()
            return 1
        raise
    return 0


def entry_point() -> None:
    """The ``voxdose`` command (the console script and ``python -m voxdose``): :func:`main`,
    then :func:`exit_now` with its code."""
    exit_now(main())


def exit_now(code: int) -> None:
    """End the process with ``code`` without the interpreter's teardown, when nothing is
    left running: no live non-daemon thread but this one. The ``atexit`` functions still
    run (the figure helper's end, multiprocessing's, the caches'), then stdout and stderr
    are flushed and the process leaves by ``os._exit``; what the teardown would do besides
    (free every object and module one by one: 0.2-0.3 s of a 2-core AMD EPYC after the
    demo, ~1 s on a 2-core Xeon, docs/benchmarks.md) the system does at once. Every file a
    command writes is closed (and staged, then renamed) before :func:`main` returns. With
    another thread still alive (a command that left workers to be joined), the ordinary
    ``sys.exit``."""
    import atexit
    import os
    import threading

    main_thread = threading.main_thread()
    if threading.current_thread() is not main_thread or any(
            t is not main_thread and not t.daemon and t.is_alive()
            for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`voxdose --help | head`)
            pass
    os._exit(int(code) & 0xFF)


if __name__ == "__main__":  # pragma: no cover - use `python -m voxdose` (one app instance)
    from voxdose.cli.app import entry_point as _entry_point

    _entry_point()
