"""Where each file of a submission goes, following mlcommons/inference
tools/submission/submission_structure.md and its directory_structure_samples (the v6.x layout,
compliance folders beside the results; SCENARIO is Offline, Server, Interactive or SingleStream):

    DIVISION/ORG/results/SYSTEM/BENCHMARK/SCENARIO/
        performance/run_1/   mlperf_log_summary.txt, mlperf_log_detail.txt
        accuracy/            mlperf_log_summary.txt, mlperf_log_detail.txt, accuracy.txt,
                             mlperf_log_accuracy.json (truncated)
        TEST06/              verify_accuracy.txt, accuracy/mlperf_log_accuracy.json (where the round asks)
        user.conf  mlperf.conf  measurements.json  README.md
    DIVISION/ORG/systems/SYSTEM.json
    DIVISION/ORG/src/FOLDER/README.md          (FOLDER: the benchmark, or the open division's model)
    open/ORG/model_mapping.json   (open division, a model other than the benchmark's)

Beside the tree, OUTPUT/run_logs/ keeps every run's complete folder as main.py wrote it (full
accuracy logs, results.json, requests.csv): the official truncate_accuracy_log.py asks for
such a backup of the full logs.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from common.errors import HarnessError

DIVISIONS = ("closed", "open")
SRC_DIR = "src"   # SRC_PATH of the checker since v6.0 (it was code/ before)

PERF_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")           # REQUIRED_PERF_FILES
ACC_FILES = PERF_FILES + ("accuracy.txt", "mlperf_log_accuracy.json")      # REQUIRED_ACC_FILES
SCENARIO_FILES = ("user.conf", "README.md", "measurements.json")          # REQUIRED_MEASURE_FILES + v6.0
ACCURACY_LOG = "mlperf_log_accuracy.json"
VERIFY_FILE = "verify_accuracy.txt"

# What each run of a scenario becomes in the tree.
# the compliance tests run where the registry says (Benchmark.test06 / test07 / test09)
RUN_KINDS = ("performance", "accuracy", "TEST06", "TEST07", "TEST09")
TREE_SUBDIR = {"performance": "performance/run_1", "accuracy": "accuracy", "TEST06": "TEST06", "TEST07": "TEST07",
               "TEST09": "TEST09"}
VERIFY_FILES = {"TEST06": VERIFY_FILE, "TEST07": VERIFY_FILE, "TEST09": "verify_output_len.txt"}

# truncate_accuracy_log.py: logs over 10 KiB keep their first and last 4 KiB.
MAX_ACCURACY_LOG_SIZE = 10 * 1024
VIEWABLE_SIZE = 4096


def submitter_dir(root: Path, division: str, submitter: str) -> Path:
    return Path(root) / division / submitter


def scenario_dir(root: Path, division: str, submitter: str, system: str, folder: str, scenario: str) -> Path:
    return submitter_dir(root, division, submitter) / "results" / system / folder / scenario


def check_name(kind: str, value: str) -> str:
    """Submitter and system names become folder names: one path component, no surprises."""
    if not value or value in (".", "..") or "/" in value or "\\" in value or value.strip() != value:
        raise HarnessError(f"--{kind} {value!r} must be a plain folder name (no '/', no surrounding spaces)")
    return value


def truncate_accuracy_log(src: Path, dst: Path) -> None:
    """Copy `src` to the new file `dst` as truncate_accuracy_log.py leaves it: a log over 10 KiB
    keeps its first and last 4 KiB around a '...' line; a smaller one is copied whole."""
    size = src.stat().st_size
    if size <= MAX_ACCURACY_LOG_SIZE:
        shutil.copyfile(src, dst)
        return
    with open(src) as f:
        head = f.read(VIEWABLE_SIZE)
        f.seek(size - VIEWABLE_SIZE)
        tail = f.read(VIEWABLE_SIZE)
    with open(dst, "x") as f:
        f.write(head + "\n\n...\n\n" + tail)


def copy_new(src: Path, dst: Path) -> None:
    """Copy a file to a path that must not exist yet."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f, open(dst, "xb") as g:
        shutil.copyfileobj(f, g)


def place(built: Path, final: Path) -> None:
    """Move a finished folder into the tree in one rename; an existing one is never replaced."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        raise HarnessError(f"{final} already exists; results are never overwritten")
    os.rename(built, final)
