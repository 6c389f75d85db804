"""The structure-names file ``{"1": "liver", "2": "kidney_left", ...}`` (label value ->
structure name), read and checked the same way by every command and the study loader.

Rules: a JSON object; keys are positive integer label values (0 is background; negative
values are refused), each given once; names are non-empty text, each used once (two
"liver" rows would let a limit silently use one of them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.errors import InputError

_EXAMPLE = '{"1": "liver", "2": "kidney_left"}'


def _pairs_no_duplicates(pairs, path):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise InputError(f"{path}: label value {k} is given twice; give each label one name")
        seen[k] = v
    return seen


def parse_names(raw, path, error=InputError) -> dict[int, str]:
    """Validated {label value: name} from a decoded JSON object (see the module rules)."""
    if not isinstance(raw, dict) or not raw:
        raise error(f"{path}: must be a non-empty JSON object like {_EXAMPLE}")
    names: dict[int, str] = {}
    for k, v in raw.items():
        try:
            value = int(str(k).strip())
        except ValueError:
            raise error(f"{path}: key {k!r} is not an integer label value; use {_EXAMPLE}") \
                from None
        if value <= 0:
            raise error(f"{path}: label value {value} is not allowed (0 is background, "
                        "negative values are not labels); use positive integers")
        if value in names:
            raise error(f"{path}: label value {value} is given twice; give each label one name")
        if not isinstance(v, str) or not v.strip():
            raise error(f"{path}: label {value} has no name (got {v!r}); give a text name")
        names[value] = v.strip()
    by_name: dict[str, list[int]] = {}
    for value, name in names.items():
        by_name.setdefault(name, []).append(value)
    dup = {n: vs for n, vs in by_name.items() if len(vs) > 1}
    if dup:
        n, vs = next(iter(dup.items()))
        raise error(f"{path}: the name '{n}' is given to labels {vs}; give each structure its "
                    "own name (e.g. kidney_left, kidney_right)")
    return names


def read_names_json(path, error=InputError) -> dict[int, str]:
    """Read and check a structure-names file; ``error``: the exception class to raise."""
    p = Path(path)
    if not p.is_file():
        raise error(f"structure names file not found: {p}")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"),
                         object_pairs_hook=lambda pairs: _pairs_no_duplicates(pairs, p))
    except InputError as exc:
        raise error(str(exc)) from None
    except (ValueError, UnicodeDecodeError):
        raise error(f"{p}: must be a JSON object like {_EXAMPLE}") from None
    return parse_names(raw, p, error)


def check_labels_named(data: np.ndarray, names: dict[int, str], source, error=InputError
                       ) -> None:
    """Every non-zero value of a label image must have a name; none may be negative."""
    values = np.unique(np.asarray(data))
    neg = values[values < 0]
    if neg.size:
        raise error(f"{source}: negative label values {neg.tolist()[:5]}; labels are 0 "
                    "(background) or positive integers")
    unnamed = sorted(set(values.tolist()) - set(names) - {0})
    if unnamed:
        raise error(f"{source}: label values {unnamed[:10]} have no name; add them to the "
                    "structure-names file (or remove them from the label image)")
