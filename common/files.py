"""Files and folders the user names: atomic writes (write beside the target, then link or rename
into place), output folders made with one clear error, and text files read with one clear error."""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

from common.errors import HarnessError


@contextlib.contextmanager
def temp_file_beside(path: str | os.PathLike, prefix: str | None = None) -> Iterator[str]:
    """The name of a new empty file in the folder of `path`, with the permissions an ordinary open()
    would give (not mkstemp's 0600, which would keep results private). Write it and
    link or rename it into place inside the block; whatever ends the block (an error, Ctrl-C, a
    full disk), the temporary name is gone after it, so no half-written file stays behind."""
    folder, prefix = os.path.dirname(os.path.abspath(path)), prefix or f".{os.path.basename(path)}."
    for _ in range(100):
        # The name is known before the file exists, so that a Ctrl-C at any point leaves nothing.
        tmp = os.path.join(folder, f"{prefix}{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # 0o666 & ~umask
            break
        except FileExistsError:
            continue
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    else:
        raise FileExistsError(f"no free temporary name beside {path}")
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


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
