"""The regions a partial-volume correction solves for, drawn on the label (CT) grid.

Every voxel of the label grid belongs to exactly one region, so the indicator functions
``1_j`` of the regions sum to 1 on the whole label grid (the GTM's and RBV's model of the
activity, ``f(x) = sum_j c_j 1_j(x)``, is then defined everywhere):

* one **structure** region per named label value present in the label map (in increasing
  label value);
* **background**: the body minus the named structures, i.e. voxels with a non-zero label
  that has no name, plus voxels of label 0 inside ``body_mask`` when one is given;
* **outside**: the rest of the label grid (label 0 outside the body: air, table; with no
  ``body_mask`` every voxel of label 0).

A named structure with no voxel in the label map is *missing*: it takes no part, and the
correction is reported incomplete (its activity is attributed to the regions around it).
Activity outside the label grid is assumed to be zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError
from ..core.grid import Grid

STRUCTURE, BACKGROUND, OUTSIDE = "structure", "background", "outside"
#: Names of the two regions voxdose adds; a structure may not use them.
RESERVED_NAMES = (BACKGROUND, OUTSIDE)


@dataclass(frozen=True, eq=False)
class RegionSet:
    """Regions on ``grid``: ``index`` holds the region number 1..n of every label voxel.

    ``names``, ``kinds`` (structure | background | outside), ``values`` (label value of a
    structure, else None) and ``counts`` (label voxels) are per region, in region order
    (region number k is entry k - 1). ``missing``: named structures absent from the map.
    """

    grid: Grid
    index: np.ndarray
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    values: tuple[int | None, ...]
    counts: np.ndarray
    missing: tuple[str, ...]
    body_given: bool

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def volumes_ml(self) -> np.ndarray:
        """Region volumes on the label grid, mL."""
        return self.counts.astype(np.float64) * self.grid.voxel_volume_ml

    @property
    def complete(self) -> bool:
        """True when every named structure is present in the label map."""
        return not self.missing

    def number(self, name: str) -> int:
        """Region number (1-based, as in ``index``) of a region by name."""
        try:
            return self.names.index(name) + 1
        except ValueError:
            raise KeyError(name) from None

    def structures(self) -> list[int]:
        """0-based positions of the structure regions."""
        return [i for i, k in enumerate(self.kinds) if k == STRUCTURE]


def _check_inputs(labels: np.ndarray, grid: Grid, names: dict[int, str], body_mask) -> None:
    if tuple(labels.shape) != grid.shape:
        raise InputError(f"label map shape {labels.shape} does not match its grid {grid.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError("the label map must hold integers (one value per structure)")
    if labels.size and int(labels.min()) < 0:
        raise InputError("the label map has negative values; labels are 0 (none) or positive")
    clash = sorted(set(names.values()) & set(RESERVED_NAMES))
    if clash:
        raise InputError(f"structure name {clash[0]!r} is reserved for the region voxdose adds "
                         "(background: body minus the named structures; outside: the rest); "
                         "rename the structure in the names file")
    if body_mask is not None and tuple(np.shape(body_mask)) != grid.shape:
        raise InputError(f"body mask shape {np.shape(body_mask)} does not match the label "
                         f"grid {grid.shape}; give it on the label (CT) grid")


def build_regions(labels, grid: Grid, names: dict[int, str],
                  body_mask=None) -> RegionSet:
    """Partition the label grid into structure, background and outside regions (module doc).

    ``labels``: integer label map on ``grid``; ``names``: label value -> structure name;
    ``body_mask``: optional boolean map of the body on ``grid`` (e.g. CT > -500 HU).
    """
    lab = np.asarray(labels)
    _check_inputs(lab, grid, names, body_mask)
    flat = lab.ravel()
    top = int(flat.max()) if flat.size else 0
    counts_v = np.bincount(flat, minlength=max(top, max(names, default=0)) + 1)
    named = [v for v in sorted(names) if counts_v[v] > 0]
    missing = tuple(names[v] for v in sorted(names) if counts_v[v] == 0)
    unnamed = [v for v in np.flatnonzero(counts_v).tolist() if v != 0 and v not in names]
    body0 = None
    if body_mask is not None:
        body0 = np.asarray(body_mask, dtype=bool) & (lab == 0)
    n_bg = int(sum(int(counts_v[v]) for v in unnamed)) + (int(body0.sum()) if body0 is not None
                                                         else 0)
    n_out = int(counts_v[0]) - (int(body0.sum()) if body0 is not None else 0)

    region_names = [names[v] for v in named]
    kinds = [STRUCTURE] * len(named)
    values: list[int | None] = list(named)
    counts = [int(counts_v[v]) for v in named]

    def extra_region(kind: str, n: int) -> int:
        """Append a region without a label value; its 1-based number (0: none, empty)."""
        if n <= 0:
            return 0
        region_names.append(kind)
        kinds.append(kind)
        values.append(None)
        counts.append(n)
        return len(region_names)

    bg_no = extra_region(BACKGROUND, n_bg)
    out_no = extra_region(OUTSIDE, n_out)
    lut = np.zeros(len(counts_v), dtype=np.uint16 if len(region_names) < 65535 else np.int32)
    for k, v in enumerate(named, start=1):
        lut[v] = k
    for v in unnamed:
        lut[v] = bg_no
    lut[0] = out_no
    index = lut[lab]
    if body0 is not None and bg_no:
        index[body0] = bg_no
    return RegionSet(grid, index, tuple(region_names), tuple(kinds), tuple(values),
                     np.asarray(counts, dtype=np.int64), missing, body_mask is not None)


def region_weights(regions: RegionSet, spect_grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Fractional occupancy ``w_j(v)`` of every SPECT voxel by every region, and the
    fraction of each SPECT voxel inside the label grid (``covered``).

    ``w_j(v) = |T_v ∩ R_j| / |T_v|`` (exact box overlap for grids sharing their axes,
    :func:`voxdose.imaging.occupancy.fractional_occupancy`); ``sum_j w_j = covered``.
    Returns ``(weights (n, nz, ny, nx) float32, covered float32)``.
    """
    from ..imaging.occupancy import fractional_occupancy

    occ = fractional_occupancy(regions.index, regions.grid, spect_grid,
                               {k + 1: name for k, name in enumerate(regions.names)})
    weights = np.stack([occ.fractions[k + 1] for k in range(regions.n)]) if regions.n else \
        np.zeros((0,) + spect_grid.shape, np.float32)
    return weights, occ.covered
