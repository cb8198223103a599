"""Files and folders the user names: atomic writes (write beside the target, then link or rename
into place), output folders made with one clear error, and text files read with one clear error."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from common.errors import HarnessError


def temp_file_beside(path: str | os.PathLike, prefix: str | None = None) -> tuple[int, str]:
    """(fd, name) of a new temporary file in the folder of `path`, with the permissions an ordinary
    open() would give (tempfile.mkstemp makes 0600 files, which would keep results private)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix or f".{os.path.basename(path)}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def make_folder(path: str | os.PathLike, what: str) -> Path:
    """The folder `path`, made with its parents when missing; a HarnessError naming `what` (e.g.
    "--output-dir") when a file is in the way or the folder cannot be made."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise HarnessError(f"{what} {p} is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"cannot create {what} {p}: {e.strerror}"
                           + (f" ({e.filename})" if e.filename and str(e.filename) != str(p) else "")) from None
    return p


def read_text(path: str | os.PathLike, what: str, allow_empty: bool = False) -> str:
    """A UTF-8 text file; a clear error when it is missing, a folder, unreadable, binary or
    (unless allow_empty) empty."""
    p = Path(path)
    if not p.is_file():
        raise HarnessError(f"{what} not found: {p}" if not p.exists() else f"{what} is not a file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise HarnessError(f"{what} {p} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise HarnessError(f"cannot read {what} {p}: {e.strerror}") from None
    if not allow_empty and not text.strip():
        raise HarnessError(f"{what} {p} is empty")
    return text
