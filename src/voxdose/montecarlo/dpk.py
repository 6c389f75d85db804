"""Radial dose point kernels (DPK) by the project's own Monte Carlo.

For one decay at the origin of an infinite homogeneous medium (water, or soft tissue,
lung, cortical bone by composition: :mod:`voxdose.montecarlo.media`), every emission of the
nuclide (ICRP-107 via :mod:`voxdose.core.nuclide`) is transported:

* electrons (beta spectrum + conversion and Auger lines) by
  :func:`voxdose.montecarlo.electron.run_electron_batches` (class II condensed history, with
  their bremsstrahlung photons);
* photons (gamma and X lines) by :func:`voxdose.montecarlo.photon.run_photon_batches`
  (Klein-Nishina Compton + photoelectric, coherent neglected).

Each history draws one particle from the nuclide's electron (or photon) emissions, with
probability proportional to its yield; the energy scored per shell is multiplied by
``N_e / n_histories`` (``N_e`` = electrons emitted per decay), so the table is per decay.
Photon lines below :data:`voxdose.montecarlo.photon.P_CUT_MEV` (1 keV, the lower end of the
photon tables) are deposited in the first shell (local).

Shells: uniform width ``dr`` out to just beyond the largest electron CSDA range, then
geometric (ratio ``q``) out to ``r_max`` when the nuclide emits penetrating photons.  The
dose of shell i is ``D_i = E_i / (rho 4/3 pi (r_i+1^3 - r_i^3))``; its statistical
uncertainty is the standard error of the mean over ``n_batches`` independent batches
(each with its own seeded xorshift128+ stream; identical results for any thread count).

Energy balance (exact by construction, checked in the tests):
``emitted = sum_i E_i + escaped beyond r_max`` per decay (bremsstrahlung photons are
transported, so what leaves the table is what crosses its last shell).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from scipy.interpolate import PchipInterpolator

from ..core.errors import InputError
from ..core.nuclide import Nuclide, load_nuclide
from ..core.units import MEV_PER_G_TO_GY
from . import electron, media, photon
from . import stopping_power as sp
from .core import rng_states

CODE_VERSION = "voxdose-mc 1.1"
#: Default outer radius of the tables, mm: photons (and bremsstrahlung) beyond it carry
#: < 0.01 % of the energy per decay of Lu-177 and Y-90 in water.
R_MAX_MM = 1500.0
#: Nodes of the resampled beta spectrum used by the source sampler.
N_BETA_NODES = 4000

# -- tables built on first use (nuclides without a shipped table): :func:`build_dpk` ------
#: The default histories of a built table are the fewest (by the pilot's expected time)
#: that keep the relative statistical uncertainty (1 sigma, batch statistics) of every
#: planned score at most ``TARGET_REL_UNCERTAINTY``; the scores are the voxel kernel's
#: first shells of voxels (:func:`voxdose.kernels.voxel.voxel_shell_scores`).  The plan aims
#: at ``PLAN_REL_UNCERTAINTY`` (a margin for the ~11 % noise of a 40-batch sigma estimate).
TARGET_REL_UNCERTAINTY = 0.005
PLAN_REL_UNCERTAINTY = 0.004
#: The table's own first shells whose uncertainty every record reports (not planned for).
FIRST_SHELLS = 3
#: Electron (and photon) histories of the pilot run that plans (and times) a build.
PILOT_HISTORIES = 20_000
#: Bounds of a planned source (electrons, photons): no fewer than the pilot that planned
#: it, no more than 20 million.
MIN_BUILD_HISTORIES = PILOT_HISTORIES
MAX_BUILD_HISTORIES = 20_000_000
BUILD_BATCHES = 40
BUILD_SEED = 20240607


def _emission_arrays(nuc: Nuclide):
    """Electron source: (beta_yield, e, p, cdf, line_e, line_cum, n_total).

    dN/dE is piecewise linear between the nodes ``e`` (pdf ``p``, cumulative ``cdf``).
    """
    if nuc.beta_yield > 0 and nuc.beta_energy_mev.size > 1:
        # the ICRP-107 spectrum is tabulated on a coarse grid (40 keV steps near Lu-177's
        # end point): a monotone cubic (PCHIP) through its nodes, resampled on 4000 points,
        # keeps the sampled mean within 0.05 % of the tabulated mean (linear: +0.4 %)
        e_tab = np.asarray(nuc.beta_energy_mev, dtype=np.float64)
        p_tab = np.clip(np.asarray(nuc.beta_pdf_per_mev, dtype=np.float64), 0.0, None)
        e = np.linspace(e_tab[0], e_tab[-1], N_BETA_NODES)
        p = np.clip(PchipInterpolator(e_tab, p_tab)(e), 0.0, None)
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(e))])
        p = p / cdf[-1]
        cdf = cdf / cdf[-1]
        by = float(nuc.beta_yield)
    else:
        e, p, cdf, by = np.zeros(2), np.zeros(2), np.zeros(2), 0.0
    le = np.asarray(nuc.electron_lines_mev, dtype=np.float64)
    ly = np.clip(np.asarray(nuc.electron_yields, dtype=np.float64), 0.0, None)
    keep = ly > 0
    le, ly = le[keep], ly[keep]
    if le.size == 0:
        le, ly = np.zeros(1), np.zeros(1)
    return by, e, p, cdf, le, np.cumsum(ly), by + float(ly.sum())


def sampled_beta_energies(nuclide: str | Nuclide, n: int, seed: int = 1) -> np.ndarray:
    """n beta energies (MeV) drawn by the transport's own source sampler (for tests)."""
    nuc = load_nuclide(nuclide) if isinstance(nuclide, str) else nuclide
    _, e, p, cdf, _, _, _ = _emission_arrays(nuc)
    st = rng_states(seed, 1)[0]
    return electron.sample_many(st, int(n), 1.0, e, p, cdf, np.zeros(1), np.zeros(1), 1.0)


#: Highest emission energies the transport models, MeV (electron tables are built to
#: 1.05 x the highest electron energy; photons: no pair production).
MAX_ELECTRON_MEV = 10.0
MAX_PHOTON_MEV = 3.0


def max_electron_energy_mev(nuc: Nuclide) -> float:
    """Highest electron energy emitted (beta end point or line, yield > 1e-6), MeV."""
    return max(float(nuc.beta_energy_mev[-1]) if nuc.beta_energy_mev.size else 0.0,
               float(np.max(nuc.electron_lines_mev[nuc.electron_yields > 1e-6],
                            initial=0.0)))


def max_electron_range_mm(nuc: Nuclide, medium="water") -> float:
    """CSDA range (mm) in ``medium`` of the most energetic electron emitted (>1e-6 per
    decay)."""
    e_max = max_electron_energy_mev(nuc)
    m = media.get_medium(medium)
    return float(sp.csda_range_g_cm2(max(e_max, 0.01), m)) * 10.0 / m["density_g_cm3"]


def shell_edges(nuc: Nuclide, dr_mm: float | None = None, r_max_mm: float = R_MAX_MM,
                q: float = 1.02, with_photons: bool = True, medium="water") -> np.ndarray:
    """Shell edges (mm): uniform to past the largest electron range, then geometric."""
    r_e = max_electron_range_mm(nuc, medium)
    if dr_mm is None:
        dr_mm = 0.005 if r_e < 3.0 else 0.05
    r_u = math.ceil(1.05 * r_e / dr_mm) * dr_mm
    edges = np.arange(0.0, r_u + 0.5 * dr_mm, dr_mm)
    if with_photons and r_max_mm > edges[-1]:
        n_geo = int(math.ceil(math.log(r_max_mm / edges[-1]) / math.log(q)))
        geo = edges[-1] * q ** np.arange(1, n_geo + 1)
        edges = np.concatenate([edges, geo])
    return edges


def _describe_shells(edges: np.ndarray) -> str:
    d = np.diff(edges)
    uni = np.isclose(d, d[0], rtol=1e-6)
    n_u = int(np.argmin(uni)) if not uni.all() else d.size
    text = f"{n_u} uniform shells of {d[0]:.4g} mm to {edges[n_u]:.4g} mm"
    if n_u < d.size:
        q = edges[n_u + 1] / edges[n_u]
        text += f", then {d.size - n_u} geometric (ratio {q:.4g}) to {edges[-1]:.4g} mm"
    return text


@dataclass
class DPKResult:
    """A Monte Carlo radial dose point kernel per decay in a homogeneous medium."""

    nuclide: str
    edges_mm: np.ndarray
    energy_mev: np.ndarray            # energy per decay in each shell
    rel_uncertainty: np.ndarray       # 1 sigma relative statistical uncertainty per shell
    emitted_mev: float                # electrons + photons emitted per decay (sampled)
    bremsstrahlung_mev: float         # bremsstrahlung photons emitted (transported)
    escaped_mev: float                # photons (and electrons) beyond the last edge
    electron_mev: float
    photon_mev: float
    n_electrons: int
    n_photons: int
    seed: int
    seconds: float
    settings: dict = field(default_factory=dict)
    electron_shell_mev: np.ndarray | None = None   # electron part of energy_mev
    photon_shell_mev: np.ndarray | None = None     # photon part of energy_mev
    max_electron_range_mm: float = 0.0
    medium: str = "water"
    density_g_cm3: float = 1.0
    medium_record: dict | None = None
    #: linearised deviation of each batch's energy per shell from the mean (MeV per decay,
    #: [n_batches, n_shells]; their standard error is ``rel_uncertainty * energy_mev``):
    #: what turns into the statistical uncertainty of anything linear in the shell
    #: energies, e.g. a voxel S-value (:func:`voxel_rel_uncertainty`)
    batch_deviation_mev: np.ndarray | None = None

    @property
    def r_mm(self) -> np.ndarray:
        """Shell mid radii, mm."""
        return 0.5 * (self.edges_mm[1:] + self.edges_mm[:-1])

    @property
    def shell_mass_g(self) -> np.ndarray:
        e = self.edges_mm
        return (4.0 / 3.0 * math.pi * (e[1:] ** 3 - e[:-1] ** 3) / 1000.0
                * self.density_g_cm3)

    @property
    def dose_gy_per_decay(self) -> np.ndarray:
        return self.energy_mev / self.shell_mass_g * MEV_PER_G_TO_GY

    @property
    def absorbed_mev(self) -> float:
        return float(self.energy_mev.sum())

    def electron_r90_mm(self) -> float | None:
        """Radius holding 90 % of the absorbed electron energy, mm."""
        if self.electron_shell_mev is None or self.electron_shell_mev.sum() <= 0:
            return None
        cum = np.cumsum(self.electron_shell_mev)
        return float(np.interp(0.9 * cum[-1], cum, self.edges_mm[1:]))

    def balance(self) -> float:
        """(absorbed + escaped) / emitted - 1 (should be ~1e-12)."""
        tot = self.absorbed_mev + self.escaped_mev
        return tot / self.emitted_mev - 1.0

    def record(self) -> dict:
        """JSON-serialisable description (how it was made, balance, uncertainties)."""
        d = self.dose_gy_per_decay
        cum = np.cumsum(self.energy_mev)
        r90 = float(np.interp(0.9 * cum[-1], cum, self.edges_mm[1:]))
        hist = self.n_electrons + self.n_photons
        return {
            "code_version": CODE_VERSION,
            "nuclide": self.nuclide,
            "medium": self.medium,
            "density_g_cm3": self.density_g_cm3,
            "medium_definition": self.medium_record,
            "decay_data": "ICRP Publication 107 (icrp107-database)",
            "n_electron_histories": self.n_electrons,
            "n_photon_histories": self.n_photons,
            "seed": self.seed,
            "seconds": self.seconds,
            "histories_per_second": hist / self.seconds if self.seconds > 0 else None,
            "emitted_mev_per_decay": self.emitted_mev,
            "electron_emitted_mev_per_decay": self.electron_mev,
            "photon_emitted_mev_per_decay": self.photon_mev,
            "absorbed_in_table_mev_per_decay": self.absorbed_mev,
            "bremsstrahlung_photon_mev_per_decay": self.bremsstrahlung_mev,
            "escaped_beyond_table_mev_per_decay": self.escaped_mev,
            "energy_balance_residual": self.balance(),
            "r_max_mm": float(self.edges_mm[-1]),
            "r90_mm_of_absorbed": r90,
            "electron_r90_mm": self.electron_r90_mm(),
            "max_electron_range_mm": self.max_electron_range_mm,
            "n_shells": int(d.size),
            "max_rel_uncertainty_where_dose_above_1e-3_max": float(np.max(
                self.rel_uncertainty[d > 1e-3 * d.max()])) if d.size else None,
            "first_shells_rel_uncertainty": self.first_shells_rel_uncertainty(),
            "settings": self.settings,
        }

    def first_shells_rel_uncertainty(self, n: int | None = None) -> list[float]:
        """1-sigma relative statistical uncertainty of the energy scored in each of the
        first ``n`` shells (default :data:`FIRST_SHELLS`), from the batch statistics."""
        return [float(v) for v in self.rel_uncertainty[:FIRST_SHELLS if n is None else n]]


def simulate_dpk(nuclide: str | Nuclide, n_electrons: int = 200_000,
                 n_photons: int = 200_000, *, seed: int = 12345, n_batches: int = 20,
                 edges_mm: np.ndarray | None = None, r_max_mm: float | None = None,
                 eps: float = electron.EPS_STEP, e_cut: float = electron.E_CUT_MEV,
                 w_cut: float = electron.W_CUT_MEV, backend: str = "cpu",
                 medium="water", normalise: bool = True) -> DPKResult:
    """Run the Monte Carlo for ``nuclide`` in ``medium`` (a name of
    :data:`voxdose.montecarlo.media.MEDIA` or a medium dict) and return its :class:`DPKResult`
    per decay.  ``normalise``: scale each batch's tallies by (expected emitted energy /
    sampled emitted energy) of its source (a ratio estimator: the table then holds the
    source's exact energy per decay, and the sampling noise of the emission drops out of
    the energy balance; ``record()['settings']`` keeps both numbers).
    ``r_max_mm``: outer radius of the shells (default :data:`R_MAX_MM`, divided by the
    density for media lighter than water).

    ``backend``: ``"cpu"`` (Numba, parallel over batches) or ``"gpu"`` (the same transport
    compiled with numba.cuda, :mod:`voxdose.montecarlo.transport_cuda`; one thread per batch,
    so use thousands of batches there); the project's one device vocabulary
    (:data:`voxdose.core.backend.DEVICES`), ``"cuda"`` accepted as the former name of "gpu".
    """
    nuc = load_nuclide(nuclide) if isinstance(nuclide, str) else nuclide
    med = media.get_medium(medium)
    backend = _canonical_backend(backend)
    run_e, run_p = _runners(backend)
    n_batches = int(n_batches)
    if n_batches < 2:
        raise InputError("n_batches must be >= 2 (uncertainty from batch statistics)")
    t0 = time.perf_counter()
    lines, yields, photon_local = _photon_emissions(nuc)
    if edges_mm is None:
        # every nuclide has photons to follow: its own and its electrons' bremsstrahlung
        edges_mm = (default_edges(nuc, med) if r_max_mm is None else
                    shell_edges(nuc, r_max_mm=r_max_mm, with_photons=True, medium=med))
    edges = np.asarray(edges_mm, dtype=np.float64)
    ne = int(math.ceil(max(int(n_electrons), 0) / n_batches))
    npb = (int(math.ceil(max(int(n_photons), 0) / n_batches))
           if float(np.sum(lines * yields)) > 0 else 0)
    settings = {"eps_step": eps, "e_cut_mev": e_cut, "w_cut_mev": w_cut,
                "photon_cut_mev": photon.P_CUT_MEV, "n_batches": n_batches,
                "backend": backend, "normalised_to_expected_emission": bool(normalise),
                "shells": _describe_shells(edges)}
    source_e = _emission_arrays(nuc)
    e_table_max, p_table_max = _table_limits(nuc, lines)
    run = partial(_run_source, edges=edges, n_batches=n_batches, normalise=normalise,
                  settings=settings)
    part_e = part_p = _SourcePart(np.zeros(edges.size), np.zeros((n_batches, edges.size)))
    pt = None   # the photon tables (built with the electron tables, for bremsstrahlung)
    if ne > 0 and source_e[-1] > 0:
        et = electron.electron_tables(med, e_cut=e_cut, w_cut=w_cut, eps=eps,
                                      e_max=e_table_max, p_max=p_table_max)
        pt = et.photons
        by, e, p, _, le, lc, _ = source_e
        part_e = run(run_e, source_e, electron.table_args(et), ne, seed, "electron",
                     _expected_electron_mev(by, e, p, le, lc), "electron_steps_per_history")
    if npb > 0:
        pt = pt if pt is not None else photon.photon_tables(med, e_max=p_table_max)
        cum = np.cumsum(yields)
        part_p = run(run_p, (lines, cum, float(cum[-1])), photon.table_args(pt), npb,
                     seed + 7_777_777, "photon", float(np.sum(lines * yields)),
                     "photon_interactions_per_history")
    return DPKResult(
        nuclide=nuc.name, edges_mm=edges, **_merge(part_e, part_p, photon_local, n_batches),
        n_electrons=ne * n_batches if ne > 0 else 0, n_photons=npb * n_batches,
        seed=int(seed), seconds=time.perf_counter() - t0, settings=settings,
        max_electron_range_mm=max_electron_range_mm(nuc, med), medium=med["name"],
        density_g_cm3=float(med["density_g_cm3"]), medium_record=media.describe(med))


def _canonical_backend(backend: str) -> str:
    """'cpu' or 'gpu' ('cuda', the former name, means 'gpu'); InputError otherwise."""
    b = {"cuda": "gpu"}.get(str(backend).lower(), str(backend).lower())
    if b not in ("cpu", "gpu"):
        raise InputError(f"Monte Carlo backend must be 'cpu' or 'gpu'; got {backend!r}")
    return b


def _runners(backend: str):
    """(electron, photon) batch runners of ``backend`` ("cpu" or "gpu")."""
    backend = _canonical_backend(backend)
    if backend == "gpu":
        from . import transport_cuda

        return (transport_cuda.run_electron_batches_cuda,
                transport_cuda.run_photon_batches_cuda)
    return electron.run_electron_batches, photon.run_photon_batches


def _photon_emissions(nuc: Nuclide):
    """Photon source: (lines transported (E >= P_CUT_MEV, yield > 0), their yields, energy
    per decay of the lines below the cut, deposited in the first shell)."""
    pl = np.asarray(nuc.photon_lines_mev, dtype=np.float64)
    py = np.clip(np.asarray(nuc.photon_yields, dtype=np.float64), 0.0, None)
    pen = (pl >= photon.P_CUT_MEV) & (py > 0)
    return pl[pen], py[pen], float(np.sum(pl[~pen] * py[~pen]))


def _table_limits(nuc: Nuclide, photon_lines: np.ndarray) -> tuple[float, float]:
    """Upper energies (MeV) of the electron and photon tables; InputError beyond what the
    transport models."""
    e_top = max_electron_energy_mev(nuc)
    p_top = float(photon_lines.max()) if photon_lines.size else 0.0
    if e_top > MAX_ELECTRON_MEV or p_top > MAX_PHOTON_MEV:
        raise InputError(
            f"{nuc.name} emits electrons up to {e_top:.3g} MeV and photons up to "
            f"{p_top:.3g} MeV; the Monte Carlo models electrons up to {MAX_ELECTRON_MEV} MeV "
            f"and photons up to {MAX_PHOTON_MEV} MeV (no pair production): use a "
            "published kernel table with --dpk instead")
    return max(4.0, 1.05 * e_top), max(3.0, 1.05 * max(e_top, p_top))


@dataclass
class _SourcePart:
    """One source's (electrons' or photons') share of the table, per decay."""

    shell_mev: np.ndarray      # mean energy per shell (last slot: beyond the last edge)
    dev: np.ndarray            # linearised batch deviations [n_batches, n_edges]
    escaped_mev: float = 0.0   # photons beyond the last edge (acc[0])
    emitted_mev: float = 0.0   # emitted energy (acc[2], normalised)
    brems_mev: float = 0.0     # bremsstrahlung photons emitted (electrons' acc[3])


def _run_source(runner, source: tuple, tables: tuple, n_per_batch: int, seed: int,
                label: str, expected: float, count_key: str, *, edges: np.ndarray,
                n_batches: int, normalise: bool, settings: dict) -> _SourcePart:
    """Run one source (electrons or photons): ``n_batches`` streams seeded by ``seed``,
    ``runner(states, n_per_batch, edges, *source, *tables)``, tallies per decay by the
    ratio estimator of :func:`_tally_part` (``expected``: its emitted MeV per decay).
    ``source`` ends with the particles emitted per decay (a history weighs
    source[-1] / n_per_batch); ``settings[count_key]`` = steps (or interactions) per
    history."""
    st = rng_states(seed, n_batches)
    tally, acc = runner(st, n_per_batch, edges, *source, *tables)
    w = source[-1] / n_per_batch              # per decay, per batch
    m, dev, a = _tally_part(tally, acc, w, expected, normalise, settings, label)
    settings[count_key] = float(acc[:, 1].sum()) / (n_per_batch * n_batches)
    return _SourcePart(m, dev, a[0], a[2], a[3] if a.size > 3 else 0.0)


def _merge(part_e: _SourcePart, part_p: _SourcePart, photon_local: float,
           n_batches: int) -> dict:
    """The :class:`DPKResult` fields of the two sources together (the photon lines below
    the cut deposited in the first shell; the last tally slot counted as escaped)."""
    n = part_e.shell_mev.size
    mean_all = np.zeros(n)
    mean_all += part_e.shell_mev
    mean_all += part_p.shell_mev
    dev_all = np.zeros((n_batches, n))
    dev_all += part_e.dev
    dev_all += part_p.dev
    energy_e = np.zeros(n) + part_e.shell_mev
    energy_p = np.zeros(n) + part_p.shell_mev
    mean_all[0] += photon_local
    energy_p[0] += photon_local
    emitted_p = part_p.emitted_mev + photon_local
    # the last column holds energy beyond the last edge (none for electrons in practice)
    escaped = 0.0 + part_e.escaped_mev + part_p.escaped_mev + float(mean_all[-1])
    mean = mean_all[:-1]
    sem = dev_all[:, :-1].std(axis=0, ddof=1) / math.sqrt(n_batches)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(mean > 0, sem / mean, 0.0)
    return {"energy_mev": mean, "rel_uncertainty": rel,
            "emitted_mev": part_e.emitted_mev + emitted_p,
            "bremsstrahlung_mev": part_e.brems_mev, "escaped_mev": escaped,
            "electron_mev": part_e.emitted_mev, "photon_mev": emitted_p,
            "electron_shell_mev": energy_e[:-1], "photon_shell_mev": energy_p[:-1],
            "batch_deviation_mev": dev_all[:, :-1]}


def _expected_electron_mev(beta_yield, e, p, line_e, line_cum) -> float:
    """Mean electron energy per decay of the sampler's source: beta_yield x the mean of
    the piecewise-linear spectrum (exact per segment) + sum of line energies x yields."""
    mean_beta = 0.0
    if beta_yield > 0 and e.size > 1:
        h = np.diff(e)
        mean_beta = float(np.sum(h * (p[:-1] * (2 * e[:-1] + e[1:])
                                      + p[1:] * (e[:-1] + 2 * e[1:])) / 6.0))
    yields = np.diff(np.concatenate([[0.0], line_cum]))
    return beta_yield * mean_beta + float(np.sum(line_e * yields))


def _tally_part(tally, acc, w: float, expected: float, normalise: bool, settings: dict,
                label: str):
    """One source's batches (tally[n_batches, n_edges], acc[n_batches, k] per history
    sums, weight w per decay) -> (mean tally per decay, linearised deviations, acc means
    per decay), normalised by :func:`_ratio_estimate`; records the sampled and expected
    emitted energy in ``settings``."""
    settings[f"{label}_mev_sampled"] = float(acc[:, 2].mean()) * w
    settings[f"{label}_mev_expected"] = expected
    r, m, dev = _ratio_estimate(tally * w, acc[:, 2] * w, expected, normalise)
    return m, dev, r * acc.mean(axis=0) * w


def _ratio_estimate(tally_b: np.ndarray, sampled_b: np.ndarray, expected: float,
                    normalise: bool):
    """Ratio estimator over batches: R = expected / mean_b(sampled_b) (one global ratio:
    a ratio per batch would be biased by ~CV^2/n for small batches, e.g. one GPU thread
    per batch), the mean tally R mean_b(tally_b), and the linearised (delta-method)
    deviations R (tally_b - mean(tally)/mean(sampled) sampled_b) whose standard error is
    the estimator's.  Without normalisation: R = 1 and plain deviations."""
    t_mean = tally_b.mean(axis=0)
    x_mean = float(sampled_b.mean())
    if not normalise or expected <= 0 or x_mean <= 0:
        return 1.0, t_mean, tally_b - t_mean[None, :]
    r = expected / x_mean
    dev = r * (tally_b - (t_mean / x_mean)[None, :] * sampled_b[:, None])
    return r, r * t_mean, dev


def write_dpk_csv(path, r_mm, dose, rel_uncertainty=None) -> None:
    """Write ``r_mm,dose_Gy_per_decay[,rel_uncertainty]`` (one header line)."""
    cols = [np.asarray(r_mm, float), np.asarray(dose, float)]
    header = "r_mm,dose_Gy_per_decay"
    fmt = ["%.6g", "%.8e"]
    if rel_uncertainty is not None:
        cols.append(np.asarray(rel_uncertainty, float))
        header += ",rel_uncertainty"
        fmt.append("%.4g")
    np.savetxt(path, np.column_stack(cols), delimiter=",", header=header, comments="",
               fmt=fmt)


# ---------------------------------------------------------------------------------------
# Tables built on first use: plan the histories with a pilot run, then build
# ---------------------------------------------------------------------------------------
@dataclass
class BuildPlan:
    """The histories of a table to build, how they were chosen and what they should cost.

    ``histories_spec``: ``"auto"`` (planned from the pilot for :data:`PLAN_REL_UNCERTAINTY`
    in every score) or the ``[electrons, photons]`` asked for; ``estimate_s``: wall seconds
    expected on this machine (from the pilot's rates; None without a pilot); ``pilot``: its
    histories, rates and per-score uncertainties; ``scores`` [m, n_shells] and
    ``score_labels``: the linear functions of the shell energies the plan is for (the
    build reports their achieved uncertainty).
    """

    n_electrons: int
    n_photons: int
    histories_spec: str | list = "auto"
    estimate_s: float | None = None
    pilot: dict | None = None
    scores: np.ndarray | None = None
    score_labels: list | None = None


def check_buildable(nuclide: str | Nuclide) -> None:
    """:class:`InputError` (before any work) when the transport cannot make the nuclide's
    table: electrons above :data:`MAX_ELECTRON_MEV` or photons above :data:`MAX_PHOTON_MEV`."""
    nuc = load_nuclide(nuclide) if isinstance(nuclide, str) else nuclide
    _table_limits(nuc, _photon_emissions(nuc)[0])


def default_edges(nuc: Nuclide, medium="water") -> np.ndarray:
    """The shell edges (mm) :func:`simulate_dpk` uses when given none."""
    med = media.get_medium(medium)
    return shell_edges(nuc, r_max_mm=R_MAX_MM / min(1.0, float(med["density_g_cm3"])),
                       with_photons=True, medium=med)


def score_statistics(res: DPKResult, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value, standard error) of each linear score ``scores @ energy_mev`` of a table (one
    row per score), the error from the batches' linearised deviations."""
    w = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    value = w @ res.energy_mev
    dev = res.batch_deviation_mev @ w.T
    return value, dev.std(axis=0, ddof=1) / math.sqrt(dev.shape[0])


def _required(alpha: np.ndarray, beta: np.ndarray, n_other: float) -> float:
    """Histories of one source so that alpha/N + beta/n_other <= 1 for every score (inf
    when n_other alone already exceeds the budget of a score)."""
    room = 1.0 - beta / n_other
    if np.any((room <= 0) & (alpha > 0)):
        return math.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.max(np.where(alpha > 0, alpha / room, 0.0), initial=0.0))


def planned_histories(value_e, se_e, value_p, se_p, n_pilot: int, s_per_electron: float,
                      s_per_photon: float, *, electrons: bool = True, photons: bool = True,
                      target: float = PLAN_REL_UNCERTAINTY,
                      lo: int = MIN_BUILD_HISTORIES, hi: int = MAX_BUILD_HISTORIES
                      ) -> tuple[int, int]:
    """(electrons, photons) of least expected time for which every score's relative
    uncertainty is at most ``target``, from electron-only and photon-only pilots of
    ``n_pilot`` histories each (their score values and standard errors; sigma^2 ~ 1/N;
    scores without a value are left out).

    A score of value S = S_e + S_p needs ``a_e/N_e + a_p/N_p <= (target S)^2`` with the
    per-history variances a = se^2 n_pilot; the photon-to-electron ratio is searched on a
    logarithmic grid (cost s_e N_e + s_p N_p).  Each source with emissions gets at least
    ``lo``, at most ``hi``, rounded up to 10 000; a source without emissions gets 0."""
    v = np.asarray(value_e, float) + np.asarray(value_p, float)
    ok = np.isfinite(v) & (v > 0)
    budget = (target * v[ok]) ** 2
    alpha = np.asarray(se_e, float)[ok] ** 2 * n_pilot / budget if electrons else 0 * budget
    beta = np.asarray(se_p, float)[ok] ** 2 * n_pilot / budget if photons else 0 * budget
    alpha, beta = np.nan_to_num(alpha), np.nan_to_num(beta)
    if electrons and photons:
        best = None
        for rho in np.geomspace(1e-4, 1e4, 401):           # N_p / N_e
            n_e = float(np.max(alpha + beta / rho, initial=0.0))
            n_e, n_p = min(hi, max(n_e, lo)), min(hi, max(rho * n_e, lo))
            # a floor frees budget for the other source, a ceiling asks more of it
            n_e = min(hi, max(lo, _required(alpha, beta, n_p)))
            n_p = min(hi, max(lo, _required(beta, alpha, n_e)))
            worst = float(np.max(alpha / n_e + beta / n_p, initial=0.0))
            key = (worst > 1.0 + 1e-9, worst if worst > 1.0 + 1e-9 else 0.0,
                   s_per_electron * n_e + s_per_photon * n_p)   # feasible first, cheapest
            if best is None or key < best[0]:
                best = (key, n_e, n_p)
        n_e, n_p = best[1], best[2]
    else:
        n_e = float(np.max(alpha, initial=0.0)) if electrons else 0.0
        n_p = float(np.max(beta, initial=0.0)) if photons else 0.0

    def rounded(n: float, on: bool) -> int:
        return int(min(hi, max(lo, math.ceil(n / 10_000) * 10_000))) if on else 0

    return rounded(n_e, electrons), rounded(n_p, photons)


def _pilot(nuc: Nuclide, medium, seed: int, scores: np.ndarray) -> dict:
    """Electron-only and photon-only pilot runs: seconds per history (the transport
    already compiled) and each score's value and standard error."""
    out = {"n_histories": PILOT_HISTORIES}
    for label, ne, npb in (("electron", PILOT_HISTORIES, 0), ("photon", 0, PILOT_HISTORIES)):
        t0 = time.perf_counter()
        res = simulate_dpk(nuc, ne, npb, seed=seed + 1, n_batches=BUILD_BATCHES, medium=medium)
        out[f"{label}_s_per_history"] = (time.perf_counter() - t0) / PILOT_HISTORIES
        _, se = score_statistics(res, scores)
        # each source's own share: the photon lines below the transport's cut sit in the
        # first shell of both runs, and belong to the photons
        value = scores @ (res.electron_shell_mev if label == "electron" else
                          res.photon_shell_mev)
        out[f"{label}_score_values"] = [float(x) for x in value]
        out[f"{label}_score_standard_errors"] = [float(x) for x in se]
        out[f"{label}_first_shells_rel_uncertainty"] = res.first_shells_rel_uncertainty()
    return out


def plan_build(nuclide: str | Nuclide, medium="water", histories=None, *, scores,
               seed: int = BUILD_SEED) -> BuildPlan:
    """The :class:`BuildPlan` of a table of ``nuclide`` in ``medium``.

    ``scores``: a callable ``(edges_mm, density_g_cm3) -> (W, labels)`` giving the linear
    functions of the table's shell energies to plan for (one row of W each; the project
    plans for the voxel kernel's first shells of voxels,
    :func:`voxdose.kernels.voxel.voxel_shell_scores`).  ``histories`` None: electron-only
    and photon-only pilots (:data:`PILOT_HISTORIES` each) measure every score's
    uncertainty per history and the cost of a history; :func:`planned_histories` gives the
    cheapest (electrons, photons) for :data:`PLAN_REL_UNCERTAINTY` in every score.
    ``histories`` (electrons, photons): used as given; a pilot only times them when they
    are many.
    """
    nuc = load_nuclide(nuclide) if isinstance(nuclide, str) else nuclide
    check_buildable(nuc)
    med = media.get_medium(medium)
    w, labels = scores(default_edges(nuc, med), float(med["density_g_cm3"]))
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    labels = list(labels)
    # compile (or load from Numba's cache) the transport, so that the pilot times transport
    simulate_dpk(nuc, 200, 200, n_batches=2, seed=1, medium=medium, r_max_mm=10.0)
    if histories is not None:
        n_e, n_p = (max(0, int(v)) for v in histories)
        if n_e + n_p <= 2 * PILOT_HISTORIES:
            return BuildPlan(n_e, n_p, [n_e, n_p], scores=w, score_labels=labels)
    pilot = _pilot(nuc, medium, seed, w)
    if histories is None:
        n_e, n_p = planned_histories(
            pilot["electron_score_values"], pilot["electron_score_standard_errors"],
            pilot["photon_score_values"], pilot["photon_score_standard_errors"],
            PILOT_HISTORIES, pilot["electron_s_per_history"], pilot["photon_s_per_history"],
            electrons=_emission_arrays(nuc)[-1] > 0,
            photons=bool(_photon_emissions(nuc)[0].size))
    est = n_e * pilot["electron_s_per_history"] + n_p * pilot["photon_s_per_history"]
    return BuildPlan(n_e, n_p, "auto" if histories is None else [n_e, n_p], est, pilot,
                     w, labels)


def build_dpk(nuclide: str | Nuclide, medium="water", plan: BuildPlan | None = None, *,
              scores=None, seed: int = BUILD_SEED) -> DPKResult:
    """Build the table of a nuclide without a shipped one: :func:`simulate_dpk` with the
    histories of ``plan`` (default :func:`plan_build` with ``scores``),
    :data:`BUILD_BATCHES` batches and ``seed``.  ``record()['settings']['build']`` holds
    the plan, the target and each score's achieved uncertainty (``target_met``)."""
    nuc = load_nuclide(nuclide) if isinstance(nuclide, str) else nuclide
    if plan is None:
        if scores is None:
            raise InputError("build_dpk needs a plan or the scores to plan for")
        plan = plan_build(nuc, medium, scores=scores, seed=seed)
    res = simulate_dpk(nuc, plan.n_electrons, plan.n_photons, seed=seed,
                       n_batches=BUILD_BATCHES, medium=medium)
    value, se = score_statistics(res, plan.scores)
    with np.errstate(divide="ignore", invalid="ignore"):
        achieved = [float(x) for x in np.where(value > 0, se / value, 0.0)]
    res.settings["build"] = {
        "histories": plan.histories_spec,
        "planned_for": "the voxel kernel's first shells of voxels (sum of S over each shell)",
        "scores": plan.score_labels,
        "target_rel_uncertainty": TARGET_REL_UNCERTAINTY,
        "planned_for_rel_uncertainty": PLAN_REL_UNCERTAINTY if plan.pilot else None,
        "achieved_rel_uncertainty": achieved,
        "target_met": bool(max(achieved, default=0.0) <= TARGET_REL_UNCERTAINTY),
        "estimate_s": plan.estimate_s,
        "pilot": plan.pilot,
    }
    return res
