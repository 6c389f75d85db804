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


def _run(study_path: Path, out: Path, device: str, t_start: float,
         density_mode: str = "none") -> None:
    from ..core.backend import DEVICES
    from ..core.errors import InputError
    from ..study.load import load_study
    from ..pipeline.run import run_pipeline

    if device not in DEVICES:
        raise InputError(f"unknown device '{device}'; choose one of {', '.join(DEVICES)}")
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
    console.print(f"results in [bold]{out}[/]: {', '.join(result.files)}")
    console.print(f"total time {time.perf_counter() - t_start:.1f} s "
                  f"(device: {result.provenance['device']})")


@app.command()
def demo(
    out_dir: Path = typer.Argument(Path("voxdose-demo"), help="folder for study/ and results/"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    small: bool = typer.Option(False, "--small", help="coarse grid (4.8 mm CT, 9.6 mm SPECT): "
                               "the whole demo in seconds"),
    activity_mbq: float = typer.Option(7400.0, "--activity-mbq", min=1e-3,
                                       help="administered activity, MBq (default 7.4 GBq)"),
    seed: int = typer.Option(20161, help="random seed of the phantom's noise and misalignment"),
    density_mode: str = typer.Option("none", help="none (water), scale (dose x 1/rho) or mvs "
                                     "(density-binned kernels); density from the CT (g/cm^3)"),
):
    """Build the synthetic patient study (Lu-177 CXCR4 ligand, SPECT/CT at 1-168 h) in
    OUT_DIR/study, run the whole pipeline into OUT_DIR/results, print a dose table."""
    from ..phantom.study import PhantomConfig, build_study

    t0 = time.perf_counter()
    cfg = (PhantomConfig.small if small else PhantomConfig)(
        administered_activity_mbq=activity_mbq, seed=seed)
    with _progress() as prog:
        task = prog.add_task("synthetic study", total=len(cfg.times_h))
        study = build_study(out_dir / "study", cfg,
                            progress=lambda d, t: prog.update(task, completed=d, total=t))
    _run(study, out_dir / "results", device, t0, density_mode)


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
    from . import analysis, dicom, dose, kernels, tia  # noqa: F401


_register_commands()


#: Exit code of an interrupted command (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def _interrupted() -> int:
    err_console.print("voxdose: interrupted: nothing was written (results are staged and "
                      "moved into place only when a command completes)", highlight=False,
                      soft_wrap=True, markup=False)
    return EXIT_INTERRUPTED


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
        err_console.print(f"voxdose: error: {exc}", highlight=False, soft_wrap=True,
                          markup=False)
        return 2
    except (typer.Exit, SystemExit) as exc:  # --help, click usage errors handled below
        return int(getattr(exc, "exit_code", getattr(exc, "code", 0)) or 0)
    except Exception as exc:  # usage errors of Typer's (vendored) Click: show and exit
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return int(exc.exit_code)
        if type(exc).__name__ == "Abort":  # Click turns Ctrl-C into Abort
            if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
                return _interrupted()
            return 1
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover - use `python -m voxdose` (one app instance)
    from voxdose.cli.app import main as _main

    sys.exit(_main())
