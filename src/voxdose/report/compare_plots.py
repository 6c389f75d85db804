"""Figures of the nuclide comparison: radial DPKs with r90, DVH overlay per structure."""

from __future__ import annotations

import math

import numpy as np

from ..analysis.compare import SAME_DECAYS, SWAPPED_DECAY, NuclideComparison, r90_mm

def plot_dpks(path, nuclides, r_max_mm: float = 20.0, point_kernels=None) -> None:
    """Radial dose point kernels r^2 D(r) (Gy mm^2 per decay) with r90 (electrons) marked:
    ``point_kernels`` {nuclide: kernel} where given (the comparison's own, e.g. a study's
    DPK table), else the shipped table."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ..kernels.point import load_point_kernel
    from .png import fixed_margins, save_png

    from ..kernels.extent import dpk_rows

    given = point_kernels or {}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for nuc in nuclides:
        pk = given[nuc] if nuc in given else load_point_kernel(nuc)
        # the table's shells at their mid radii: D is a shell average, so r^2 D evaluated
        # inside a shell would rise as r^2 up to the next edge (a sawtooth, not physics)
        r, d = (np.asarray(v) for v in dpk_rows(pk))
        keep = (r > 0) & (r <= r_max_mm)
        r, y = r[keep], r[keep] ** 2 * d[keep]
        r90 = r90_mm(pk)
        line, = ax.plot(r, y, label=f"{pk.nuclide} (electron r90 = {r90:.2f} mm)")
        ax.axvline(r90, color=line.get_color(), ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("distance r (mm)")
    ax.set_ylabel("r^2 D(r) (Gy mm^2 per decay)")
    ax.set_title("radial dose point kernels in water (shell averages at mid radius)\n"
                 "dashed: r90 of the electron energy",
                 fontsize=9, y=1.0)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.subplots_adjust(**fixed_margins(fig, left_in=0.9, right_in=0.15, bottom_in=0.55,
                                        top_in=0.5))
    save_png(fig, path)


def tia_basis_label(results: list[NuclideComparison]) -> str:
    """The figure's statement of which decays each nuclide got (from the results)."""
    bases = {r.tia_basis for r in results}
    if bases == {SAME_DECAYS}:
        return "same decays (TIA map) for every nuclide"
    if bases == {SWAPPED_DECAY}:
        return "each nuclide's own decays (study's biological kinetics, own half-life)"
    return "; ".join(f"{r.nuclide}: {r.tia_basis.split(':')[0]}" for r in results)


def plot_dvh_overlay(path, results: list[NuclideComparison], max_panels: int = 16) -> None:
    """One panel per structure with each nuclide's cumulative DVH."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from .png import fixed_margins, save_png

    names = [h.name for h in results[0].dvhs if h.n_voxels][:max_panels]
    n = max(1, len(names))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), dpi=100,
                             squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        top = max(next(h for h in r.dvhs if h.name == name).max_gy for r in results)
        for r in results:
            h = next(h for h in r.dvhs if h.name == name)
            e, f = h.cumulative(200, max_dose_gy=top)
            ax.plot(e, 100 * f, label=f"{r.nuclide} ({h.mean_gy:.2g} Gy)")
        ax.set_title(name, fontsize=8, y=1.0)   # y given: no search for a free place
        ax.set_ylim(0, 101)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.supxlabel(f"absorbed dose (Gy); {tia_basis_label(results)}", fontsize=8)
    fig.supylabel("volume >= dose (%)", fontsize=8)
    # fixed margins in inches (tight_layout measured every panel's labels again: half of
    # this figure's time with 13 panels)
    fig.subplots_adjust(**fixed_margins(fig, left_in=0.85, right_in=0.12, bottom_in=0.55,
                                        top_in=0.28), wspace=0.28, hspace=0.5)
    save_png(fig, path)
