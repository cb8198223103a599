"""Temporary files for atomic writes (write beside the target, then link or rename into place)."""
from __future__ import annotations

import os
import tempfile


def temp_file_beside(path: str | os.PathLike, prefix: str | None = None) -> tuple[int, str]:
    """(fd, name) of a new temporary file in the folder of `path`, with the permissions an ordinary
    open() would give (tempfile.mkstemp makes 0600 files, which would keep results private)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix or f".{os.path.basename(path)}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp
