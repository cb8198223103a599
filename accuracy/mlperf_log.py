"""Reading LoadGen's mlperf_log_accuracy.json: a JSON list of
{"seq_id", "qsl_idx", "data": hex of the response bytes, "token_data" (Server), "token_count"}.
Shared by evaluation.py (ROUGE) and compliance.py (TEST06)."""
from __future__ import annotations

import json
import os

import numpy as np

from common.errors import HarnessError
from common.files import parse_json

DTYPES = {"int32": np.int32, "int64": np.int64}


def read_entries(path: str) -> list[dict]:
    """The log's entries, with one clear error for a missing, empty, truncated or wrong-shape file
    or entry."""
    if not os.path.isfile(path):
        raise HarnessError(f"accuracy log not found: {path} (run main.py with --accuracy first)")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise HarnessError(f"accuracy log {path} is not a text file ({e})") from e
    if not text.strip():
        raise HarnessError(f"accuracy log {path} is empty (the run stopped before LoadGen wrote it?)")
    entries = parse_json(text, f"accuracy log {path} (truncated?)")
    if not isinstance(entries, list):
        raise HarnessError(f"accuracy log {path} holds a JSON {type(entries).__name__}, expected a list of responses")
    if not entries:
        raise HarnessError(f"accuracy log {path} has no responses (was the run made with --accuracy?)")
    for n, entry in enumerate(entries):
        problem = entry_problem(entry)
        if problem:
            raise HarnessError(f"accuracy log {path}: entry {n}: {problem}")
    return entries


def _is_count(value) -> bool:
    # JSON true is a Python bool (an int) and 5.7 a float: both are refused, never read as 1 or 5.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def entry_problem(entry) -> str | None:
    """What is wrong with one entry's shape (LoadGen writes integers and hex strings), or None."""
    if not isinstance(entry, dict):
        return f"expected a JSON object, got {json.dumps(entry)[:80]}"
    if not _is_count(entry.get("qsl_idx")):
        return f"qsl_idx must be a non-negative integer, got {json.dumps(entry.get('qsl_idx'))}"
    if not isinstance(entry.get("data"), str):
        return f"'data' must be a hex string, got {json.dumps(entry.get('data'))[:80]}"
    if "token_count" in entry and not _is_count(entry["token_count"]):
        return f"token_count must be a non-negative integer, got {json.dumps(entry['token_count'])[:80]}"
    if "token_data" in entry and not isinstance(entry["token_data"], str):
        return f"'token_data' must be a hex string, got {json.dumps(entry['token_data'])[:80]}"
    return None


def decode_ids(hexdata: str, dtype: str = "int32") -> np.ndarray:
    """Token ids from a response's hex bytes; a length that does not fit the dtype is an error."""
    np_dtype = np.dtype(DTYPES[dtype])
    try:
        raw = bytes.fromhex(hexdata)
    except (TypeError, ValueError) as e:
        raise HarnessError(f"response has no valid hex 'data' ({e})") from e
    if len(raw) % np_dtype.itemsize:
        raise HarnessError(f"response of {len(raw)} bytes is not a whole number of {dtype} ids; wrong --dtype?")
    return np.frombuffer(raw, np_dtype)
