"""Atomic output: write to a temporary file beside the target, then rename.

A failure part-way leaves either the old file or nothing, never half a file.

* :func:`atomic_path`: one file (an ``.mhd`` header with its ``.raw`` voxels counts as one:
  both are written under their final names in a hidden folder beside the target, then
  renamed, so the header names its final ``.raw`` and no temporary name is left);
* :func:`staged_files`: the files of one command (e.g. ``voxdose dvh``: CSV, JSON, PNG),
  each written into a hidden staging folder beside its target, all moved into place only
  when every one was written;
* :func:`staged_directory`: a whole results folder (``voxdose run``, ``compare``).

On failure the staging folders and any folder created for the outputs are removed and an
earlier run's files stay as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

#: Formats written as a header plus a separate data file of the same stem (``a.mhd`` +
#: ``a.raw`` / ``a.zraw``): staged as a set (see :func:`atomic_path`).
MULTI_FILE_SUFFIXES = (".mhd", ".hdr")


@contextmanager
def atomic_path(target: str | os.PathLike):
    """Yield a temporary path in the target's folder; on success rename it onto ``target``.

    The temporary name keeps the target's suffixes (``.nii.gz``) so writers that pick a
    format by extension still work.  A multi-file format (:data:`MULTI_FILE_SUFFIXES`) is
    written under its final name into a hidden folder beside ``target``; on success its
    data file(s) are renamed into place first, the header last.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.name.lower().endswith(MULTI_FILE_SUFFIXES):
        with _atomic_file_set(target) as tmp:
            yield tmp
        return
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}-", suffix=suffix,
                               dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def _atomic_file_set(target: Path):
    """A header + data file set written under the final names in a hidden folder beside
    ``target``, then renamed into place (data files first, the header last)."""
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name.split('.')[0]}-", dir=target.parent))
    try:
        yield tmp_dir / target.name
        written = sorted(p for p in tmp_dir.iterdir() if p.is_file())
        for p in sorted(written, key=lambda p: p.name == target.name):
            os.replace(p, target.parent / p.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(target, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def make_folders(folder: str | os.PathLike) -> list[Path]:
    """Create ``folder`` and any missing parents; return the folders created (outermost
    first), for :func:`remove_folders` to undo on failure."""
    missing = []
    f = Path(os.path.abspath(folder))
    while not os.path.lexists(f):
        missing.append(f)
        f = f.parent
    Path(folder).mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def remove_folders(created: list[Path]) -> None:
    """Remove the folders :func:`make_folders` created, innermost first, when empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            pass


@contextmanager
def staged_files(targets):
    """Stage the output files of one command; move them all into place only at the end.

    Yields ``stage(target) -> Path``: where to write ``target`` (same name, in a hidden
    staging folder inside the target's folder, so the final rename stays on one file
    system).  Whatever a writer puts beside it (a JSON sidecar, an ``.mhd``'s ``.raw``)
    moves with it.  On success every staged file is renamed into its folder (the targets
    themselves last); on any exception nothing is moved, the staging folders and the
    folders created for the outputs are removed, and earlier files stay as they were.
    """
    finals = {Path(t): Path(os.path.abspath(t)) for t in targets}
    created: list[Path] = []
    stages: dict[Path, Path] = {}
    try:
        for final in finals.values():
            if final.parent not in stages:
                created += make_folders(final.parent)
                stages[final.parent] = Path(tempfile.mkdtemp(prefix=".voxdose-staging-",
                                                             dir=final.parent))
        yield lambda target: stages[finals[Path(target)].parent] / Path(target).name
        names = {f.name for f in finals.values()}
        for folder, stage in stages.items():
            files = sorted(p for p in stage.iterdir() if p.is_file())
            for src in sorted(files, key=lambda p: p.name in names):
                os.replace(src, folder / src.name)
    except BaseException:
        for stage in stages.values():
            shutil.rmtree(stage, ignore_errors=True)
        remove_folders(created)
        raise
    finally:
        for stage in stages.values():
            shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def staged_directory(final_dir: str | os.PathLike):
    """Collect a whole set of outputs in a hidden staging folder, then move them in.

    The staging folder lies inside ``final_dir`` when that exists (only it must be
    writable), else beside it.  On any exception the staging folder and any folder created
    here are removed and ``final_dir`` is left as it was (no partial results).  On success
    every staged file is renamed into ``final_dir``.
    """
    final_dir = Path(final_dir)
    created = [] if final_dir.is_dir() else make_folders(final_dir.parent)
    where = final_dir if final_dir.is_dir() else final_dir.parent
    stage = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}-staging-", dir=where))
    try:
        yield stage
        created += make_folders(final_dir)
        for src in sorted(stage.rglob("*")):
            if src.is_file():
                dst = final_dir / src.relative_to(stage)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        remove_folders(created)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def sha256_file(path) -> str:
    """SHA-256 of a file's bytes (for provenance records)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
