"""What the pipeline's stages share: the run's options and everything a stage produces."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PipelineOptions:
    """The user's choices for one run (see :func:`voxdose.pipeline.run.run_pipeline`)."""

    device: str = "auto"
    kernel_radius_mm: float | None = None
    tia_model: str = "auto"
    density_mode: str = "none"
    compare_nuclide: str | None = "auto"
    figure_helper: bool = True     # a CPU run may draw its figures in a helper process


def _no_progress(done=None, total=None) -> None:
    return None


@dataclass
class PipelineContext:
    """Inputs, options and the products of each stage, filled in stage by stage.

    A stage reads what earlier stages set and sets its own fields; ``advance`` is the
    progress callable of the reporter stage now open (set by the runner).
    """

    study_path: Any                      # path of study.toml, or a validated Study
    out_dir: Path
    options: PipelineOptions = field(default_factory=PipelineOptions)
    t_start: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    advance: Callable = _no_progress
    # validate
    study: Any = None                    # voxdose.study.load.Study
    backend: Any = None                  # voxdose.core.backend.Backend
    other_nuclide: str | None = None     # the comparison's second nuclide, if any
    # register + resample
    series: Any = None                   # ActivitySeries on the dose grid
    registrations: list = field(default_factory=list)
    labels: Any = None                   # LabelMap on the dose grid (majority vote, with
    #                                      the fractional occupancy from the label grid), or None
    ct_ref: Any = None                   # reference CT on the dose grid (None without CT)
    # TIA fit
    fit: Any = None                      # TiaFit
    tia: Any = None                      # Image, Bq*s per voxel
    tia_sigma: Any = None                # Image, standard uncertainty of the TIA
    organ_fits: list = field(default_factory=list)
    fit_warnings: list = field(default_factory=list)  # e.g. too few time points for a model
    # partial-volume correction ([pvc] method; pipeline/pvc_stage.py): it replaces tia,
    # tia_sigma, fit, labels, ct_ref and organ_fits by their label-grid versions
    nopvc: Any = None                    # the uncorrected results (a copy of this context
    #                                      after kernel, dose and analysis on the SPECT grid)
    pvc: dict | None = None              # its report (pvc.json), or None without correction
    # kernel
    point_kernel: Any = None
    voxel_kernel: Any = None
    kernel_extent: dict | None = None    # how the kernel radius was chosen (one rule)
    # dose
    density: Any = None                  # g/cm3 on the grid, or None (water)
    engine: Any = None                   # the kernel-convolution engine
    dose_kernel: Any = None              # Image, Gy (kernel convolution)
    dose_ldm: Any = None                 # Image, Gy (local deposition)
    tia_sigma_dose: Any = None           # tia_sigma as the dose sigma uses it (capped at
    #                                      MAX_RELATIVE_TIA_SIGMA x TIA; meta['capped'])
    dose_kernel_sigma: Any = None        # Image, Gy: sigma of dose_kernel (independent
    dose_ldm_sigma: Any = None           #   voxel TIA errors); and of dose_ldm
    # analysis
    dvhs: dict = field(default_factory=dict)
    dvh_uncertainty: Any = None          # DvhUncertainty of the kernel DVHs (mean sigmas,
    #                                      bands), or None
    decisions: Any = None
    comparison: list = field(default_factory=list)
    # figures (report/render.py): where they are drawn, and those final after the dose
    figures: Any = None                  # FigureRenderer (a helper process on the CPU)
    early_figures: dict | None = None    # name -> (plot function, args, keywords)
    late_figures: dict | None = None     # the same for the analysis' figures
    # write
    writer: Any = None                   # ResultsWriter on the staged folder
    provenance: dict = field(default_factory=dict)

    @property
    def nuclide(self):
        return self.study.nuclide

    @property
    def grid(self):
        """The TIA's and dose's grid: the series' (the SPECT's, or the CT's with
        [registration] grid = "ct"), the structures' after a partial-volume correction."""
        return self.tia.grid if self.tia is not None else self.series.grid

    @property
    def tag(self) -> str:
        """The nuclide in file names: 'lu177'."""
        return self.nuclide.name.replace("-", "").lower()
