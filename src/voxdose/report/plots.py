"""Figures for the results folder (matplotlib, no screen): cumulative DVHs, dose slices
(optionally over CT) and a registration check (checkerboard, edges, difference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..analysis.dvh import DVH
from ..core.errors import InputError
from .png import fixed_margins, save_png

#: CT display window (HU) under dose overlays and in registration checks.
CT_WINDOW_HU = (-200.0, 400.0)
#: Dose below this fraction of the displayed maximum is transparent over CT.
DOSE_OVERLAY_FLOOR = 0.02
#: Percentile of the positive dose the slice colour scale tops at. 99.5 put the demo's cap
#: (5.86 Gy) inside the kidneys' own range (mean 5.75 Gy, D2 5.95 Gy): half of each kidney
#: was drawn in the over-range colour, as if it were a hot spot. 99.9 (10.1 Gy) keeps the
#: organs and the marrow (9-10 Gy) on the scale and the lesions (14-39 Gy, 0.08 % of the
#: voxels) over it.
DOSE_SCALE_PERCENTILE = 99.9


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _line_styles(n: int):
    """n distinct (colour, line style) pairs: 10 colours, then the same colours dashed,
    dotted and dash-dotted (no two curves alike up to 40 structures)."""
    from matplotlib import colormaps

    colours = colormaps["tab10"].colors
    styles = ("-", "--", ":", "-.")
    return [(colours[k % 10], styles[(k // 10) % 4]) for k in range(n)]


def plot_dvhs(path: Path, dvhs: list[DVH], title: str, bands: dict | None = None,
              band_label: str = r"shaded: DVHs of $D - \sigma_D$ and $D + \sigma_D$"
              ) -> None:
    """Cumulative DVHs on a linear dose axis; the legend gives each structure's mean dose.

    ``bands``: structure name -> (dose edges Gy, lower, upper volume fractions), drawn as
    a shaded band in the structure's colour (see
    :mod:`voxdose.analysis.dvh_uncertainty`), explained by ``band_label``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    shown = [h for h in dvhs if h.n_voxels]
    for h, (colour, style) in zip(shown, _line_styles(len(shown))):
        edges, frac = h.cumulative()
        ax.plot(edges, 100 * frac, color=colour, ls=style, lw=1.3,
                label=f"{h.name} (mean {h.mean_gy:.3g} Gy)")
        if bands and h.name in bands:
            e, lo, hi = bands[h.name]
            ax.fill_between(e, 100 * np.asarray(lo), 100 * np.asarray(hi), color=colour,
                            alpha=0.18, lw=0)
    if bands:  # one legend entry explains every band
        ax.fill_between([], [], [], color="0.5", alpha=0.35, lw=0, label=band_label)
    ax.set_xlabel("absorbed dose (Gy), linear axis")
    ax.set_ylabel("volume receiving >= dose (%)")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10, y=1.0)   # y given: no search for a free place
    ax.legend(fontsize=7, ncol=2)
    fig.subplots_adjust(**fixed_margins(fig, left_in=0.75, right_in=0.15, bottom_in=0.55,
                                        top_in=0.35))
    save_png(fig, path)


#: LPS letters at the positive end of each world axis (x, y, z) and at the negative end.
_POS_LETTER, _NEG_LETTER = "LPS", "RAI"


def axis_letters(affine, index_axis: int) -> tuple[str, str]:
    """(letter at the low-index end, letter at the high-index end) of array axis
    ``index_axis`` (0 = z, 1 = y, 2 = x) for a grid affine (index -> LPS mm): the patient
    direction its index increases along (dominant component)."""
    v = np.asarray(affine, dtype=np.float64)[:3, index_axis]
    c = int(np.argmax(np.abs(v)))
    pos, neg = _POS_LETTER[c], _NEG_LETTER[c]
    return (neg, pos) if v[c] > 0 else (pos, neg)


def _annotate_view(ax, shape_rc, s_row, s_col, row_letters, col_letters, origin) -> None:
    """Orientation letters at the four edges and a scale bar (mm) at the bottom left."""
    kw = {"transform": ax.transAxes, "color": "white", "fontsize": 9, "fontweight": "bold",
          "ha": "center", "va": "center"}
    top, bottom = (row_letters[0], row_letters[1]) if origin == "upper" else \
        (row_letters[1], row_letters[0])
    ax.text(0.5, 0.96, top, **kw)
    ax.text(0.5, 0.04, bottom, **kw)
    ax.text(0.03, 0.5, col_letters[0], **kw)
    ax.text(0.97, 0.5, col_letters[1], **kw)
    width_mm = shape_rc[1] * s_col
    bar_mm = next(b for b in (200, 100, 50, 20, 10, 5, 2, 1) if b <= 0.3 * width_mm or b == 1)
    x0, n_rows = 0.05 * shape_rc[1], shape_rc[0]
    y = 0.93 * n_rows if origin == "upper" else 0.07 * n_rows
    ax.plot([x0, x0 + bar_mm / s_col], [y, y], color="white", lw=2.5, solid_capstyle="butt")
    ax.text(x0 + 0.5 * bar_mm / s_col, y - 0.035 * n_rows * (1 if origin == "upper" else -1),
            f"{bar_mm:g} mm", color="white", fontsize=7, ha="center", va="center")


def plot_dose_slices(path: Path, dose_gy: np.ndarray, spacing_mm_zyx, labels: np.ndarray | None,
                     centre_zyx, title: str, ct_hu: np.ndarray | None = None,
                     affine=None) -> None:
    """Axial and coronal slices through ``centre_zyx`` (array indices), dose in Gy.

    The colour scale tops at the :data:`DOSE_SCALE_PERCENTILE` (99.9th) percentile of the
    positive dose (so small hot spots do not wash out the organs); voxels above it are
    drawn in the over-range colour and the colour bar is extended, with the true maximum
    in the title.  Orientation letters come from ``affine`` (index -> LPS mm; default:
    axis-aligned LPS with ``spacing_mm_zyx``), and each view has a scale bar in mm.

    With ``ct_hu`` (CT in HU on the dose grid, same shape), the CT is drawn in grey (window
    :data:`CT_WINDOW_HU`) under a semi-transparent dose colour map; dose below
    :data:`DOSE_OVERLAY_FLOOR` of the displayed maximum is left transparent.
    """
    plt = _plt()
    dose_gy = np.asarray(dose_gy)
    if ct_hu is not None:
        ct_hu = np.asarray(ct_hu)
        if ct_hu.shape != dose_gy.shape:
            raise InputError(f"CT shape {ct_hu.shape} differs from the dose shape "
                             f"{dose_gy.shape}; resample the CT onto the dose grid first")
    sz, sy, sx = spacing_mm_zyx
    cz, cy, _ = _clamped_centre(centre_zyx, dose_gy.shape)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), dpi=110, layout="constrained")
    vmax = (float(np.percentile(dose_gy[dose_gy > 0], DOSE_SCALE_PERCENTILE))
            if np.any(dose_gy > 0) else 1.0)
    vmax = vmax if vmax > 0 else 1.0
    dmax = float(np.max(dose_gy)) if dose_gy.size else 0.0
    over = dmax > vmax * (1 + 1e-9)
    if affine is None:
        affine = np.zeros((4, 4))
        affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = sx, sy, sz, 1.0
    letters = [axis_letters(affine, a) for a in range(3)]

    def cut(a, name):
        if a is None:
            return None
        return a[cz] if name == "axial" else a[:, cy, :]

    im = None
    for ax, (name, s_row, s_col) in zip(axes, [("axial", sy, sx), ("coronal", sz, sx)]):
        origin = "upper" if name == "axial" else "lower"
        img, lab, ct = cut(dose_gy, name), cut(labels, name), cut(ct_hu, name)
        common = {"origin": origin, "aspect": s_row / s_col, "interpolation": "nearest"}
        if ct is None:
            cmap = _with_over(plt.get_cmap("inferno"), "lime")
            im = ax.imshow(img, cmap=cmap, vmin=0, vmax=vmax, **common)
        else:
            ax.imshow(ct, cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], **common)
            shown = np.ma.masked_less(img, DOSE_OVERLAY_FLOOR * vmax)
            im = ax.imshow(shown, cmap=_with_over(_overlay_cmap(), "magenta"), vmin=0,
                           vmax=vmax, **common)
        rows = letters[1] if name == "axial" else letters[0]
        _annotate_view(ax, img.shape, s_row, s_col, rows, letters[2], origin)
        if lab is not None and lab.max() > 0:
            # contour's default puts lab[0, 0] at data (0, 0), as imshow does on its axes
            ax.contour(lab, levels=np.arange(0.5, lab.max() + 1),
                       colors="cyan" if ct is None else "white", linewidths=0.4)
        ax.set_title(f"{name} slice" + ("" if ct is None else " over CT"), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes, label="absorbed dose (Gy)", shrink=0.85,
                 extend="max" if over else "neither")
    if over:
        title = (f"{title}\ncolour scale capped at the {DOSE_SCALE_PERCENTILE:g}th percentile, "
                 f"{vmax:.3g} Gy; "
                 f"above it in the over-range colour (maximum {dmax:.3g} Gy)")
    if ct_hu is not None:
        title = (f"{title}\nCT window {CT_WINDOW_HU[0]:g} to {CT_WINDOW_HU[1]:g} HU; dose below "
                 f"{100 * DOSE_OVERLAY_FLOOR:g} % of {vmax:.3g} Gy not drawn")
    fig.suptitle(title, fontsize=10)
    save_png(fig, path)


def _with_over(cmap, colour: str):
    """A copy of ``cmap`` that draws values above its top in ``colour``."""
    return cmap.with_extremes(over=colour)


def _overlay_cmap():
    """'jet' whose opacity rises with dose (0.25 at 0 to 0.8 at the top), so low doses
    tint the CT and high doses dominate it."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    rgba = colormaps["jet"](np.linspace(0, 1, 256))
    rgba[:, 3] = np.linspace(0.25, 0.8, 256)
    return ListedColormap(rgba, name="jet_ramp")


def _clamped_centre(centre_zyx, shape) -> tuple[int, int, int]:
    return tuple(int(min(max(int(round(float(c))), 0), n - 1))
                 for c, n in zip(centre_zyx, shape))


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """2-D image with ``tiles`` x ``tiles`` tiles alternately from ``a`` (top-left) and ``b``."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"checkerboard needs two 2-D images of one shape, got {a.shape}, "
                         f"{b.shape}")
    rows = np.arange(a.shape[0]) * tiles // max(a.shape[0], 1)
    cols = np.arange(a.shape[1]) * tiles // max(a.shape[1], 1)
    use_a = (rows[:, None] + cols[None, :]) % 2 == 0
    return np.where(use_a, a, b)


def edge_map(img: np.ndarray, spacing_rc_mm=(1.0, 1.0), fraction: float = 0.25) -> np.ndarray:
    """Boolean edges of a 2-D CT slice: gradient magnitude (HU/mm) above ``fraction`` of its
    99th percentile (so the threshold follows the image's own contrast)."""
    from scipy import ndimage

    a = np.asarray(img, dtype=np.float64)
    g_r = ndimage.sobel(a, axis=0) / (8.0 * float(spacing_rc_mm[0]))
    g_c = ndimage.sobel(a, axis=1) / (8.0 * float(spacing_rc_mm[1]))
    mag = np.hypot(g_r, g_c)
    top = float(np.percentile(mag, 99)) if mag.size else 0.0
    return mag > fraction * top if top > 0 else np.zeros(a.shape, bool)


def plot_registration_check(path: Path, fixed_hu: np.ndarray, moving_hu, spacing_mm_zyx,
                            centre_zyx, title: str, tiles: int = 8,
                            window_hu=CT_WINDOW_HU, row_labels=None) -> None:
    """Visual check of registrations: the fixed (reference) CT against one or more moving
    CTs resampled onto it (``moving_hu``: a 3-D array or a list of them, one row each;
    ``row_labels``: one per moving CT). Cuts the axial plane ``centre_zyx[0]`` and the
    coronal plane ``centre_zyx[1]`` and draws them with :func:`plot_registration_rows`.
    NaN (outside the moving field of view) counts as air (-1000 HU)."""
    fixed = np.asarray(fixed_hu, dtype=np.float64)
    movings = [moving_hu] if isinstance(moving_hu, np.ndarray) else list(moving_hu)
    labels = list(row_labels) if row_labels is not None else \
        [f"moving {k + 1}" for k in range(len(movings))]
    if len(labels) != len(movings):
        raise InputError(f"registration check: {len(movings)} moving CTs but "
                         f"{len(labels)} row labels")
    rows = []
    for label, mv in zip(labels, movings):
        m = np.asarray(mv, dtype=np.float64)
        if fixed.shape != m.shape or fixed.ndim != 3:
            raise InputError(f"registration check needs 3-D CTs on one grid, got shapes "
                             f"{fixed.shape} and {m.shape}; resample the moving CT first")
        cz, cy, _ = _clamped_centre(centre_zyx, fixed.shape)
        rows.append((label, (fixed[cz], m[cz]), (fixed[:, cy, :], m[:, cy, :])))
    plot_registration_rows(path, rows, spacing_mm_zyx, title, tiles, window_hu)


def _registration_panels(axes, f, m, s_row, s_col, origin, name, tiles, lo, hi, first):
    """Three panels of one view: checkerboard, edges over the fixed CT, moving - fixed."""
    common = {"origin": origin, "aspect": s_row / s_col, "interpolation": "nearest"}
    axes[0].imshow(checkerboard(f, m, tiles), cmap="gray", vmin=lo, vmax=hi, **common)
    grey = np.clip((f - lo) / (hi - lo), 0, 1) * 0.5
    rgb = np.repeat(grey[..., None], 3, axis=2)
    ef, em = edge_map(f, (s_row, s_col)), edge_map(m, (s_row, s_col))
    rgb[ef, 1] = 1.0
    rgb[em, 0] = 1.0
    rgb[em, 2] = 1.0
    axes[1].imshow(rgb, **common)
    d = m - f
    im = axes[2].imshow(d, cmap="RdBu_r", vmin=-500, vmax=500, **common)
    axes[2].text(0.03, 0.04, f"mean |diff| {np.mean(np.abs(d)):.0f} HU", color="black",
                 fontsize=7, transform=axes[2].transAxes,
                 bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})
    if first:
        axes[0].set_title(f"{name}: checkerboard {tiles}x{tiles}\n(fixed / moving)",
                          fontsize=8)
        axes[1].set_title(f"{name}: edges, fixed green /\nmoving magenta / both white",
                          fontsize=8)
        axes[2].set_title(f"{name}: moving - fixed (HU)", fontsize=8)
    return im


def plot_registration_rows(path: Path, rows, spacing_mm_zyx, title: str, tiles: int = 8,
                           window_hu=CT_WINDOW_HU) -> None:
    """One row per registered time point: ``rows`` = [(label, (fixed axial, moving axial),
    (fixed coronal, moving coronal)), ...], 2-D planes in HU on one grid (axial (y, x),
    coronal (z, x)). Each row: for the axial and the coronal plane a ``tiles`` x ``tiles``
    checkerboard (fixed in the top-left tile; misalignment shows as edges broken at tile
    borders), the edges of both (fixed green, moving magenta, coincident white) over the
    fixed CT, and the difference moving - fixed (HU, +/-500). NaN counts as air."""
    if not rows:
        raise InputError("registration check: no registered time point to show")
    for label, axial, coronal in rows:   # before any figure is made
        for name, pair in (("axial", axial), ("coronal", coronal)):
            f, m = (np.shape(a) for a in pair)
            if f != m or len(f) != 2:
                raise InputError(f"registration check, {label}: the {name} planes differ in "
                                 f"shape ({f}, {m})")
    plt = _plt()
    sz, sy, sx = spacing_mm_zyx
    lo, hi = (float(w) for w in window_hu)
    fig, axes, cax = _registration_grid(plt, rows, (sz, sy, sx))
    diff_im = None
    for r, (label, axial, coronal) in enumerate(rows):
        ax_row = axes[r]
        for k, (name, pair, s_row, origin) in enumerate(
                (("axial", axial, sy, "upper"), ("coronal", coronal, sz, "lower"))):
            f, m = (np.nan_to_num(np.asarray(a, dtype=np.float64), nan=-1000.0) for a in pair)
            diff_im = _registration_panels(ax_row[3 * k:3 * k + 3], f, m, s_row, sx, origin,
                                           name, tiles, lo, hi, r == 0)
        for ax in ax_row:
            ax.set_xticks([])
            ax.set_yticks([])
        ax_row[0].set_ylabel(label, fontsize=9)
    fig.colorbar(diff_im, cax=cax, label="moving - fixed (HU)")
    fig.suptitle(f"{title}\nCT window {lo:g} to {hi:g} HU; one row per registered time "
                 "point", fontsize=10, y=1 - 0.08 / fig.get_figheight(), va="top")
    save_png(fig, path)


def _registration_grid(plt, rows, spacing_zyx):
    """(figure, rows of six axes, colour-bar axes) of the registration check, placed by
    hand: six panels per row, each panel as wide as the widest plane needs and each row as
    tall as its tallest plane at that width (no empty bands between rows), a colour bar at
    the right. A layout engine found the same places by measuring every panel's text
    again: ~40 % of the figure's time (docs/benchmarks.md)."""
    sz, sy, sx = spacing_zyx
    width_in, left_in, right_in, gap_in, cbar_in = 15.0, 0.35, 1.05, 0.08, 0.16
    panel_w = (width_in - left_in - right_in - 5 * gap_in - 0.1) / 6
    heights = []
    for _, axial, coronal in rows:
        (ny, nx), (nz, _) = np.shape(axial[0]), np.shape(coronal[0])
        heights.append(panel_w * max(ny * sy / max(nx * sx, 1e-9),
                                     nz * sz / max(nx * sx, 1e-9)))
    top_in, bottom_in, row_gap_in = 0.95, 0.12, 0.12
    height_in = top_in + bottom_in + sum(heights) + row_gap_in * (len(rows) - 1)
    fig = plt.figure(figsize=(width_in, height_in), dpi=100)
    grid = []
    y = height_in - top_in
    for h in heights:
        y -= h
        row = []
        for c in range(6):
            x = left_in + c * (panel_w + gap_in) + (0.1 if c >= 3 else 0.0)
            row.append(fig.add_axes((x / width_in, y / height_in, panel_w / width_in,
                                     h / height_in)))
        grid.append(row)
        y -= row_gap_in
    cax = fig.add_axes(((width_in - right_in + 0.2) / width_in,
                        (bottom_in + 0.1 * (height_in - top_in - bottom_in)) / height_in,
                        cbar_in / width_in,
                        0.8 * (height_in - top_in - bottom_in) / height_in))
    return fig, grid, cax
