"""Dose-volume histograms and per-structure statistics (computed in float64 on the CPU).

Definitions (voxel-based; on one grid every voxel has the same volume V_vox):

* volume = n V_vox (mL); mass = sum_i rho_i V_vox (g), rho from a density map (g/cm^3) or
  water (1 g/cm^3) when none is given;
* mean, min, max: over the structure's voxels, Gy (``mean_gy`` is the volume-weighted mean;
  ``mass_weighted_mean_gy`` = sum rho_i V d_i / mass is the MIRD mean absorbed dose, equal to
  ``mean_gy`` for uniform density);
* D_x: the minimum dose received by the hottest x % of the volume: with the n voxel doses
  sorted in decreasing order d_0 >= d_1 >= ..., D_x = d_(m-1), m = ceil(x n / 100)
  (so D_100 = min and D_x -> max as x -> 0); ``d_ml(v)`` is the same for the hottest v mL;
* V_x: the fraction (``v``), percentage (``v_percent``) or volume in mL (``v_ml``) of the
  structure receiving at least x Gy;
* cumulative DVH: V(d) = fraction of the structure's volume receiving >= d, evaluated at
  bin edges (exact at every edge: a step function of the voxel doses);
* differential DVH: volume (mL) whose dose lies in each bin [e_k, e_k+1).

Partial-volume voxels are not split: a voxel belongs wholly to the structure its label
names (labels resampled to the dose grid by majority vote), so every statistic is exact for
the voxelised structure, and the voxelisation is the partial-volume approximation. A
structure with no voxel gives a zero-volume row (all statistics 0), never an error.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

from ..core.backend import to_numpy
from ..core.errors import InputError
from ..core.grid import Image, LabelMap
from ..io.names import read_names_json  # noqa: F401  (public here since the first release)

CSV_COLUMNS = ("name", "volume_ml", "mean_gy", "min_gy", "max_gy", "d2_gy", "d50_gy", "d98_gy")
#: Water, used for masses when no density map is given, g/cm^3.
WATER_DENSITY_G_CM3 = 1.0


@dataclass(frozen=True, eq=False)
class DVH:
    """Dose statistics of one structure.

    ``doses_gy`` are its voxel doses sorted in decreasing order (float64);
    ``densities_g_cm3`` (optional) the voxel densities in the same order (None: water).
    """

    name: str
    voxel_volume_ml: float
    doses_gy: np.ndarray
    densities_g_cm3: np.ndarray | None = None

    @property
    def n_voxels(self) -> int:
        return int(self.doses_gy.size)

    @property
    def volume_ml(self) -> float:
        return self.n_voxels * self.voxel_volume_ml

    @property
    def mass_g(self) -> float:
        """Mass, g: sum of voxel densities x voxel volume (water if no density map)."""
        if self.densities_g_cm3 is None:
            return self.volume_ml * WATER_DENSITY_G_CM3
        return float(np.sum(self.densities_g_cm3)) * self.voxel_volume_ml

    @property
    def density_source(self) -> str:
        return "water (1 g/cm^3)" if self.densities_g_cm3 is None else "density map"

    @property
    def mean_gy(self) -> float:
        return float(self.doses_gy.mean()) if self.n_voxels else 0.0

    @property
    def mass_weighted_mean_gy(self) -> float:
        """Energy / mass = sum rho_i d_i / sum rho_i, Gy (equals ``mean_gy`` for water)."""
        if not self.n_voxels:
            return 0.0
        if self.densities_g_cm3 is None:
            return self.mean_gy
        w = float(np.sum(self.densities_g_cm3))
        return float(np.dot(self.densities_g_cm3, self.doses_gy) / w) if w > 0 else 0.0

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

    def d_ml(self, volume_ml: float) -> float:
        """D for the hottest ``volume_ml`` mL (e.g. D_2cc), Gy; the structure's min if it is
        smaller than ``volume_ml``."""
        if not volume_ml > 0:
            raise InputError(f"D_v needs a volume > 0 mL, got {volume_ml}")
        if not self.n_voxels:
            return 0.0
        return self.d(min(100.0, 100.0 * volume_ml / self.volume_ml))

    def v(self, dose_gy: float) -> float:
        """V_x: fraction of the volume receiving at least ``dose_gy`` Gy."""
        if not self.n_voxels:
            return 0.0
        return float(np.count_nonzero(self.doses_gy >= dose_gy)) / self.n_voxels

    def v_percent(self, dose_gy: float) -> float:
        """V_x in % of the structure's volume."""
        return 100.0 * self.v(dose_gy)

    def v_ml(self, dose_gy: float) -> float:
        """V_x in mL."""
        return self.v(dose_gy) * self.volume_ml

    def _edges(self, n_bins: int, max_dose_gy: float | None):
        if int(n_bins) < 1:
            raise InputError(f"a DVH needs at least 1 bin, got {n_bins}")
        top = self.max_gy if max_dose_gy is None else float(max_dose_gy)
        return np.linspace(0.0, top * 1.001 if top > 0 else 1.0, int(n_bins) + 1)

    def cumulative(self, n_bins: int = 200, max_dose_gy: float | None = None):
        """(dose bin edges Gy, fraction of volume >= each edge)."""
        edges = self._edges(n_bins, max_dose_gy)
        asc = self.doses_gy[::-1]
        frac = 1.0 - np.searchsorted(asc, edges, side="left") / max(self.n_voxels, 1)
        if not self.n_voxels:
            frac = np.zeros_like(edges)
        return edges, frac

    def differential(self, n_bins: int = 200, max_dose_gy: float | None = None):
        """(dose bin edges Gy, volume in each bin mL); bins [e_k, e_k+1), the last closed.

        The volumes sum to the structure's volume when the top edge >= max dose.
        """
        edges = self._edges(n_bins, max_dose_gy)
        counts, _ = np.histogram(self.doses_gy, bins=edges)
        return edges, counts * self.voxel_volume_ml

    def row(self) -> dict:
        """The CSV row (contract columns, :data:`CSV_COLUMNS`)."""
        if not self.n_voxels:  # an empty structure has no dose, not 0 Gy: blank fields
            return {"name": self.name, "volume_ml": 0.0, "mean_gy": None, "min_gy": None,
                    "max_gy": None, "d2_gy": None, "d50_gy": None, "d98_gy": None}
        return {"name": self.name, "volume_ml": self.volume_ml, "mean_gy": self.mean_gy,
                "min_gy": self.min_gy, "max_gy": self.max_gy, "d2_gy": self.d(2),
                "d50_gy": self.d(50), "d98_gy": self.d(98)}

    def to_dict(self, n_bins: int = 200, d_percents=(2, 5, 50, 95, 98),
                v_doses_gy=()) -> dict:
        """JSON-ready statistics plus cumulative and differential DVH curves."""
        edges, cum = self.cumulative(n_bins)
        _, diff = self.differential(n_bins)
        return {
            **self.row(),
            "n_voxels": self.n_voxels,
            "voxel_volume_ml": self.voxel_volume_ml,
            "mass_g": self.mass_g,
            "density": self.density_source,
            "mass_weighted_mean_gy": self.mass_weighted_mean_gy,
            "d_percent_gy": {f"D{_fmt(p)}": self.d(p) for p in d_percents},
            "v_gy_fraction": {f"V{_fmt(x)}Gy": self.v(x) for x in v_doses_gy},
            "cumulative": {"dose_gy": edges.tolist(), "volume_fraction": cum.tolist()},
            "differential": {"dose_bin_edges_gy": edges.tolist(), "volume_ml": diff.tolist()},
        }


def _fmt(x) -> str:
    return f"{float(x):g}"


def dvh_from_mask(name: str, dose_gy: np.ndarray, mask: np.ndarray, voxel_volume_ml: float,
                  density_g_cm3: np.ndarray | None = None) -> DVH:
    """One DVH from a dose array and a boolean mask on the same grid (float64, host)."""
    d = np.asarray(to_numpy(dose_gy), dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if d.shape != m.shape:
        raise InputError(f"dose {d.shape} and mask {m.shape} for '{name}' differ in shape")
    vals = d[m]
    order = np.argsort(vals, kind="stable")[::-1]
    rho = None
    if density_g_cm3 is not None:
        rho = np.asarray(to_numpy(density_g_cm3), dtype=np.float64)[m][order]
    return DVH(name, float(voxel_volume_ml), vals[order], rho)


def compute_dvhs(dose: Image, labels: LabelMap, density: Image | None = None) -> list[DVH]:
    """One DVH per named structure, sorted by label value (zero-volume structures give a
    zero-volume row). ``density``: optional density map (g/cm^3) on the dose grid."""
    if not dose.grid.same_as(labels.grid, tol_mm=1e-2):
        raise InputError(f"dose grid ({dose.grid.describe()}) and label grid "
                         f"({labels.grid.describe()}) differ; resample the labels to the dose")
    rho = None
    if density is not None:
        if not density.grid.same_as(dose.grid, tol_mm=1e-2):
            raise InputError(f"density grid ({density.grid.describe()}) and dose grid "
                             f"({dose.grid.describe()}) differ; resample the density map")
        rho = np.asarray(to_numpy(density.data), dtype=np.float64)
        if np.any(rho < 0) or not np.all(np.isfinite(rho)):
            raise InputError("density map has negative or non-finite values; give g/cm^3")
    d = np.asarray(to_numpy(dose.data), dtype=np.float64)
    lab = np.asarray(labels.data)
    return [dvh_from_mask(name, d, lab == value, dose.grid.voxel_volume_ml, rho)
            for value, name in sorted(labels.names.items())]


def dvh_csv(dvhs: list[DVH]) -> str:
    """CSV text, one row per structure, columns :data:`CSV_COLUMNS` (contract)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for h in dvhs:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else "" if v is None else v)
                    for k, v in h.row().items()})
    return buf.getvalue()


def dvh_json(dvhs: list[DVH], n_bins: int = 200, v_doses_gy=(), meta: dict | None = None
             ) -> dict:
    """JSON-ready document: units, definitions and one entry per structure."""
    return {
        "quantity": "dose-volume histograms",
        "units": {"dose": "Gy", "volume": "mL", "mass": "g"},
        "definitions": {
            "D_x": "minimum dose to the hottest x % of the volume (voxel-exact)",
            "V_x": "fraction of the volume receiving >= x Gy",
            "cumulative": "fraction of the volume receiving >= each dose edge",
            "differential": "volume (mL) with dose in [edge_k, edge_k+1)",
            "partial_volume": "none: each voxel belongs wholly to its label",
        },
        **({"meta": meta} if meta else {}),
        "structures": [h.to_dict(n_bins=n_bins, v_doses_gy=v_doses_gy) for h in dvhs],
    }


def names_from_labels(data: np.ndarray) -> dict[int, str]:
    """``label_<v>`` for every non-zero value present (used when no names file is given)."""
    return {int(v): f"label_{int(v)}" for v in np.unique(np.asarray(data)) if v != 0}


def empty_structure_warnings(dvhs: list[DVH]) -> list[str]:
    """One warning per named structure with no voxel on the dose grid."""
    return [f"structure '{h.name}' has no voxel on the dose grid: reported as empty "
            "(no dose), not as 0 Gy" for h in dvhs if not h.n_voxels]
