"""Figures of the organ-level time-activity fits (``tac/tac_<organ>.png``).

The curves are evaluated where the fits are (:func:`tac_curves`, from the fit's own model
definitions); the figures get plain arrays and strings (:class:`TacCurves`), so the
figure helper that draws them needs neither the fitter nor Numba."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .png import save_png

#: Points of each model curve, from t = 0 to 1.3 x the last time point.
CURVE_POINTS = 400


@dataclass(frozen=True)
class TacCurves:
    """One structure's figure: measured points and every valid model curve (MBq, h)."""

    name: str
    best: str
    times_h: np.ndarray
    activity_mbq: np.ndarray
    grid_h: np.ndarray
    curves: tuple   # ((model, curve MBq on grid_h, legend label), ...)


def tac_curves(fits) -> list[TacCurves]:
    """What :func:`plot_tacs` draws, from the organ fits (``kinetics.organ.OrganFit``):
    every valid model but the trapezoid; ``stp`` (single time point) carries a
    mono-exponential's A and lambda."""
    from ..kinetics.models import MODEL_IDS, model_curve

    out = []
    for of in fits:
        if not of.fits:
            continue
        t_h = np.asarray(of.times_s, dtype=np.float64) / 3600.0
        grid_h = np.linspace(0.0, t_h[-1] * 1.3, CURVE_POINTS)
        curves = []
        for m, v in of.fits.items():
            if m == "trapz" or not v["valid"]:
                continue
            mid = MODEL_IDS["mono"] if m == "stp" else MODEL_IDS[m]
            curves.append((m, model_curve(mid, list(v["params"].values()), grid_h) / 1e6,
                           f"{m}: TIA {v['tia_bq_s'] / 3.6e9:.4g} MBq·h, AICc "
                           f"{v['aicc']:.1f}"))
        out.append(TacCurves(of.name, of.best, t_h,
                             np.asarray(of.activity_bq, dtype=np.float64) / 1e6, grid_h,
                             tuple(curves)))
    return out


def plot_tacs(out_dir: Path, curves: list[TacCurves]) -> list[str]:
    """One PNG per structure: measured activity and every valid model curve (best in bold).
    ``curves``: :func:`tac_curves` of the fits. Returns the file names written into
    ``out_dir``.

    One figure serves every structure: its lines, legend and title are replaced and the
    axes rescaled (a new figure per structure spent most of its time building axes and
    ticks again: 13 figures per run)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if not all(isinstance(c, TacCurves) for c in curves):
        raise TypeError("plot_tacs takes tac_curves(fits), not the fits themselves")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if not curves:
        return written
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.set_xlabel("time after administration (h)")
    ax.set_ylabel("activity (MBq)")
    ax.grid(alpha=0.3)
    # fixed margins for this fixed layout (tight_layout measured every label again)
    fig.subplots_adjust(left=0.13, right=0.975, bottom=0.12, top=0.92)
    title = ax.set_title("", fontsize=10, y=1.0)   # y given: no search for a free place
    try:
        for tc in curves:
            for artist in list(ax.lines):
                artist.remove()
            ax.set_prop_cycle(None)           # every figure starts at the first colour
            ax.plot(tc.times_h, tc.activity_mbq, "ko", label="measured")
            for m, curve, label in tc.curves:
                ax.plot(tc.grid_h, curve, lw=2.2 if m == tc.best else 0.9, label=label)
            ax.relim()
            ax.autoscale_view()
            title.set_text(f"{tc.name}: chosen {tc.best}")
            ax.legend(fontsize=7)
            path = out_dir / f"tac_{tc.name}.png"
            save_png(fig, path, close=False)
            written.append(path.name)
    finally:
        plt.close(fig)
    return written
