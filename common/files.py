"""Files and folders the user names: atomic writes (write beside the target, then link or rename
into place), output folders made with one clear error, text files read with one clear error, and
JSON / YAML parsed with one clear error for what a hostile file holds (nesting deeper than any
real file, YAML alias bombs, integers of thousands of digits)."""
from __future__ import annotations

import contextlib
import json
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


# A YAML file that nests deeper than this is refused: real configs are a few levels deep, and the
# parser recurses per level (Python's stack would overflow first, as a bare RecursionError).
MAX_NESTING = 100
# YAML aliases let a few hundred bytes stand for billions of values ("billion laughs"): a document
# is refused when it would expand to more values than this, before anything walks it.
MAX_YAML_VALUES = 1_000_000


def parse_json(text: str, what: str):
    """The JSON document `text`; one HarnessError line naming `what` when it is not JSON, nests
    deeper than Python's parser can go (about 1,000 levels) or holds an integer Python will not
    convert (over 4,300 digits)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise HarnessError(f"{what} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise HarnessError(f"{what} nests deeper than about 1,000 levels, which no data file does") from None
    except ValueError as e:  # int('1' * 5000): "Exceeds the limit (4300 digits) for integer string conversion"
        raise HarnessError(f"{what}: {_int_limit(e)}") from None


def parse_yaml(text: str, what: str):
    """The YAML document `text` (safe types only); one HarnessError line naming `what` when it is
    not YAML, nests deeper than MAX_NESTING, expands through aliases to more than MAX_YAML_VALUES
    values, or holds an integer Python will not convert."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_size(node, what)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise HarnessError(f"{what} is not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise HarnessError(f"{what} nests deeper than {MAX_NESTING} levels") from None
    except ValueError as e:
        raise HarnessError(f"{what}: {_int_limit(e)}") from None
    finally:
        loader.dispose()


def _check_yaml_size(root, what: str) -> None:
    """Count the values `root` stands for with every alias expanded, without expanding any: each
    node's count is computed once (aliases make the graph a DAG) and the depth is bounded."""
    import yaml

    sizes: dict[int, int] = {}

    def size(node, depth: int) -> int:
        if depth > MAX_NESTING:
            raise HarnessError(f"{what} nests deeper than {MAX_NESTING} levels")
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 0  # a node that contains itself (a recursive alias) counts once
        if isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        else:
            n = 1
        if n > MAX_YAML_VALUES:
            raise HarnessError(f"{what} expands to more than {MAX_YAML_VALUES:,} values through YAML aliases "
                               f"(&anchor / *alias); write the values out")
        sizes[id(node)] = n
        return n

    size(root, 0)


def _int_limit(error: ValueError) -> str:
    text = str(error)
    if "integer string conversion" in text:
        return "holds an integer of more than 4,300 digits, which no setting or id can be"
    return text.splitlines()[0][:200]
