"""Runs that go wrong around the input rather than in it: Ctrl-C inside any tool, a disk that fills
up mid-run, a Server run of one query, two runs started in the same second. Each runs the real
entry point in a subprocess, on the real LoadGen."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT, results, run_main, tiny_dataset

PY = sys.executable

# Runs a tool as `python TOOL ARGS` would, after wrapping one library function so that the process
# sends itself a real SIGINT as soon as that function returns (when given MODULE:NAME:TEXT, only a
# call whose first argument holds TEXT): Ctrl-C lands at a known point of the tool's work (reading
# its input, or with a temporary output file open) instead of at a random time.
INTERRUPT_AFTER = """
import importlib, os, runpy, signal, sys
module, name, text = (sys.argv[1] + "::").split(":")[:3]
owner = importlib.import_module(module)
original = getattr(owner, name)
def interrupted(*args, **kwargs):
    out = original(*args, **kwargs)
    if text in str(args[0] if args else ""):
        os.kill(os.getpid(), signal.SIGINT)
    return out
setattr(owner, name, interrupted)
tool, sys.argv = sys.argv[2], sys.argv[2:]
if tool.endswith(".py"):
    runpy.run_path(tool, run_name="__main__")
else:
    runpy.run_module(tool, run_name="__main__", alter_sys=True)
"""


def interrupt(hook: str, tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", INTERRUPT_AFTER, hook, tool, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, HF_HUB_OFFLINE="1"))


@pytest.fixture
def accuracy_log(tmp_path) -> Path:
    path = tmp_path / "acc" / "mlperf_log_accuracy.json"
    path.parent.mkdir()
    path.write_text(json.dumps([{"seq_id": i, "qsl_idx": i, "data": "0700000007000000"} for i in range(2)]))
    return path


def _cases(tmp: Path, accuracy_log: Path) -> dict[str, tuple[str, str, list[str]]]:
    """tool -> (function that triggers Ctrl-C, tool, arguments); every output goes under tmp/out."""
    out = tmp / "out"
    data = tiny_dataset(tmp / "data.pkl", n=2)
    parquet = tmp / "orca.parquet"
    pd.DataFrame({"id": ["a"], "system_prompt": [""], "question": ["q"], "response": ["r"]}).to_parquet(parquet)
    text = tmp / "text.txt"
    text.write_text("some words to score\n" * 20)
    return {
        # a temporary output file exists when the signal comes: it must not stay behind
        "compliance": ("builtins:open:.tmp", "compliance.py",
                       ["--accuracy-log", str(accuracy_log), "--scenario", "Offline", "--output-dir", str(out)]),
        "synthetic": ("builtins:open:.tmp", "inputs.synthetic",
                      ["--output", str(out / "syn.pkl"), "--num-samples", "4", "--input-len", "4",
                       "--output-len", "4"]),
        # the signal comes while the input is read
        "evaluation": ("accuracy.mlperf_log:read_entries", "evaluation.py",
                       ["--mlperf-accuracy-file", str(accuracy_log), "--dataset-file", str(data),
                        "--log-dir", str(out)]),
        "processorca": ("pandas:read_parquet", "processorca.py",
                        ["--dataset_pq_path", str(parquet), "--export_dir", str(out)]),
        "tasks": ("common.files:read_text", "tasks",
                  ["perplexity", "--dataset-path", str(text), "--output-dir", str(out), "--no-progress"]),
        "report": ("harness.results:load_results", "reporting.report",
                   [str(ROOT / "docs" / "baselines" / "gemma3-270m-fp32"), "--output", str(out / "r.html")]),
    }


@pytest.mark.parametrize("tool", ["compliance", "synthetic", "evaluation", "processorca", "tasks", "report"])
def test_ctrl_c_in_a_tool_stops_with_one_line_and_exit_130(tmp_path, accuracy_log, tool):
    hook, entry, args = _cases(tmp_path, accuracy_log)[tool]
    p = interrupt(hook, entry, *args)
    assert "Traceback" not in p.stderr and "KeyboardInterrupt" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == 130, (p.returncode, p.stderr[-2000:])
    assert p.stderr.strip().splitlines()[-1].startswith("interrupted"), p.stderr[-2000:]
    out = tmp_path / "out"
    left = sorted(str(f.relative_to(out)) for f in out.rglob("*")) if out.exists() else []
    assert not [f for f in left if not (out / f).is_dir()], left  # no file, whole or half, not even a temporary one


# -- a Server run of one query: LoadGen writes -nan for what one query cannot give ---------------------
def test_one_query_server_run_is_ok_with_figures_loadgen_cannot_compute(tmp_path):
    data = tiny_dataset(tmp_path / "data.pkl", n=1)
    conf = tmp_path / "user.conf"
    conf.write_text("*.Server.target_qps = 10\n*.Server.min_duration = 0\n*.Server.min_query_count = 1\n")
    out = tmp_path / "run"
    p = run_main("--backend", "null", "--scenario", "Server", "--dataset-path", str(data), "--user-conf", str(conf),
                 "--output-log-dir", str(out), timeout=120)
    detail = (out / "mlperf_log_detail.txt").read_text()
    assert '"value": -nan' in detail or '"value": nan' in detail  # the case itself: LoadGen wrote a NaN
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = results(out)
    assert res["run"]["status"] == "ok", res["run"]["status_reasons"]
    assert res["loadgen"]["scheduled_samples_per_s"] is None  # not available, not a number, not a failure


# -- two runs in the same second, no --output-log-dir ------------------------------------------------
def test_two_runs_started_together_get_their_own_default_folders(tmp_path):
    data = tiny_dataset(tmp_path / "data.pkl", n=4)
    conf = tmp_path / "user.conf"
    conf.write_text("*.Offline.min_duration = 0\n*.Offline.min_query_count = 4\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [PY, str(ROOT / "main.py"), "--no-progress", "--backend", "null", "--dataset-path", str(data),
           "--user-conf", str(conf)]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    folders = sorted((tmp_path / "output-logs").iterdir())
    assert len(folders) == 2 and all((f / "results.json").is_file() for f in folders), folders
    said = sorted(line.rsplit(" ", 1)[-1] for stdout, _ in outs for line in stdout.splitlines()
                  if line.startswith("no --output-log-dir given"))
    assert said == [str(f) for f in folders]  # each run said which folder it picked


def test_stamps_differ_within_one_process():
    sys.path.insert(0, str(ROOT))
    from common.times import stamp
    assert len({stamp() for _ in range(100)}) == 100


# -- the disk fills up mid-run ----------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A real 300 KB tmpfs (needs root, as CI's container runs; skipped where mount is refused)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {p.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_mid_run_names_the_partial_folder_and_publishes_nothing(tmp_path, small_disk):
    data = tiny_dataset(tmp_path / "data.pkl", n=64)
    conf = tmp_path / "user.conf"
    conf.write_text("*.Offline.min_duration = 0\n*.Offline.min_query_count = 2000\n")  # LoadGen's logs fill it
    p = run_main("--backend", "null", "--dataset-path", str(data), "--user-conf", str(conf),
                 "--output-log-dir", str(small_disk / "run"), timeout=120)
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    last = p.stderr.strip().splitlines()[-1]
    partial = [f for f in small_disk.iterdir() if ".partial-" in f.name]
    assert last.startswith("error: no space left on the disk") and "nothing was published" in last, last
    assert len(partial) == 1 and str(partial[0]) in last, (last, partial)
    assert not (small_disk / "run").exists()
