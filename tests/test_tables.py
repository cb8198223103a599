"""common/tables.py: pickles that would run code are refused (directly, through main.py, evaluation.py
and the calibration loader) and nothing runs; reference-format pickles, parquet and JSON lines give
the same frame; --total-sample-count above the dataset's rows is a warning."""
from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.errors import HarnessError
from common.tables import TableUnpickler, read_table
from helpers import ROOT, run_main, tiny_conf, tiny_dataset

DATA = Path(__file__).resolve().parent / "data"
OLD_PICKLE = DATA / "openorca_format_pandas2.0.3_numpy1.24.pkl"


class RunsCode:
    """Unpickling this calls os.system, which writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile_pickles(tmp_path: Path) -> list[tuple[Path, Path]]:
    """(pickle, marker) pairs: the payload alone, and hidden in a cell of a reference-format frame."""
    out = []
    for kind in ("bare", "in-cell"):
        marker = tmp_path / f"ran-{kind}"
        path = tmp_path / f"{kind}.pkl"
        payload = RunsCode(marker)
        if kind == "in-cell":
            payload = pd.DataFrame({"tok_input": [[1, 2], [3, RunsCode(marker)]], "output": ["a", "b"]})
        path.write_bytes(pickle.dumps(payload, protocol=5))
        out.append((path, marker))
    return out


def test_pickle_that_runs_code_is_refused(tmp_path):
    for path, marker in hostile_pickles(tmp_path):
        with pytest.raises(HarnessError, match=r"refused: the pickle calls posix\.system") as e:
            read_table(path, "dataset")
        assert "\n" not in str(e.value)
        assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("builtins", "getattr"), ("subprocess", "Popen"),
                                          ("pandas", "read_pickle"), ("numpy", "load"),
                                          ("pandas.io.pickle", "read_pickle")])
def test_only_the_listed_globals_resolve(module, name):
    data = pickle.dumps(None, protocol=2).replace(b"N", f"c{module}\n{name}\n".encode(), 1)
    with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
        TableUnpickler(io.BytesIO(data)).load()


def test_arrow_buffers_are_checked_on_load():
    """An arrow string array whose offsets point past its data is refused while loading, before
    anything can read through it."""
    import pyarrow as pa

    good = pa.array(["ab", "cd"], type=pa.large_string())
    restore, (state,) = good.__reduce__()
    offsets = pa.py_buffer(np.array([0, 2, 1 << 40], dtype=np.int64).tobytes())
    state = (*state[:4], [None, offsets, state[4][2]], *state[5:])

    class Forged:
        def __reduce__(self):
            return restore, (state,)

    with pytest.raises(pa.ArrowInvalid):
        TableUnpickler(io.BytesIO(pickle.dumps(Forged(), protocol=5))).load()


def test_main_evaluation_and_calibration_refuse_it(tmp_path):
    (path, marker), _ = hostile_pickles(tmp_path)
    p = run_main("--backend", "null", "--dataset-path", str(path), "--user-conf", str(tiny_conf(tmp_path / "u.conf")),
                 "--output-log-dir", str(tmp_path / "out"))
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text(json.dumps([{"seq_id": 0, "qsl_idx": 0, "data": "05000000", "token_count": 1}]))
    e = subprocess.run([sys.executable, str(ROOT / "evaluation.py"), "--mlperf-accuracy-file", str(log),
                        "--dataset-file", str(path)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    for proc in (p, e):
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith("error: dataset") and "refused: the pickle calls posix.system" in lines[-1]
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    # The calibration loader lives in quantization.fake, which needs torch.
    pytest.importorskip("torch")
    from quantization.fake import load_calibration_prompts

    with pytest.raises(HarnessError, match=r"calibration dataset .*refused: the pickle calls posix\.system"):
        load_calibration_prompts(str(path), 2, 8, None)
    assert not marker.exists()


def test_compare_spec_data_is_refused(tmp_path):
    (path, marker), _ = hostile_pickles(tmp_path)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"runs": [{"name": "a", "backend": "null", "data": str(path)}]}))
    proc = subprocess.run([sys.executable, "-m", "reporting.compare", str(spec), "--output-dir", str(tmp_path / "out"),
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "every run failed" in proc.stderr, proc.stderr[-2000:]
    assert "refused: the pickle calls posix.system" in (tmp_path / "out" / "a" / "rep-1.log").read_text()
    assert not marker.exists()


# ---- the same table, whatever the file ---------------------------------------------------------
def test_reference_era_pickle_loads_as_pandas_does():
    """A pickle written by pandas 2.0.3 / numpy 1.24 (numpy.core.*, pandas.core.frame names), as the
    reference's files are: the same frame as pd.read_pickle gives."""
    import warnings

    ours = read_table(OLD_PICKLE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core is renamed numpy._core
        theirs = pd.read_pickle(OLD_PICKLE)
    pd.testing.assert_frame_equal(ours, theirs)
    assert ours.tok_input[2] == [1, 518, 25582, 29962, 29871] and ours.tok_input_length.dtype == np.int64


@pytest.mark.parametrize("frame", [
    pd.DataFrame({"a": [1, 2], "f": [0.5, np.nan], "s": ["x", None], "b": [True, False]}),
    pd.DataFrame({"tok_input": [np.array([1, 2, 3]), np.array([4], dtype=np.int32)]}),
    pd.DataFrame({"tok_input": [[np.int64(1), np.int64(2)]], "n": np.array([1], dtype=np.int32)}, index=[7]),
    pd.DataFrame({"s": pd.array(["x", None], dtype="string"),
                  "p": pd.array(["y", "z"], dtype=pd.StringDtype("python"))}),
    pd.DataFrame({"s": pd.Series(["x", "y"], dtype=object), "f": np.array([1.5, 2.5], dtype=np.float32)}),
    pd.DataFrame(),
], ids=["scalars", "int-arrays", "numpy-ints-in-lists", "string-dtypes", "object-strings", "empty"])
def test_plain_frames_load_as_pandas_does(tmp_path, frame):
    path = tmp_path / "t.pkl"
    frame.to_pickle(path)
    pd.testing.assert_frame_equal(read_table(path), pd.read_pickle(path))


def test_demo_set_as_pickle_loads_identically(tmp_path):
    demo = pd.read_parquet(ROOT / "assets" / "openorca_demo" / "open_orca_demo.parquet")
    demo.to_pickle(tmp_path / "demo.pkl")
    pd.testing.assert_frame_equal(read_table(tmp_path / "demo.pkl"), demo)


def test_parquet_and_jsonl_give_the_pickles_frame(tmp_path):
    frame = read_table(tiny_dataset(tmp_path / "d.pkl", n=12))
    frame.to_parquet(tmp_path / "d.parquet")
    with open(tmp_path / "d.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in frame.to_dict(orient="records"))
    for suffix in ("parquet", "jsonl"):
        other = read_table(tmp_path / f"d.{suffix}")
        pd.testing.assert_frame_equal(other, frame)
        assert isinstance(other.tok_input[0], list) and isinstance(other.tok_input[0][0], int)


@pytest.mark.parametrize("name, content, message", [
    ("d.csv", b"a,b\n", r"unknown format '\.csv'; use one of \.pkl"),
    ("d.pkl", b"\x80\x05K", r"cannot read table .*: not a pandas pickle \(UnpicklingError"),
    ("d.pkl", pickle.dumps([1, 2]), "holds a list, expected a pandas DataFrame"),
    ("d.parquet", b"PAR1 not really", "cannot read table .*: not parquet"),
    ("d.jsonl", b'{"a": 1}\n{"a": 2,\n', "line 2 is not valid JSON"),
    ("d.jsonl", b'{"a": 1}\n[1, 2]\n', "line 2 holds a list; expected one object per line"),
    ("d.jsonl", b'{"a": "\xff"}\n', "not UTF-8 text"),
])
def test_bad_files_give_one_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(HarnessError, match=message) as e:
        read_table(tmp_path / name)
    assert "\n" not in str(e.value)


def test_dataset_in_parquet_and_jsonl_runs_through_main(tmp_path):
    frame = read_table(tiny_dataset(tmp_path / "d.pkl", n=8))
    frame.to_parquet(tmp_path / "d.parquet")
    conf = tiny_conf(tmp_path / "u.conf", n=8)
    p = run_main("--backend", "null", "--dataset-path", str(tmp_path / "d.parquet"), "--user-conf", str(conf),
                 "--output-log-dir", str(tmp_path / "out"), "--scenario", "Offline", "--accuracy")
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["run"]["total_sample_count"] == 8


# ---- --total-sample-count larger than the dataset ---------------------------------------------
def test_total_sample_count_above_the_rows_is_a_warning(tmp_path):
    data = tiny_dataset(tmp_path / "d.pkl", n=4)
    conf = tiny_conf(tmp_path / "u.conf", n=4)
    capped = run_main("--backend", "null", "--dataset-path", str(data), "--user-conf", str(conf),
                      "--output-log-dir", str(tmp_path / "a"), "--total-sample-count", "1000")
    assert capped.returncode == 0, capped.stderr[-2000:]
    warnings = [line for line in capped.stderr.splitlines() if " WARNING " in line and "--total-sample-count" in line]
    assert len(warnings) == 1 and "1000" in warnings[0] and "the 4 samples" in warnings[0], capped.stderr[-2000:]
    whole = run_main("--backend", "null", "--dataset-path", str(data), "--user-conf", str(conf),
                     "--output-log-dir", str(tmp_path / "b"))
    assert whole.returncode == 0 and "--total-sample-count" not in whole.stderr
    for out in ("a", "b"):
        assert json.loads((tmp_path / out / "results.json").read_text())["run"]["total_sample_count"] == 4
