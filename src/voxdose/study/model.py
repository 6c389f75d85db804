"""What a validated study is: :class:`Study` and its :class:`TimePoint` s (built by
``study.load.load_study``; keyword arguments only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..core.nuclide import Nuclide


@dataclass(frozen=True, kw_only=True)
class TimePoint:
    time_h: float
    spect: Path
    ct: Path | None
    # DICOM inputs only (None for image files):
    spect_dicom: object = None          # io.dicom_read.SpectHeader
    ct_dicom: object = None             # io.dicom_read.CTHeader
    # set for every time point by load_study (image files: from the study file and the
    # JSON sidecar, study/sidecars.py; DICOM: from the tags)
    to_bq_ml: float | None = None       # (mapped) pixel value x this = Bq/mL
    decay_undo: float | None = None     # x this: activity at acquisition
    info: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True, kw_only=True)
class Study:
    """A validated study. Times in h after administration, activity in MBq."""

    path: Path
    name: str
    nuclide: Nuclide
    administered_activity_mbq: float
    reference_index: int
    spect_to_bq_ml: float  # multiply SPECT pixel values by this to get Bq/mL
    decay_corrected: bool
    timepoints: tuple[TimePoint, ...]
    labels: Path | None
    names: dict[int, str]
    sex: str = "male"
    plan_limits_gy: dict | None = None
    plan_after_h: dict | None = None
    rtstruct: object = None             # io.rtstruct.RTStructHeader (instead of labels)
    administration: datetime | None = None
    info: dict = field(default_factory=dict, compare=False)
    s_table: Path | None = None         # user S-values (organ,S mGy/(MBq s)) for the MIRD check
    registration: str = "rigid"         # rigid | affine | bspline (after rigid)
    dose_grid: str = "spect"            # spect (reference SPECT grid) | ct (reference CT grid)
    dpk: Path | None = None             # user's radial DPK CSV (r_mm,dose_Gy_per_decay)
    allow_large_motion: bool = False    # an implausible registration: warning, not error
    # one time point only ([kinetics]): 'physical' | 'effective', and the half-life (h) that
    # integrates it, a(t1) exp(-ln2 (t - t1) / T) (T = the physical half-life for 'physical')
    single_time_point: str | None = None
    stp_half_life_h: float | None = None
    # partial-volume correction ([spect] resolution_fwhm_mm, [pvc]; docs/pvc.md): the
    # method, the SPECT's FWHM (x, y, z) mm, and the RC table (method rc), all checked
    pvc_method: str = "none"            # none | rc | gtm | rbv | iy
    resolution_fwhm_mm: tuple[float, float, float] | None = None
    pvc_rc_table: Path | None = None

    @property
    def times_h(self) -> list[float]:
        return [tp.time_h for tp in self.timepoints]

    @property
    def has_ct(self) -> bool:
        return all(tp.ct is not None for tp in self.timepoints)
