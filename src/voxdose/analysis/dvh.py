"""Dose-volume histograms and per-structure statistics (each structure's voxels selected
and sorted on the dose's device; the statistics in float64 on the host, from the sorted
doses).

Every voxel i of a structure carries a weight f_i in (0, 1]: the fraction of its volume the
structure fills (:mod:`voxdose.imaging.occupancy`, computed from the label grid), or 1 for
whole voxels (labels drawn on the dose grid itself). On one grid every voxel has the same
volume V_vox. Definitions:

* volume = sum_i f_i V_vox (mL); mass = sum_i f_i rho_i V_vox (g), rho from a density map
  (g/cm^3) or water (1 g/cm^3) when none is given;
* mean = sum_i f_i d_i / sum_i f_i (Gy, the volume-weighted mean); ``mass_weighted_mean_gy``
  = sum_i f_i rho_i d_i / sum_i f_i rho_i is the MIRD mean absorbed dose (equal to the mean
  for uniform density); min, max: over the voxels the structure touches (f_i > 0);
* D_x: the minimum dose received by the hottest x % of the volume, i.e. the highest dose d
  such that the volume receiving >= d is at least x % of the structure's volume: with the
  voxel doses sorted in decreasing order d_0 >= d_1 >= ... and W_j = sum_{k<=j} f_k,
  D_x = d_j for the smallest j with W_j >= x W / 100 (W = sum f). For f_i = 1 this is
  the whole-voxel D_x = d_(m-1), m = ceil(x n / 100) (D_100 = min, D_x -> max as x -> 0);
  ``d_ml(v)`` is the same for the hottest v mL;
* V_x = sum_{i: d_i >= x} f_i / sum_i f_i: the fraction (``v``), percentage (``v_percent``)
  or volume in mL (``v_ml``) of the structure receiving at least x Gy;
* cumulative DVH: V(d) = fraction of the structure's volume receiving >= d, evaluated at
  bin edges (exact at every edge: a step function of the voxel doses, steps f_i / W);
* differential DVH: volume (mL) whose dose lies in each bin [e_k, e_k+1), sum f_i V_vox.

Partial-volume voxels are split by their fraction: a voxel half filled by the liver adds
half a voxel to the liver's volume, mass and histogram, so the volumes on a coarse (SPECT)
dose grid equal the volumes drawn on the label (CT) grid, whatever the voxel sizes. The
dose inside a voxel is taken as uniform (its voxel value): a boundary voxel's dose averages
the structure and what surrounds it, and now counts at its fractional volume, so on a
coarse grid the cold tail (D98) holds those averaged doses. Fractions below
:data:`FRACTION_MIN` (round-off at coinciding voxel faces) are ignored. A structure with
no voxel gives a zero-volume row (all statistics 0), never an error.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

from ..core.backend import backend_of, to_numpy
from ..core.errors import InputError
from ..core.grid import Image, LabelMap
from ..imaging.occupancy import fractional_occupancy
from ..io.names import read_names_json  # noqa: F401  (public here since the first release)

CSV_COLUMNS = ("name", "volume_ml", "mean_gy", "min_gy", "max_gy", "d2_gy", "d50_gy", "d98_gy")
#: Water, used for masses when no density map is given, g/cm^3.
WATER_DENSITY_G_CM3 = 1.0
#: Voxels a structure fills to less than this fraction are not part of it (round-off).
FRACTION_MIN = 1e-6
#: How the DVH's voxels were weighted when the labels are on the dose grid itself.
WHOLE_VOXELS = "whole voxels (labels on the dose grid)"
#: A structure whose dose-grid volume is below this fraction of its label-grid volume
#: lies partly outside the dose grid (warned).
COVERAGE_WARN = 0.99


@dataclass(frozen=True, eq=False)
class DVH:
    """Dose statistics of one structure.

    ``doses_gy`` are its voxel doses sorted in decreasing order (float64);
    ``densities_g_cm3`` (optional) the voxel densities in the same order (None: water);
    ``weights`` (optional) the fraction f_i of each voxel the structure fills, same order
    (None: whole voxels, f_i = 1); ``method`` says how the weights were obtained;
    ``label_grid_volume_ml`` (optional) the structure's volume on its own label grid.
    """

    name: str
    voxel_volume_ml: float
    doses_gy: np.ndarray
    densities_g_cm3: np.ndarray | None = None
    weights: np.ndarray | None = None
    method: str = WHOLE_VOXELS
    label_grid_volume_ml: float | None = None

    @property
    def n_voxels(self) -> int:
        """Voxels the structure touches (f > 0)."""
        return int(self.doses_gy.size)

    @property
    def n_voxels_partial(self) -> int:
        """Voxels the structure fills only in part (0 < f < 1)."""
        return 0 if self.weights is None else int(np.count_nonzero(self.weights < 1.0))

    @property
    def voxel_equivalents(self) -> float:
        """W = sum_i f_i (the number of voxels for whole voxels)."""
        return float(self.n_voxels) if self.weights is None else float(self.weights.sum())

    def _cum_weights(self) -> np.ndarray:
        """W_j = sum_{k<=j} f_k in decreasing dose order."""
        if self.weights is None:
            return np.arange(1, self.n_voxels + 1, dtype=np.float64)
        return np.cumsum(self.weights)

    @property
    def volume_ml(self) -> float:
        """sum_i f_i V_vox, mL."""
        return self.voxel_equivalents * self.voxel_volume_ml

    @property
    def mass_g(self) -> float:
        """Mass, g: sum_i f_i rho_i V_vox (water if no density map)."""
        if self.densities_g_cm3 is None:
            return self.volume_ml * WATER_DENSITY_G_CM3
        rho = self.densities_g_cm3 if self.weights is None else \
            self.densities_g_cm3 * self.weights
        return float(np.sum(rho)) * self.voxel_volume_ml

    @property
    def density_source(self) -> str:
        return "water (1 g/cm^3)" if self.densities_g_cm3 is None else "density map"

    @property
    def mean_gy(self) -> float:
        """sum_i f_i d_i / sum_i f_i, Gy."""
        if not self.n_voxels:
            return 0.0
        if self.weights is None:
            return float(self.doses_gy.mean())
        w = self.voxel_equivalents
        return float(np.dot(self.weights, self.doses_gy) / w) if w > 0 else 0.0

    @property
    def mass_weighted_mean_gy(self) -> float:
        """Energy / mass = sum f_i rho_i d_i / sum f_i rho_i, Gy (``mean_gy`` for water)."""
        if not self.n_voxels:
            return 0.0
        if self.densities_g_cm3 is None:
            return self.mean_gy
        rho = self.densities_g_cm3 if self.weights is None else \
            self.densities_g_cm3 * self.weights
        w = float(np.sum(rho))
        return float(np.dot(rho, self.doses_gy) / w) if w > 0 else 0.0

    @property
    def min_gy(self) -> float:
        return float(self.doses_gy[-1]) if self.n_voxels else 0.0

    @property
    def max_gy(self) -> float:
        return float(self.doses_gy[0]) if self.n_voxels else 0.0

    def d(self, percent: float) -> float:
        """D_x in Gy: minimum dose to the hottest ``percent`` % of the volume (d_j for the
        smallest j with W_j >= x W / 100)."""
        if not 0 < percent <= 100:
            raise InputError(f"D_x needs 0 < x <= 100, got {percent}")
        if not self.n_voxels:
            return 0.0
        if self.weights is None:
            m = max(1, math.ceil(percent * self.n_voxels / 100.0 - 1e-9))
            return float(self.doses_gy[m - 1])
        cw = self._cum_weights()
        target = percent * cw[-1] / 100.0 - 1e-9
        j = int(np.searchsorted(cw, target, side="left"))
        return float(self.doses_gy[min(j, self.n_voxels - 1)])

    def d_ml(self, volume_ml: float) -> float:
        """D for the hottest ``volume_ml`` mL (e.g. D_2cc), Gy; the structure's min if it is
        smaller than ``volume_ml``."""
        if not volume_ml > 0:
            raise InputError(f"D_v needs a volume > 0 mL, got {volume_ml}")
        if not self.n_voxels:
            return 0.0
        return self.d(min(100.0, 100.0 * volume_ml / self.volume_ml))

    def _fraction_at_least(self, doses_gy) -> np.ndarray:
        """sum_{i: d_i >= d} f_i / sum_i f_i for each d in ``doses_gy``."""
        d = np.atleast_1d(np.asarray(doses_gy, dtype=np.float64))
        if not self.n_voxels:
            return np.zeros(d.shape)
        k = np.searchsorted(-self.doses_gy, -d, side="right")  # voxels with dose >= d
        cw = np.concatenate([[0.0], self._cum_weights()])
        return cw[k] / cw[-1]

    def v(self, dose_gy: float) -> float:
        """V_x: fraction of the volume receiving at least ``dose_gy`` Gy."""
        return float(self._fraction_at_least(dose_gy)[0])

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
        return edges, self._fraction_at_least(edges)

    def differential(self, n_bins: int = 200, max_dose_gy: float | None = None):
        """(dose bin edges Gy, volume in each bin mL); bins [e_k, e_k+1), the last closed.

        The volumes (sum f_i V_vox per bin) sum to the structure's volume when the top
        edge >= max dose.
        """
        edges = self._edges(n_bins, max_dose_gy)
        counts, _ = np.histogram(self.doses_gy, bins=edges, weights=self.weights)
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
        extra = ({} if self.label_grid_volume_ml is None
                 else {"label_grid_volume_ml": self.label_grid_volume_ml})
        return {
            **self.row(),
            "n_voxels": self.n_voxels,
            "n_voxels_partial": self.n_voxels_partial,
            **extra,
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
    """One DVH from a dose array and a boolean mask on the same grid (float64; selected and
    sorted on the dose's device, the DVH's arrays on the host)."""
    be = backend_of(dose_gy)
    d = be.asarray(dose_gy, dtype=be.xp.float64)
    m = be.asarray(mask, dtype=bool)
    if d.shape != m.shape:
        raise InputError(f"dose {d.shape} and mask {m.shape} for '{name}' differ in shape")
    vals = d[m]
    if density_g_cm3 is None:  # the doses alone: a sort, no permutation to carry
        return DVH(name, float(voxel_volume_ml), to_numpy(be.xp.sort(vals)[::-1]), None)
    # equal doses in any order give the same DVH (every statistic is a sum over the voxels
    # at or above a dose): the default sort, 3-4x faster than a stable one
    order = be.xp.argsort(vals)[::-1]
    rho = to_numpy(be.asarray(density_g_cm3, dtype=be.xp.float64)[m][order])
    return DVH(name, float(voxel_volume_ml), to_numpy(vals[order]), rho)


def dvh_from_fraction(name: str, dose_gy: np.ndarray, fraction: np.ndarray,
                      voxel_volume_ml: float, density_g_cm3: np.ndarray | None = None,
                      method: str = WHOLE_VOXELS,
                      label_grid_volume_ml: float | None = None) -> DVH:
    """One DVH from a dose array and the structure's volume fraction f (0..1) of every voxel,
    on the same grid: voxels with f >= :data:`FRACTION_MIN` count with weight f (weights
    dropped when every f is 1, which is then exactly :func:`dvh_from_mask`). Selected and
    sorted on the dose's device."""
    be = backend_of(dose_gy)
    xp = be.xp
    d = be.asarray(dose_gy, dtype=xp.float64)
    f = be.asarray(fraction, dtype=xp.float64)
    if d.shape != f.shape:
        raise InputError(f"dose {d.shape} and fraction {f.shape} for '{name}' differ in shape")
    if f.size and (not bool(xp.all(xp.isfinite(f))) or float(f.min()) < 0
                   or float(f.max()) > 1 + 1e-6):
        raise InputError(f"volume fractions of '{name}' must lie in [0, 1]")
    sel = f >= FRACTION_MIN
    vals = d[sel]
    order = xp.argsort(vals)[::-1]  # ties in any order: the same DVH (dvh_from_mask)
    w = to_numpy(xp.minimum(f[sel][order], 1.0))
    rho = None
    if density_g_cm3 is not None:
        rho = to_numpy(be.asarray(density_g_cm3, dtype=xp.float64)[sel][order])
    return DVH(name, float(voxel_volume_ml), to_numpy(vals[order]), rho,
               None if np.all(w == 1.0) else w, method, label_grid_volume_ml)


def occupancy_method(occupancy) -> str:
    """The text dvh.json reports for DVHs weighted by ``occupancy``'s fractions."""
    return f"fractional occupancy from the label grid: {occupancy.method}"


def structure_fractions(labels: LabelMap, grid) -> tuple[dict | None, str, dict | None]:
    """The structures' volume fractions on ``grid``: (value -> fraction array, or None for
    whole voxels; the method text; value -> label-grid volume mL, or None).

    Labels on ``grid`` give their occupancy (or whole voxels without one); labels on any
    other grid are brought onto ``grid`` by :func:`fractional_occupancy` (exact box overlap
    for grids sharing their axes), so each volume is kept: sum_v f(v) V_vox = n V_label.
    """
    if labels.grid.same_as(grid, tol_mm=1e-2):
        if labels.occupancy is None:
            return None, WHOLE_VOXELS, None
        return labels.occupancy.fractions, occupancy_method(labels.occupancy), None
    occ = fractional_occupancy(labels.data, labels.grid, grid, labels.names)
    lab = np.asarray(labels.data)
    vols = {v: float(np.count_nonzero(lab == v)) * labels.grid.voxel_volume_ml
            for v in labels.names}
    return occ.fractions, occupancy_method(occ), vols


def _density_array(density: Image | None, dose: Image):
    """The density map (float64) on the dose's device, checked."""
    if density is None:
        return None
    if not density.grid.same_as(dose.grid, tol_mm=1e-2):
        raise InputError(f"density grid ({density.grid.describe()}) and dose grid "
                         f"({dose.grid.describe()}) differ; resample the density map")
    be = backend_of(dose.data)
    rho = be.asarray(density.data, dtype=be.xp.float64)
    if bool(be.xp.any(rho < 0)) or not bool(be.xp.all(be.xp.isfinite(rho))):
        src = density.meta.get("source") if isinstance(density.meta, dict) else None
        raise InputError(f"{src or 'density map'}: the density map has negative or "
                         f"non-finite values (min {float(be.xp.min(rho)):.4g}); give a mass "
                         "density in g/cm^3 (a CT in HU is not a density map)")
    return rho


def compute_dvhs(dose: Image, labels: LabelMap, density: Image | None = None) -> list[DVH]:
    """One DVH per named structure, sorted by label value (zero-volume structures give a
    zero-volume row). ``density``: optional density map (g/cm^3) on the dose grid.

    Voxel weights from :func:`structure_fractions`: the labels' occupancy on the dose grid,
    whole voxels for labels drawn on the dose grid, or the fractional occupancy computed
    here for labels on another grid (e.g. the CT grid of a SPECT dose). On the dose's
    device (the labels and fractions are copied there)."""
    rho = _density_array(density, dose)
    be = backend_of(dose.data)
    d = be.asarray(dose.data, dtype=be.xp.float64)
    vv = dose.grid.voxel_volume_ml
    fractions, method, label_vols = structure_fractions(labels, dose.grid)
    if fractions is None:
        lab = be.asarray(labels.data)
        return [dvh_from_mask(name, d, lab == value, vv, rho)
                for value, name in sorted(labels.names.items())]
    return [dvh_from_fraction(name, d, fractions[value], vv, rho, method,
                              None if label_vols is None else label_vols[value])
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
            "D_x": "minimum dose to the hottest x % of the volume (voxel-exact, weighted "
                   "by each voxel's volume fraction)",
            "V_x": "fraction of the volume receiving >= x Gy",
            "cumulative": "fraction of the volume receiving >= each dose edge",
            "differential": "volume (mL) with dose in [edge_k, edge_k+1)",
            "partial_volume": _partial_volume_text(dvhs),
        },
        "voxel_weights": sorted({h.method for h in dvhs}),
        **({"meta": meta} if meta else {}),
        "structures": [h.to_dict(n_bins=n_bins, v_doses_gy=v_doses_gy) for h in dvhs],
    }


def _partial_volume_text(dvhs: list[DVH]) -> str:
    if all(h.method == WHOLE_VOXELS for h in dvhs):
        return "none: the labels are on the dose grid; each voxel belongs wholly to its label"
    return ("each voxel counts with the fraction f of its volume the structure fills "
            "(volume = sum f V_voxel, mass = sum f rho V_voxel, statistics weighted by f)")


def names_from_labels(data: np.ndarray) -> dict[int, str]:
    """``label_<v>`` for every non-zero value present (used when no names file is given)."""
    return {int(v): f"label_{int(v)}" for v in np.unique(np.asarray(data)) if v != 0}


def empty_structure_warnings(dvhs: list[DVH]) -> list[str]:
    """One warning per named structure with no voxel on the dose grid."""
    return [f"structure '{h.name}' has no voxel on the dose grid: reported as empty "
            "(no dose), not as 0 Gy" for h in dvhs if not h.n_voxels]


def coverage_warnings(dvhs: list[DVH]) -> list[str]:
    """One warning per structure that lies partly outside the dose grid (its dose-grid
    volume below :data:`COVERAGE_WARN` of its label-grid volume)."""
    out = []
    for h in dvhs:
        lv = h.label_grid_volume_ml
        if lv and h.volume_ml < COVERAGE_WARN * lv:
            out.append(f"structure '{h.name}': {h.volume_ml:.4g} mL on the dose grid of "
                       f"{lv:.4g} mL on its label grid ({100 * (1 - h.volume_ml / lv):.1f} % "
                       "outside the dose grid, not in its DVH)")
    return out
