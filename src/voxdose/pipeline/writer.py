"""The results writer: every file of a results folder goes through it, and it records each
one (relative POSIX path, in write order), so ``provenance.json`` lists exactly what was
written, image sidecars and figure sets included. Also the clean-up of an earlier run's
results that a new run no longer writes.
"""

from __future__ import annotations

import json as _json
from collections.abc import Callable, Iterable
from pathlib import Path

from ..imaging.registration import write_transform
from ..io.atomic import write_json, write_text
from ..io.dicom_write import write_rt_dose
from ..io.sitk_adapter import sidecar_path, write_image
from ..report.html import write_report

PROVENANCE = "provenance.json"
REPORT = "report.html"
IMAGE_SUFFIXES = (".nii.gz", ".nii")  # images written with a JSON sidecar (write_image)


class ResultsWriter:
    """Writes into ``root`` (the staged results folder) and records what it wrote.

    Each method writes through voxdose's own helper (atomic writes) and then records the
    files that helper produced; a recorded file that is not on disk is an error, so the list
    can never claim more than the folder holds.
    """

    def __init__(self, root, renderer=None):
        self.root = Path(root)
        self._files: list[str] = []
        self.renderer = renderer   # report.render.FigureRenderer, or None: drawn here

    @property
    def files(self) -> list[str]:
        """Relative paths of every file written so far, in write order."""
        return list(self._files)

    def path(self, name: str) -> Path:
        """Absolute path of a result ``name`` (relative, inside the folder)."""
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"result name '{name}' must be a relative path inside the folder")
        return self.root / rel

    def _record(self, path) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: reported as written but not on disk")
        rel = path.relative_to(self.root).as_posix()
        if rel not in self._files:
            self._files.append(rel)

    def image(self, name: str, img, **kw) -> None:
        """An image and its JSON sidecar (``write_image``'s keywords: dtype, sidecar).
        A result with a NaN or infinite voxel (or one that would overflow the stored type)
        is never written: the run fails and nothing reaches the results folder."""
        _check_finite(name, img, kw.get("dtype"))
        p = write_image(self.path(name), img, **kw)
        self._record(p)
        self._record(sidecar_path(p))

    def text(self, name: str, s: str) -> None:
        write_text(self.path(name), s)
        self._record(self.path(name))

    def json(self, name: str, obj) -> None:
        write_json(self.path(name), obj)
        self._record(self.path(name))

    def figure(self, name: str, plot_fn: Callable, *args, **kw) -> None:
        """``plot_fn(path, *args, **kw)`` writes the file ``name``; a function that writes a
        set of files into the folder ``name`` instead returns their names (list) within it,
        like :func:`plot_tacs`. With a renderer, drawn where it draws (a figure it was
        given earlier is taken from it)."""
        if self.renderer is None:
            written = plot_fn(self.path(name), *args, **kw)
        else:
            written = self.renderer.draw(self.path(name), name, plot_fn, *args, **kw)
        if isinstance(written, (list, tuple)):
            for n in written:
                self._record(self.path(name) / n)
        else:
            self._record(self.path(name))

    def rtdose(self, name: str, dose, **kw) -> None:
        """A DICOM RT Dose (``write_rt_dose``'s keywords: reference, ...)."""
        self._record(write_rt_dose(self.path(name), dose, **kw))

    def transform(self, name: str, registration) -> None:
        write_transform(self.path(name), registration)
        self._record(self.path(name))

    def finish(self, provenance: dict) -> dict:
        """Write ``provenance.json`` and ``report.html`` last. The provenance lists every
        output, these two included (written just after the list is made), and is returned."""
        prov = {**provenance, "outputs": [*self._files, PROVENANCE, REPORT]}
        self.json(PROVENANCE, prov)
        self._record(write_report(self.root, prov))
        assert self._files == prov["outputs"], "provenance outputs differ from what was written"
        return prov


def previous_outputs(out_dir) -> set[str]:
    """Files an earlier voxdose run listed in out_dir/provenance.json (relative names)."""
    try:
        prov = _json.loads((Path(out_dir) / PROVENANCE).read_text())
        names = {str(f) for f in prov.get("outputs", [])}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    return {n for n in names if n and ".." not in Path(n).parts and not Path(n).is_absolute()}


def remove_stale(out_dir, previous: Iterable[str], current: Iterable[str]) -> list[str]:
    """Remove results of an earlier run that this run did not write (e.g. plan.json when
    the study no longer has limits), so the folder never mixes two runs. Only files an
    earlier voxdose run itself listed are touched. An image's sidecar goes with it (older
    provenance files list only the ``.nii.gz``), unless this run wrote that name. Returns
    the relative names removed."""
    out_dir = Path(out_dir)
    current = set(current)
    removed = []
    for name in sorted(set(previous) - current):
        names = [name]
        if name.endswith(IMAGE_SUFFIXES):
            names.append(sidecar_path(Path(name)).as_posix())
        for n in names:
            q = out_dir / n
            if n not in current and q.name != PROVENANCE and q.is_file():
                q.unlink()
                removed.append(n)
    return removed


def _check_finite(name: str, img, dtype) -> None:
    import numpy as np

    from ..core.backend import to_numpy
    from ..core.errors import VoxdoseError

    data = np.asarray(to_numpy(img.data))
    if not np.issubdtype(data.dtype, np.floating):
        return
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if not bad and dtype is not None and np.issubdtype(np.dtype(dtype), np.floating):
        top = float(np.max(np.abs(data), initial=0.0))
        bad = int(top > float(np.finfo(dtype).max))
    if bad:
        raise VoxdoseError(f"{name}: the computed {img.quantity or 'result'} has non-finite "
                           f"values ({bad} voxels, or beyond the range of {dtype}); nothing "
                           "was written: check the input's units (activity far too high?)")
