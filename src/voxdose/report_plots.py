"""Figures for the results folder: cumulative DVHs and dose slices (matplotlib, no screen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .analysis.dvh import DVH
from .io.atomic import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_dvhs(path: Path, dvhs: list[DVH], title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for h in dvhs:
        if h.n_voxels == 0:
            continue
        edges, frac = h.cumulative()
        ax.plot(edges, 100 * frac, label=f"{h.name} ({h.mean_gy:.2f} Gy)")
    ax.set_xlabel("absorbed dose (Gy)")
    ax.set_ylabel("volume receiving >= dose (%)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_dose_slices(path: Path, dose_gy: np.ndarray, spacing_mm_zyx, labels: np.ndarray | None,
                     centre_zyx, title: str) -> None:
    """Axial and coronal slices through ``centre_zyx`` (array indices), dose in Gy."""
    plt = _plt()
    sz, sy, sx = spacing_mm_zyx
    cz, cy, _ = (int(c) for c in centre_zyx)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), dpi=110)
    vmax = float(np.percentile(dose_gy[dose_gy > 0], 99.5)) if np.any(dose_gy > 0) else 1.0
    views = [("axial", dose_gy[cz], None if labels is None else labels[cz], sy, sx),
             ("coronal", dose_gy[:, cy, :], None if labels is None else labels[:, cy, :], sz, sx)]
    im = None
    for ax, (name, img, lab, s_row, s_col) in zip(axes, views):
        origin = "upper" if name == "axial" else "lower"
        im = ax.imshow(img, cmap="inferno", vmin=0, vmax=vmax, origin=origin,
                       aspect=s_row / s_col, interpolation="nearest")
        if lab is not None:
            # contour's default puts lab[0, 0] at data (0, 0), as imshow does on its axes
            ax.contour(lab, levels=np.arange(0.5, lab.max() + 1), colors="cyan",
                       linewidths=0.4)
        ax.set_title(f"{name} slice", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, label="absorbed dose (Gy)", shrink=0.85)
    fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
