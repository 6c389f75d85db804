"""The whole chain: study -> activity series -> TIA -> dose -> DVHs -> results folder.

Used by ``voxdose run STUDY.toml`` and ``voxdose demo``. The work is done by the stage
functions of :mod:`voxdose.pipeline.stages` over a :class:`PipelineContext`; the runner times
each stage and opens its ``reporter`` stage (the CLI passes a Rich one). All outputs go
through a :class:`ResultsWriter` into a hidden staging folder that is moved into place only
when everything succeeded (no partial results); ``provenance.json`` lists what it wrote.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..analysis.dvh import DVH
from ..io.atomic import staged_directory
from ..study.images import clear_ct_cache
from .context import PipelineContext, PipelineOptions
from .stages import STAGES, WRITE_STAGE, run_stages
from .writer import ResultsWriter
from .writer import previous_outputs as _previous_outputs
from .writer import remove_stale as _remove_stale

__all__ = ["NullReporter", "PipelineResult", "run_pipeline"]


class NullReporter:
    """Reporter interface: ``stage(name, total)`` yields an ``advance(done, total)`` callable."""

    @contextmanager
    def stage(self, name: str, total: int = 1):
        yield lambda done=None, tot=None: None


@dataclass
class PipelineResult:
    out_dir: Path
    dvhs: dict[str, list[DVH]]
    files: list[str]
    timings_s: dict[str, float]
    provenance: dict = field(default_factory=dict)
    decisions: object = None
    comparison: list = field(default_factory=list)
    pvc: dict | None = None        # pvc.json (None without a partial-volume correction)


def run_pipeline(study_path, out_dir, device: str = "auto", reporter=None,
                 kernel_radius_mm: float | None = None, tia_model: str = "auto",
                 density_mode: str = "none", compare_nuclide: str | None = "auto",
                 figure_helper: bool = True) -> PipelineResult:
    """Run every stage on a study (path of study.toml, or a validated :class:`Study`);
    write results into ``out_dir``.

    kernel_radius_mm : voxel-kernel radius; default: the one rule of every entry point
        (:func:`voxdose.kernels.extent.kernel_extent`: all but 0.1 % of the energy per decay,
        at most the grid's extent; docs/defaults.md). The energy the kernel leaves out is
        reported in every dose sidecar and in provenance.
    density_mode : 'none' (water), 'scale' or 'mvs' (density from the reference CT).
    compare_nuclide : a second nuclide for the comparison ('auto': Y-90 for a Lu-177 study
        and Lu-177 otherwise; None: no comparison), dosed from the same biological kinetics
        with its own physical decay.
    figure_helper : on a CPU run, draw the figures in a helper process while the pipeline
        computes (:mod:`voxdose.report.render`); False: in this process.
    """
    from ..report.render import FigureRenderer

    rep = reporter or NullReporter()
    options = PipelineOptions(device=device, kernel_radius_mm=kernel_radius_mm,
                              tia_model=tia_model, density_mode=density_mode,
                              compare_nuclide=compare_nuclide,
                              figure_helper=bool(figure_helper))
    ctx = PipelineContext(study_path, Path(out_dir), options, figures=FigureRenderer())
    try:
        run_stages(ctx, STAGES, rep)
        previous = _previous_outputs(ctx.out_dir)
        with staged_directory(ctx.out_dir) as stage:
            ctx.writer = ResultsWriter(stage, renderer=ctx.figures)
            run_stages(ctx, [WRITE_STAGE], rep)
    finally:
        ctx.figures.close()
        clear_ct_cache()  # the run's CTs: not kept for the next run of a long-lived process
    files = ctx.writer.files
    _remove_stale(ctx.out_dir, previous, files)
    return PipelineResult(ctx.out_dir, ctx.dvhs, files, ctx.timings, ctx.provenance,
                          ctx.decisions, ctx.comparison, ctx.pvc)
