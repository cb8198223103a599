"""Reading LoadGen's mlperf_log_accuracy.json: a JSON list of
{"seq_id", "qsl_idx", "data": hex of the response bytes, "token_data" (Server), "token_count"}.
Shared by evaluation.py (ROUGE) and compliance.py (TEST06)."""
from __future__ import annotations

import json
import os

import numpy as np

from common.errors import HarnessError

DTYPES = {"int32": np.int32, "int64": np.int64}


def read_entries(path: str) -> list[dict]:
    """The log's entries, with one clear error for a missing, empty, truncated or wrong-shape file."""
    if not os.path.isfile(path):
        raise HarnessError(f"accuracy log not found: {path} (run main.py with --accuracy first)")
    try:
        with open(path) as f:
            entries = json.load(f)
    except json.JSONDecodeError as e:
        raise HarnessError(f"accuracy log {path} is empty, truncated or not JSON ({e})") from e
    except UnicodeDecodeError as e:
        raise HarnessError(f"accuracy log {path} is not a text file ({e})") from e
    if not isinstance(entries, list):
        raise HarnessError(f"accuracy log {path} holds a JSON {type(entries).__name__}, expected a list of responses")
    if not entries:
        raise HarnessError(f"accuracy log {path} has no responses (was the run made with --accuracy?)")
    return entries


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
