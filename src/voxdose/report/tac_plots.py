"""Figures of the organ-level time-activity fits (``tac/tac_<organ>.png``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .png import save_png
from ..kinetics.models import MODEL_IDS, model_curve
from ..kinetics.organ import OrganFit


def plot_tacs(out_dir: Path, fits: list[OrganFit]) -> list[str]:
    """One PNG per structure: measured activity and every valid model curve (best in bold).
    Returns the file names written into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for of in fits:
        if not of.fits:
            continue
        t_h = of.times_s / 3600.0
        grid_h = np.linspace(0.0, t_h[-1] * 1.3, 400)
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        ax.plot(t_h, of.activity_bq / 1e6, "ko", label="measured")
        for m, v in of.fits.items():
            if m == "trapz" or not v["valid"]:
                continue
            # stp (single time point) carries a mono-exponential's A and lambda
            mid = MODEL_IDS["mono"] if m == "stp" else MODEL_IDS[m]
            curve = model_curve(mid, list(v["params"].values()), grid_h) / 1e6
            ax.plot(grid_h, curve, lw=2.2 if m == of.best else 0.9,
                    label=f"{m}: TIA {v['tia_bq_s'] / 3.6e9:.4g} MBq·h, AICc {v['aicc']:.1f}")
        ax.set_xlabel("time after administration (h)")
        ax.set_ylabel("activity (MBq)")
        ax.set_title(f"{of.name}: chosen {of.best}", fontsize=10, y=1.0)  # no search
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        # fixed margins for this fixed layout (tight_layout measured every label again:
        # 40 % of the figure's time, 13 figures per run)
        fig.subplots_adjust(left=0.13, right=0.975, bottom=0.12, top=0.92)
        path = out_dir / f"tac_{of.name}.png"
        save_png(fig, path)
        written.append(path.name)
    return written
