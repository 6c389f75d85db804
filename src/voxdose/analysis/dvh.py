"""Dose-volume histograms and per-structure statistics (computed in float64 on the CPU).

Definitions (voxel-based, every voxel of a structure has the same volume on one grid):

* mean, min, max: over the structure's voxels, Gy;
* D_x: the minimum dose received by the hottest x % of the volume: with the n voxel doses
  sorted in decreasing order d_0 >= d_1 >= ..., D_x = d_(m-1), m = ceil(x n / 100)
  (so D_100 = min and D_x -> max as x -> 0);
* cumulative DVH: V(d) = fraction of the structure's volume receiving >= d.

Partial-volume voxels are not split here: a voxel belongs wholly to the structure its
label names (labels resampled to the dose grid by majority vote).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

from ..backend import to_numpy
from ..errors import InputError
from ..grid import Image, LabelMap

CSV_COLUMNS = ("name", "volume_ml", "mean_gy", "min_gy", "max_gy", "d2_gy", "d50_gy", "d98_gy")


@dataclass(frozen=True, eq=False)
class DVH:
    """Dose statistics of one structure; ``doses_gy`` are its voxel doses, sorted decreasing."""

    name: str
    voxel_volume_ml: float
    doses_gy: np.ndarray

    @property
    def n_voxels(self) -> int:
        return int(self.doses_gy.size)

    @property
    def volume_ml(self) -> float:
        return self.n_voxels * self.voxel_volume_ml

    @property
    def mean_gy(self) -> float:
        return float(self.doses_gy.mean()) if self.n_voxels else 0.0

    @property
    def min_gy(self) -> float:
        return float(self.doses_gy[-1]) if self.n_voxels else 0.0

    @property
    def max_gy(self) -> float:
        return float(self.doses_gy[0]) if self.n_voxels else 0.0

    def d(self, percent: float) -> float:
        """D_x in Gy: minimum dose to the hottest ``percent`` % of the volume."""
        if not 0 < percent <= 100:
            raise InputError(f"D_x needs 0 < x <= 100, got {percent}")
        if not self.n_voxels:
            return 0.0
        m = max(1, math.ceil(percent * self.n_voxels / 100.0 - 1e-9))
        return float(self.doses_gy[m - 1])

    def v(self, dose_gy: float) -> float:
        """V_x: fraction of the volume receiving at least ``dose_gy`` Gy."""
        if not self.n_voxels:
            return 0.0
        return float(np.count_nonzero(self.doses_gy >= dose_gy)) / self.n_voxels

    def cumulative(self, n_bins: int = 200):
        """(dose bin edges Gy, fraction of volume >= each edge)."""
        top = self.max_gy if self.n_voxels else 1.0
        edges = np.linspace(0.0, top * 1.001 if top > 0 else 1.0, n_bins + 1)
        asc = self.doses_gy[::-1]
        frac = 1.0 - np.searchsorted(asc, edges, side="left") / max(self.n_voxels, 1)
        return edges, frac

    def row(self) -> dict:
        return {"name": self.name, "volume_ml": self.volume_ml, "mean_gy": self.mean_gy,
                "min_gy": self.min_gy, "max_gy": self.max_gy, "d2_gy": self.d(2),
                "d50_gy": self.d(50), "d98_gy": self.d(98)}


def compute_dvhs(dose: Image, labels: LabelMap) -> list[DVH]:
    """One DVH per named structure (zero-volume structures give a zero-volume row)."""
    if not dose.grid.same_as(labels.grid, tol_mm=1e-2):
        raise InputError(f"dose grid ({dose.grid.describe()}) and label grid "
                         f"({labels.grid.describe()}) differ; resample the labels to the dose")
    d = np.asarray(to_numpy(dose.data), dtype=np.float64)
    lab = np.asarray(labels.data)
    out = []
    for value, name in sorted(labels.names.items()):
        vals = np.sort(d[lab == value])[::-1]
        out.append(DVH(name, dose.grid.voxel_volume_ml, vals))
    return out


def dvh_csv(dvhs: list[DVH]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for h in dvhs:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in h.row().items()})
    return buf.getvalue()
