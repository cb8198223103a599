"""Read a data table (the processed OpenOrca set, a calibration set) from a pandas pickle, a parquet
file or JSON lines, without ever running code named by the file.

A pickle may name any importable callable and have it called while it loads, so `pd.read_pickle`
on a downloaded file runs whatever the file says. The reference format is a pandas pickle, so
pickles are still read, but by an unpickler that resolves only the callables pandas, numpy and
pyarrow use to rebuild a DataFrame of plain values (ints, floats, strings, lists or arrays of
ints); any other global is refused before anything is called. Parquet and JSON lines carry the
same table with no code at all.

pandas, numpy and pyarrow are imported only when a table is read.
"""
from __future__ import annotations

import importlib
import os
import pickle

from common.errors import HarnessError
from common.files import parse_json

PICKLE_SUFFIXES = (".pkl", ".pickle")
PARQUET_SUFFIXES = (".parquet",)
JSONL_SUFFIXES = (".jsonl", ".json")
SUFFIXES = PICKLE_SUFFIXES + PARQUET_SUFFIXES + JSONL_SUFFIXES

# Every global a pickled DataFrame of plain values names (pandas 3.1 / numpy 2.4 / pyarrow 26, found
# by unpickling such frames and recording find_class): constructors, their pickle helpers and
# dtypes; none reaches the file system, the network or the interpreter.
ALLOWED_GLOBALS = frozenset({
    ("builtins", "slice"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),            # numpy ints inside a list cell
    ("numpy._core.numeric", "_frombuffer"),
    ("pandas", "DataFrame"),
    ("pandas", "Index"),
    ("pandas", "RangeIndex"),
    ("pandas", "StringDtype"),
    ("pandas", "NA"),
    ("pandas.arrays", "ArrowStringArray"),
    ("pandas.arrays", "StringArray"),                # strings when pandas stores them in Python
    ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pyarrow.lib", "_restore_array"),
    ("pyarrow.lib", "py_buffer"),
    ("pyarrow.lib", "type_for_alias"),
})
# Where pickles written by pandas 1.x/2.x and numpy 1.x (the reference's files) name the same things.
OLD_LOCATIONS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("pandas.core.frame", "DataFrame"): ("pandas", "DataFrame"),
    ("pandas.core.indexes.base", "Index"): ("pandas", "Index"),
    ("pandas.core.indexes.range", "RangeIndex"): ("pandas", "RangeIndex"),
    ("pandas.core.internals.blocks", "new_block"): ("pandas._libs.internals", "_unpickle_block"),
}


class ForbiddenGlobal(pickle.UnpicklingError):
    pass


def _validated_arrow_array(data):
    """pyarrow's _restore_array, then a full check, so offsets or lengths in a crafted file cannot
    make later reads run past a buffer."""
    import pyarrow.lib

    array = pyarrow.lib._restore_array(data)
    array.validate(full=True)
    return array


class TableUnpickler(pickle.Unpickler):
    """Resolves only ALLOWED_GLOBALS (and their OLD_LOCATIONS); refuses every other global."""

    def find_class(self, module: str, name: str):
        module, name = OLD_LOCATIONS.get((module, name), (module, name))
        if (module, name) not in ALLOWED_GLOBALS:
            raise ForbiddenGlobal(f"{module}.{name}")
        if (module, name) == ("pyarrow.lib", "_restore_array"):
            return _validated_arrow_array
        return getattr(importlib.import_module(module), name)


def _read_pickle(path: str, what: str):
    try:
        with open(path, "rb") as f:
            return TableUnpickler(f).load()
    except ForbiddenGlobal as e:
        raise HarnessError(f"{what} {path}: refused: the pickle calls {e}, which a table of plain values never "
                           f"needs (a pickle can run code when loaded; use one from a trusted source, or "
                           f"parquet / JSON lines)") from None
    except Exception as e:  # noqa: BLE001 - a broken pickle raises nearly any type
        raise HarnessError(f"cannot read {what} {path}: not a pandas pickle ({type(e).__name__}: {e})"
                           .splitlines()[0]) from None


def _read_parquet(path: str, what: str):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a file that is not parquet
        raise HarnessError(f"cannot read {what} {path}: not parquet ({type(e).__name__}: {e})"
                           .splitlines()[0]) from None
    df = table.to_pandas()
    # A list column comes back as numpy arrays; the pickle holds lists: give the same frame.
    for i, field in enumerate(table.schema):
        if field.name in df.columns and str(field.type).startswith(("list", "large_list")):
            df[field.name] = table.column(i).to_pylist()
    return df


def _read_jsonl(path: str, what: str):
    """JSON lines, or one JSON array of objects (the llama3.1-8b reference's cnn_eval.json)."""
    import pandas as pd

    rows = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            lines = f.readlines()
        except UnicodeDecodeError as e:
            raise HarnessError(f"{what} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if next((line for line in lines if line.strip()), "").lstrip().startswith("["):
            return pd.DataFrame(_json_array(path, what, "".join(lines)))
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            row = parse_json(line, f"{what} {path}: line {number}")
            if not isinstance(row, dict):
                raise HarnessError(f"{what} {path}: line {number} holds a {type(row).__name__}; expected "
                                   f"one object per line (column: value)")
            rows.append(row)
    return pd.DataFrame(rows)


def _json_array(path: str, what: str, text: str) -> list[dict]:
    rows = parse_json(text, f"{what} {path} (an array of objects or one object per line)")
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None) if isinstance(rows, list) else 0
    if bad is not None:
        raise HarnessError(f"{what} {path}: expected an array of objects (column: value), item {bad} is not one")
    return rows


def read_table(path: str | os.PathLike, what: str = "table"):
    """The DataFrame in `path`, chosen by suffix: .pkl/.pickle (restricted unpickling), .parquet,
    .jsonl/.json (JSON lines, or a JSON array of objects). `what` names the file in errors
    ("dataset", "calibration dataset")."""
    import pandas as pd

    path = os.fspath(path)
    if not path or not os.path.isfile(path):
        raise HarnessError(f"{what} not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in PICKLE_SUFFIXES:
        df = _read_pickle(path, what)
    elif suffix in PARQUET_SUFFIXES:
        df = _read_parquet(path, what)
    elif suffix in JSONL_SUFFIXES:
        df = _read_jsonl(path, what)
    else:
        raise HarnessError(f"{what} {path}: unknown format '{suffix}'; use one of {', '.join(SUFFIXES)}")
    if not isinstance(df, pd.DataFrame):
        raise HarnessError(f"{what} {path} holds a {type(df).__name__}, expected a pandas DataFrame")
    return df
