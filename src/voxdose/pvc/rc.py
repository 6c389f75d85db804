"""Recovery-coefficient (RC) correction from a sphere-phantom measurement.

The table
    A CSV file ``volume_ml,recovery`` (header required, one row per sphere, at least two),
    measured by the user on a sphere phantom imaged and reconstructed as the patient
    (docs/pvc.md): ``RC(V) = (mean of the SPECT over the sphere's VOI) / (true concentration)``
    with a cold background (or background-subtracted, :func:`recovery_from_phantom`).
    Checked: volumes > 0 and distinct, recoveries in (0, 1], RC non-decreasing with volume
    (a larger sphere never recovers less; a table that says so is a measurement error).

Interpolation
    Linear in ``log V`` between the rows,
    ``RC(V) = RC_k + (RC_{k+1} - RC_k) ln(V / V_k) / ln(V_{k+1} / V_k)``; outside the
    table's range the nearest row's RC is used (flagged ``extrapolated``: the curve is not
    known there).

Applied to organ activities
    ``A_corr,j = A_j / RC(V_j)``, with ``A_j = t_j V_j`` the activity measured in structure j
    (occupancy-weighted mean ``t_j`` of the SPECT over the structure times its volume on the
    label grid).

Applied to a voxel map (VOI-level rescaling, e.g. of the TIA map on the SPECT grid)
    ``s(v) = 1 + sum_j w_j(v) (1 / RC(V_j) - 1)``, ``map_corr(v) = s(v) map(v)``: voxels fully
    inside structure j are scaled by ``1/RC_j``, voxels outside every structure are unchanged,
    a boundary voxel by the occupancy-weighted blend.  The map gains exactly
    ``sum_v w_j(v) map(v) (1/RC_j - 1) = A_j (1/RC_j - 1)`` per structure (its missing
    activity), spread over the structure's voxels in proportion to what they show; as a
    boundary voxel's activity is uniform over the whole voxel, the occupancy-weighted mean of
    the rescaled map over the structure stays below ``A_corr,j / V_j`` (sphere phantom,
    4 mm voxels: 0.80 instead of 0.98 of the truth for 1 mL, 0.99 vs 1.00 for 100 mL).  The
    reported ``A_corr,j`` is the structure's corrected activity.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError

COLUMNS = ("volume_ml", "recovery")


@dataclass(frozen=True)
class RcTable:
    """A validated recovery curve: volumes (mL, increasing) and recoveries in (0, 1]."""

    volume_ml: np.ndarray
    recovery: np.ndarray
    source: str = ""

    def __post_init__(self):
        check_rc_table(self.volume_ml, self.recovery, self.source or "the RC table")

    def recovery_at(self, volume_ml) -> np.ndarray:
        """RC at ``volume_ml`` (linear in log volume, clamped to the table's range)."""
        v = np.clip(np.asarray(volume_ml, dtype=np.float64), self.volume_ml[0],
                    self.volume_ml[-1])
        return np.interp(np.log(v), np.log(self.volume_ml), self.recovery)

    def extrapolated(self, volume_ml) -> np.ndarray:
        """True where ``volume_ml`` lies outside the table's volume range."""
        v = np.asarray(volume_ml, dtype=np.float64)
        return (v < self.volume_ml[0] * (1 - 1e-12)) | (v > self.volume_ml[-1] * (1 + 1e-12))

    def to_dict(self) -> dict:
        return {"source": self.source, "volume_ml": self.volume_ml.tolist(),
                "recovery": self.recovery.tolist()}


def check_rc_table(volume_ml, recovery, source: str = "the RC table") -> None:
    """Refuse an RC curve that is not usable (module docstring). Raises InputError."""
    v = np.asarray(volume_ml, dtype=np.float64)
    r = np.asarray(recovery, dtype=np.float64)
    if v.ndim != 1 or v.shape != r.shape or v.size < 2:
        raise InputError(f"{source}: needs at least two rows volume_ml,recovery (one per "
                         "phantom sphere)")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(r))):
        raise InputError(f"{source}: every volume_ml and recovery must be a finite number")
    if np.any(v <= 0):
        raise InputError(f"{source}: volume_ml must be > 0 mL, got {v[v <= 0][0]:g}")
    if np.any(np.diff(v) <= 0):
        raise InputError(f"{source}: volume_ml must be strictly increasing (sorted, no "
                         "repeats); sort the rows by volume")
    bad = (r <= 0) | (r > 1)
    if np.any(bad):
        raise InputError(f"{source}: recovery {r[bad][0]:g} is outside (0, 1]; a recovery is "
                         "measured mean / true concentration of a sphere in a cold background")
    drop = np.flatnonzero(np.diff(r) < 0)
    if drop.size:
        k = int(drop[0])
        raise InputError(f"{source}: recovery is not monotone: {r[k]:g} at {v[k]:g} mL but "
                         f"{r[k + 1]:g} at {v[k + 1]:g} mL; a larger sphere cannot recover "
                         "less: check the measurement")


def read_rc_table(path) -> RcTable:
    """Read and check an RC table CSV (columns volume_ml,recovery)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"RC table not found: {p}; give a CSV with columns volume_ml,recovery")
    try:
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read RC table {p}: {exc}") from None
    rows = [r for r in rows if any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    header = tuple(c.strip() for c in rows[0]) if rows else ()
    if header != COLUMNS:
        raise InputError(f"{p}: the header must be 'volume_ml,recovery', got "
                         f"{','.join(header) or 'nothing'}")
    vols, recs = [], []
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != 2:
            raise InputError(f"{p}: row {i} has {len(r)} fields; give volume_ml,recovery")
        try:
            vols.append(float(r[0]))
            recs.append(float(r[1]))
        except ValueError:
            raise InputError(f"{p}: row {i} ({','.join(r)}) is not two numbers") from None
    order = np.argsort(vols, kind="stable") if vols else []
    v = np.asarray(vols)[order] if vols else np.asarray(vols)
    rc = np.asarray(recs)[order] if recs else np.asarray(recs)
    return RcTable(v, rc, str(p))


def write_rc_table(path, volume_ml, recovery) -> Path:
    """Write an RC table CSV (sorted by volume); checked first."""
    from ..io.atomic import write_text

    order = np.argsort(np.asarray(volume_ml, dtype=np.float64))
    v = np.asarray(volume_ml, dtype=np.float64)[order]
    r = np.asarray(recovery, dtype=np.float64)[order]
    check_rc_table(v, r, str(path))
    lines = [",".join(COLUMNS)] + [f"{a:.6g},{b:.6f}" for a, b in zip(v, r)]
    write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


def recovery_from_phantom(observed_bq_ml, true_bq_ml, background_bq_ml: float = 0.0
                          ) -> np.ndarray:
    """RC of phantom spheres: ``(t_j - b) / (c_j - b)`` (``t_j``: observed VOI means,
    ``c_j``: true sphere concentrations, ``b``: background concentration)."""
    t = np.asarray(observed_bq_ml, dtype=np.float64)
    c = np.asarray(true_bq_ml, dtype=np.float64)
    if np.any(c - background_bq_ml <= 0):
        raise InputError("sphere concentrations must exceed the background to measure a "
                         "recovery")
    return (t - background_bq_ml) / (c - background_bq_ml)


def voxel_scale(weights, recovery) -> np.ndarray:
    """``s(v) = 1 + sum_j w_j(v) (1 / RC_j - 1)`` (module docstring); ``weights`` (n, ...)
    are the structures' occupancies, ``recovery`` (n,) their RCs."""
    rc = np.asarray(recovery, dtype=np.float64)
    if np.any(~np.isfinite(rc)) or np.any(rc <= 0):
        raise ValueError("recoveries must be finite and > 0")
    s = np.ones(np.shape(weights)[1:], dtype=np.float64)
    for w, r in zip(weights, rc):
        if r != 1.0:
            s += w.astype(np.float64) * (1.0 / r - 1.0)
    return s


def corrected_activity_bq(observed_bq_ml, volume_ml, recovery) -> np.ndarray:
    """``A_corr = t V / RC`` per structure, Bq."""
    return (np.asarray(observed_bq_ml, dtype=np.float64) * np.asarray(volume_ml)
            / np.asarray(recovery, dtype=np.float64))

