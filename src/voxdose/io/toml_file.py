"""Reading the TOML files (study, cohort): one reader, a UTF-8 byte-order mark accepted."""

from __future__ import annotations

import tomllib
from pathlib import Path

#: The UTF-8 byte-order mark some editors (Windows Notepad) put first; TOML has no use for
#: it and tomllib refuses it ("Invalid statement at line 1, column 1").
UTF8_BOM = b"\xef\xbb\xbf"


def read_toml(path) -> dict:
    """The TOML document of ``path`` (UTF-8, a leading byte-order mark skipped). Raises
    ``OSError``, ``UnicodeDecodeError`` or ``tomllib.TOMLDecodeError`` for the caller to
    word."""
    data = Path(path).read_bytes()
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM):]
    return tomllib.loads(data.decode("utf-8"))
