"""One way to write a matplotlib figure as PNG: atomically, fast, and closed afterwards."""

from __future__ import annotations

import threading
from pathlib import Path

from ..io.atomic import atomic_path

#: zlib level of the PNG encoder (PIL's default is 6). Figures are flat colour and lines:
#: level 1 writes them ~2x faster for files ~10-30 % larger (measured on the demo's figures,
#: docs/benchmarks.md); the pixels are the same.
PNG_COMPRESS_LEVEL = 1


def save_png(fig, path: Path, close: bool = True, **savefig_kw) -> None:
    """``fig.savefig`` into ``path`` as PNG through a temporary name (no partial file), then
    close the figure (pyplot keeps every open figure alive otherwise) unless ``close`` is
    False (a figure drawn again with other data)."""
    import matplotlib.pyplot as plt

    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL},
                    **savefig_kw)
    if close:
        plt.close(fig)


def import_matplotlib_in_background() -> threading.Thread:
    """Import matplotlib (Agg) and pyplot on a daemon thread, so that a pipeline's first
    figure does not wait for it (~1 s of imports, overlapped with the computing stages,
    which spend most of their time in FFTs and Numba code that release the GIL)."""
    def _import() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg", force=True)
            import matplotlib.pyplot
        except Exception:  # pragma: no cover - the figure itself will report the problem
            pass

    t = threading.Thread(target=_import, name="voxdose-import-matplotlib", daemon=True)
    t.start()
    return t


def fixed_margins(fig, left_in: float, right_in: float, bottom_in: float, top_in: float
                  ) -> dict:
    """``subplots_adjust`` keywords for margins given in inches (a fixed layout's labels
    need the same room at any figure size). ``tight_layout`` found such margins by
    measuring every label again at every save: 20-50 % of a one-panel figure's time."""
    w_in, h_in = fig.get_size_inches()
    return {"left": left_in / w_in, "right": 1 - right_in / w_in,
            "bottom": bottom_in / h_in, "top": 1 - top_in / h_in}
