"""Checks every command makes before any work: output locations, input files, option values.

Each failure is an :class:`~voxdose.core.errors.InputError`: one line naming the option, the
path or value, and what to do (``voxdose: error: ...``, exit 2, nothing written).  The rules
and thresholds are listed in docs/io.md ("Command-line checks").

* output file: not a folder; its folder exists or can be created (the nearest existing
  parent is a folder, not a file) and is writable; the file name ends with a suffix the
  command writes;
* output folder: not a file; the folder (or, when it does not exist yet, its nearest existing
  parent) is writable;
* several outputs of one command: no two name the same file (image sidecars included), and
  none is one of the command's inputs;
* input file: exists, is a file (not a folder, a broken link or a symlink loop), readable;
* numbers: finite and within their range (> 0 for sizes, radii, activities; fractions in
  [0, 1)).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

from ..core.errors import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".nrrd")


def _label(option: str, path) -> str:
    return f"{option} {path}" if option else str(path)


# --------------------------------------------------------------------------- inputs
def input_file(path, option: str = "", what: str = "file") -> Path:
    """``path`` as a readable file, else :class:`InputError` (not found, a folder, a broken
    link or symlink loop, unreadable). ``what`` names the file in the message."""
    p = input_path(path, option, what)
    label = _label(option, p)
    if p.is_dir():
        hint = ""
        if (p / "study.toml").is_file() and "study" in what:
            hint = f"; did you mean {p / 'study.toml'}?"
        raise InputError(f"{label}: is a folder, not a {what}{hint}")
    if not os.access(p, os.R_OK):
        raise InputError(f"{label}: {what} is not readable (permission denied)")
    return p


def input_path(path, option: str = "", what: str = "file or folder") -> Path:
    """``path`` exists (a file or a folder; no broken link or symlink loop)."""
    p = Path(path)
    label = _label(option, p)
    if os.path.lexists(p) and not p.exists():
        raise InputError(f"{label}: a broken symbolic link or a symlink loop; give the "
                         f"{what} itself")
    if not p.exists():
        raise InputError(f"{label}: {what} not found; check the path")
    return p


# --------------------------------------------------------------------------- outputs
def _writable_location(folder: Path, label: str) -> None:
    """``folder`` exists as a writable folder or can be created: its nearest existing parent
    is a writable folder."""
    f = Path(os.path.abspath(folder))
    while not os.path.lexists(f):
        f = f.parent
    if os.path.islink(f) and not os.path.exists(f):
        raise InputError(f"{label}: {f} is a broken symbolic link or a symlink loop; "
                         "choose another location")
    if not f.is_dir():
        raise InputError(f"{label}: {f} is a file, not a folder; choose another location "
                         "or remove that file")
    if not os.access(f, os.W_OK | os.X_OK):
        raise InputError(f"{label}: folder {f} is not writable (permission denied or a "
                         "read-only file system); choose another location")


def output_file(path, option: str = "--out", suffixes: Iterable[str] | None = None) -> Path:
    """Check that ``path`` can be written as a file (see the module docstring)."""
    p = Path(path)
    label = _label(option, p)
    sfx = tuple(suffixes or ())
    if str(p) in ("", ".") or p.name in ("", ".", ".."):
        raise InputError(f"{label}: give a file name")
    if p.is_dir():
        example = p / ("output" + (sfx[0] if sfx else ""))
        raise InputError(f"{label}: is a folder; give a file name, e.g. {example}")
    if sfx and not str(p).lower().endswith(sfx):
        ends = sfx[0] if len(sfx) == 1 else f"{', '.join(sfx[:-1])} or {sfx[-1]}"
        raise InputError(f"{label}: the file name must end with {ends}")
    _writable_location(p.parent, label)
    return p


def output_folder(path, option: str = "--out") -> Path:
    """Check that ``path`` can be written as a results folder (see the module docstring)."""
    p = Path(path)
    label = _label(option, p)
    if os.path.lexists(p) and not p.is_dir():
        what = ("a broken symbolic link or a symlink loop" if not p.exists()
                else "a file, not a folder")
        raise InputError(f"{label}: is {what}; give a folder (existing or new)")
    _writable_location(p if p.is_dir() else p.parent, label)
    return p


def distinct_outputs(outputs: dict[str, Path | None], inputs: Iterable = (),
                     sidecars: bool = False) -> None:
    """No two ``outputs`` (option -> path; None: not requested) name the same file, and none
    is one of ``inputs``. ``sidecars``: each image output also writes its JSON sidecar."""
    from ..io.sitk_adapter import sidecar_path

    def files(p) -> list[Path]:
        out = [Path(os.path.abspath(p))]
        if sidecars and str(p).lower().endswith(IMAGE_SUFFIXES):
            out.append(Path(os.path.abspath(sidecar_path(p))))
        return out

    given = {Path(os.path.abspath(q)) for q in inputs if q is not None}
    seen: dict[Path, str] = {}
    for opt, p in outputs.items():
        if p is None:
            continue
        for f in files(p):
            if f in given:
                raise InputError(f"{opt} {p} would overwrite an input ({f.name}); write to "
                                 "another file")
            if f in seen:
                raise InputError(f"{opt} {p} and {seen[f]} would write the same file "
                                 f"({f.name}); give them different names")
            seen[f] = f"{opt} {p}"


# --------------------------------------------------------------------------- numbers
def number(value, option: str, unit: str = "", *, above: float | None = None,
           at_least: float | None = None, below: float | None = None) -> float:
    """``value`` as a finite float within its bounds, else :class:`InputError` naming
    ``option``. ``above``/``below`` are strict, ``at_least`` is inclusive."""
    u = f" {unit}" if unit else ""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{option}: '{value}' is not a number"
                         f"{f' ({unit})' if unit else ''}") from None
    bounds = []
    if above is not None:
        bounds.append(f"> {above:g}")
    if at_least is not None:
        bounds.append(f">= {at_least:g}")
    if below is not None:
        bounds.append(f"< {below:g}")
    ok = math.isfinite(v) and (above is None or v > above) and (
        at_least is None or v >= at_least) and (below is None or v < below)
    if not ok:
        rng = f" {' and '.join(bounds)}{u}" if bounds else ""
        raise InputError(f"{option} must be a finite number{rng}; got {value}")
    return v


def positive(value, option: str, unit: str = "") -> float:
    """A finite number > 0 (sizes, radii, activities, half-lives)."""
    return number(value, option, unit, above=0.0)


def non_negative(value, option: str, unit: str = "") -> float:
    """A finite number >= 0."""
    return number(value, option, unit, at_least=0.0)


def number_list(text: str, option: str, unit: str = "", *, above: float | None = None
                ) -> list[float]:
    """'1,2,5' -> [1.0, 2.0, 5.0], each finite (and > ``above``); at least one."""
    parts = [s.strip() for s in str(text).split(",") if s.strip()]
    if not parts:
        raise InputError(f"{option}: give at least one number{(' in ' + unit) if unit else ''}")
    return [number(s, option, unit, above=above) for s in parts]
