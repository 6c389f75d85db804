"""Uncertainty of the DVH statistics from the TIA and dose sigma maps.

Structure means (``sigma_mean_independent_gy``, ``sigma_mean_fully_correlated_gy``): the
standard uncertainty of the volume-weighted mean dose ``mean_gy = sum f_i d_i / sum f_i``
by eq. (3) of :mod:`voxdose.dose.uncertainty`, with each structure's DVH weights f_i (the
fractional occupancy, fractions below :data:`~voxdose.analysis.dvh.FRACTION_MIN` dropped)
and the dose engine's own terms: independent voxel TIA errors, and the fully correlated
Cauchy-Schwarz bound. The truth lies between (SPECT noise is correlated over about the
system resolution; a partial-volume correction adds correlation).

DVH band (``dose_band``): an **envelope**, not a confidence band. With sigma_D(u) the dose's
standard uncertainty (eq. 2) and k = :data:`BAND_K`,

    V_lower(d) = V[max(D - k sigma_D, 0)](d),   V_upper(d) = V[D + k sigma_D](d)

the cumulative DVHs (same voxel weights as the nominal DVH) of the dose map with every voxel
shifted down, resp. up, by k of its standard uncertainties. Since D - k sigma_D <= D <=
D + k sigma_D voxel by voxel, V_lower(d) <= V(d) <= V_upper(d) at every dose d. It is the
band of the fully correlated case (all voxel errors of one sign); independent errors spread
the DVH less. Neither this band nor the sigma numbers correct the *bias* noise puts into a
DVH (noise widens the dose distribution: D2 up, D98 down); see docs/analysis.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..core.backend import backend_of
from ..core.grid import Image, LabelMap
from ..dose.convolution import SpectrumCache
from ..dose.uncertainty import CORRELATION_NOTE, MeanDoseSigma, engine_terms, \
    MEAN_SIGMA_PRECISION, fit_voxel_parents, mean_sigma_from_terms
from .dvh import DVH, FRACTION_MIN, compute_dvhs, structure_fractions

#: Coverage factor of the DVH band (k = 1: one standard uncertainty).
BAND_K = 1.0
#: How the band is built (written into dvh.json).
BAND_CONSTRUCTION = (
    "envelope: cumulative DVHs of max(D - k sigma_D, 0) (lower) and D + k sigma_D (upper) "
    "with the nominal DVH's voxel weights, sigma_D the dose sigma map (independent voxel "
    "TIA errors); every voxel shifted by k standard uncertainties in one direction, i.e. "
    "the fully correlated case, so lower <= nominal <= upper at every dose. Not a "
    "confidence band for independent errors (those spread the DVH less); the bias noise "
    "puts into a DVH (broadening) is not corrected.")


@dataclass(frozen=True, eq=False)
class DvhBand:
    """One structure's band at the dose edges ``dose_gy``: volume fractions >= each edge of
    the nominal, lower and upper dose maps."""

    name: str
    dose_gy: np.ndarray
    nominal: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    k: float = BAND_K

    def to_dict(self) -> dict:
        return {"k": self.k, "dose_gy": self.dose_gy.tolist(),
                "volume_fraction": self.nominal.tolist(),
                "volume_fraction_lower": self.lower.tolist(),
                "volume_fraction_upper": self.upper.tolist()}


def dvh_bands(nominal: list[DVH], dose: Image, sigma: Image, labels: LabelMap,
              density: Image | None = None, k: float = BAND_K, n_bins: int = 200
              ) -> list[DvhBand]:
    """The envelope band of every structure of ``nominal`` (same order and weights: the
    DVHs of ``compute_dvhs(dose, labels, density)``); edges 0 .. the upper map's maximum."""
    be = backend_of(dose.data)  # on the dose's device, as the nominal DVHs
    d = be.asarray(dose.data, dtype=be.xp.float64)
    s = be.asarray(sigma.data, dtype=be.xp.float64)
    lo = compute_dvhs(dose.with_data(be.xp.maximum(d - k * s, 0.0)), labels, density)
    hi = compute_dvhs(dose.with_data(d + k * s), labels, density)
    out = []
    for h, a, b in zip(nominal, lo, hi):
        top = max(b.max_gy, h.max_gy)
        edges, v = h.cumulative(n_bins, top)
        out.append(DvhBand(h.name, edges, v, a.cumulative(n_bins, top)[1],
                           b.cumulative(n_bins, top)[1], float(k)))
    return out


def structure_weights(labels: LabelMap, grid) -> dict[str, np.ndarray]:
    """Each named structure's DVH voxel weights on ``grid`` (name -> float64 array), in
    label order: the fractions :func:`~voxdose.analysis.dvh.compute_dvhs` uses (below
    FRACTION_MIN dropped, capped at 1), or whole voxels."""
    fractions, _, _ = structure_fractions(labels, grid)
    out = {}
    for value, name in sorted(labels.names.items()):
        if fractions is None:
            out[name] = (np.asarray(labels.data) == value).astype(np.float64)
        else:
            f = np.asarray(fractions[value], dtype=np.float64)
            out[name] = np.where(f >= FRACTION_MIN, np.minimum(f, 1.0), 0.0)
    return out


#: Partial-volume correction in ``voxdose run``: on the TIA map after the fit
#: (pipeline/pvc_stage.py); what that means for the sigmas.
_PVC_COMMON = (
    "the correction acts on the TIA map after the fit: sigma is the fit's SPECT-grid sigma "
    "interpolated onto the label grid and multiplied by corrected / interpolated TIA "
    "(first order, the correction ratio taken as exact), so the absolute sigma carries "
    "the correction's amplification and the relative sigma is about unchanged; the "
    "correction's own noise (GTM means), FWHM and registration errors are not in it. "
    "sigma_mean_independent_gy treats label voxels that share a SPECT voxel as one error "
    "(independent between SPECT voxels); the sigma map treats label voxels as independent")
PVC_NOTES = {
    "rbv": "RBV: " + _PVC_COMMON,
    "iy": "iterative Yang: " + _PVC_COMMON,
    "gtm": "GTM: " + _PVC_COMMON + ". A GTM voxel's value is its region's mean: its error is "
           "shared by the whole region (fully correlated), which the voxel-wise sigma "
           "does not describe",
    "rc": "RC: a recovery factor per structure scales the TIA, hence sigma (by 1/RC); the "
          "recovery table's own uncertainty is not included. " + _PVC_COMMON,
}


@dataclass(frozen=True, eq=False)
class DvhUncertainty:
    """Per structure: sigma of the mean dose (both bounds) and the DVH band."""

    sigmas: dict[str, MeanDoseSigma]
    bands: list[DvhBand]
    engine_terms: str
    seconds: dict = field(default_factory=dict)
    pvc_method: str = "none"

    def add_to(self, doc: dict) -> dict:
        """``dvh_json``'s document with ``sigma_mean_*`` and ``dose_band`` in every
        structure and an ``uncertainty`` section (definitions); changed in place."""
        bands = {b.name: b for b in self.bands}
        for s in doc["structures"]:
            sig = self.sigmas.get(s["name"])
            if sig is not None:
                s.update(sig.to_dict())
            if s["name"] in bands:
                s["dose_band"] = bands[s["name"]].to_dict()
        doc["uncertainty"] = {
            "sigma_mean": "standard uncertainty of mean_gy (Gy) from the TIA fit's sigma "
                          "map through the dose engine (" + self.engine_terms + ")",
            "sigma_mean_fft_precision": MEAN_SIGMA_PRECISION + " transforms, float64 sums",
            "correlation": CORRELATION_NOTE, "dose_band": BAND_CONSTRUCTION,
            "sigma_map": "dose_<nuclide>_kernel_sigma_gy.nii.gz",
            **({"partial_volume_correction": PVC_NOTES[self.pvc_method]}
               if self.pvc_method in PVC_NOTES else {}),
            "compute_seconds": self.seconds}
        return doc

    def plot_bands(self) -> dict:
        """name -> (dose edges, lower, upper) for :func:`voxdose.report.plots.plot_dvhs`."""
        return {b.name: (b.dose_gy, b.lower, b.upper) for b in self.bands}


def mean_sigma_threads(backend, shape=None, terms=()) -> int:
    """Structures whose mean sigma is computed at once: 2 on a CPU with two or more cores
    (each structure's FFTs, sums and grouping leave a core idle part of the time: the
    demo's 13 structures 2.9 -> 2.1 s on 2 cores) when two whole-grid convolutions of
    ``shape`` with the largest of ``terms``' kernels fit the memory budget at once (so each
    runs as it would alone, unblocked: the same numbers), else 1 (and on a GPU)."""
    if backend.name != "cpu":
        return 1
    from ..dose.convolution import (crop_kernel, default_budget_bytes, default_workers,
                                    plan_blocks)

    if default_workers() < 2:
        return 1
    if shape is not None:
        budget = default_budget_bytes(backend)
        for t in terms:
            if np.size(t.kernel) > 1:
                h, _ = crop_kernel(np.shape(t.kernel), shape)
                plan = plan_blocks(shape, h, backend, MEAN_SIGMA_PRECISION, budget)
                if plan.blockwise or 2 * plan.estimated_bytes > budget:
                    return 1
    return 2


def structure_mean_sigmas(tia_sigma, terms, weights: dict, backend, caches=None,
                          parents=None, threads: int | None = None) -> dict:
    """name -> :class:`MeanDoseSigma` of every structure of ``weights`` (name -> weight
    array), by :func:`~voxdose.dose.uncertainty.mean_sigma_from_terms`; ``threads``
    structures at once (default :func:`mean_sigma_threads`). Each structure's numbers are
    computed alone, so they are the same whatever ``threads``."""
    from concurrent.futures import ThreadPoolExecutor

    def one(item):
        name, w = item
        return name, mean_sigma_from_terms(tia_sigma, terms, w, backend, caches, parents)

    shape = next(iter(weights.values())).shape if weights else None
    n = mean_sigma_threads(backend, shape, terms) if threads is None else max(1, int(threads))
    if n == 1 or len(weights) < 2:
        return dict(map(one, weights.items()))
    with ThreadPoolExecutor(n) as pool:
        return dict(pool.map(one, weights.items()))


def _spectrum_caches(engine, terms) -> list:
    """One spectrum cache per term, reused across structures. Eq. (3) convolves with the
    flipped kernel K~; where that is the engine's own kernel (point symmetric: K~ = K) the
    engine's cache is the float64 source of the float32 spectra (the dose computed them
    already: no second 0.3 s spectrum on the demo)."""
    shared = getattr(engine, "_spectra", None)
    kernel = getattr(getattr(engine, "kernel", None), "data_gy_per_decay", None)
    caches = []
    for t in terms:
        same = (isinstance(shared, SpectrumCache) and kernel is not None
                and t.kernel is kernel and t.flipped_kernel is t.kernel)
        caches.append(SpectrumCache(max_entries=1, float64_source=shared if same else None))
    return caches


def dvh_uncertainty(dvhs: list[DVH], dose: Image, dose_sigma: Image, tia_sigma: Image,
                    engine, labels: LabelMap, backend, density: Image | None = None,
                    pvc_method: str = "none", fit_grid=None) -> DvhUncertainty:
    """Structure-mean sigmas (eq. 3, the engine's terms) and envelope bands of ``dvhs``
    (the DVHs of ``dose`` on ``labels``); ``pvc_method``: the partial-volume correction
    applied (its note goes into dvh.json); ``fit_grid``: the grid the TIA was fitted on
    when it differs from the TIA's (after a correction onto the label grid): voxels sharing
    a fit voxel share its error (:func:`~voxdose.dose.uncertainty.fit_voxel_parents`)."""
    t0 = time.perf_counter()
    grid = tia_sigma.grid
    terms, how = engine_terms(engine, grid, backend, density)
    caches = _spectrum_caches(engine, terms)
    s = backend.asarray(tia_sigma.data, dtype=backend.xp.float64)
    parents = (None if fit_grid is None or fit_grid.same_as(grid, tol_mm=1e-3)
               else fit_voxel_parents(grid, fit_grid))
    sigmas = structure_mean_sigmas(s, terms, structure_weights(labels, grid), backend,
                                   caches, parents)
    t1 = time.perf_counter()
    bands = dvh_bands(dvhs, dose, dose_sigma, labels, density)
    t2 = time.perf_counter()
    return DvhUncertainty(sigmas, bands, how, {"sigma_mean": t1 - t0, "dose_band": t2 - t1},
                          str(pvc_method))
