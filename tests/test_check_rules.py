"""`submission.py --check` rule by rule: a tiny null-backend tree (llama2-70b-99.9, Offline,
Server, Interactive, real LoadGen logs) is edited where a tiny run must fall short (durations,
samples per query, data set coverage, early stopping, accuracy) until no rule is broken; then
each test breaks one rule and expects exactly that finding. Where a clone of mlcommons/inference
is at hand (MLPERF_INFERENCE_GIT), the official checker, run unchanged, must flag the same files."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, tiny_conf, tiny_dataset
from mlsubmit.check import check_tree
from test_registry import INFERENCE_GIT

BENCH = "closed/Org/results/sys1/llama2-70b-99.9"
PASSING = {"effective_min_duration_ms": 600000, "effective_samples_per_query": 24576,
           "early_stopping_met": True, "effective_accuracy_sample_count": 24576, "qsl_reported_total_count": 24576}
GOOD_SCORES = "{'rouge1': 44.5, 'rouge2': 22.1, 'rougeL': 28.7, 'rougeLsum': 40.0, 'gen_len': 1, 'gen_num': 24576, " \
              "'gen_tok_len': 7236403, 'tokens_per_sample': 294.45}"


def set_detail(path: Path, **values) -> None:
    """Give LoadGen detail-log keys other values, as a run with other settings would have logged."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith(":::MLLOG "):
            entry = json.loads(line[len(":::MLLOG "):])
            if entry["key"] in values:
                entry["value"] = values[entry["key"]]
                line = ":::MLLOG " + json.dumps(entry)
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")


def set_scores(path: Path, scores: str) -> None:
    text = path.read_text()
    path.write_text(re.sub(r"^\{'rouge1'.*$", scores, text, count=1, flags=re.M))


@pytest.fixture(scope="module")
def passing_tree(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("rules")
    tiny_dataset(work / "d.pkl", n=16)
    tiny_conf(work / "u.conf", n=16)
    proc = subprocess.run([sys.executable, str(ROOT / "submission.py"), "--submitter", "Org", "--system-name", "sys1",
                           "--division", "closed", "--allow-unsubmittable", "--output-dir", "sub", "--",
                           "--backend", "null", "--dataset-path", "d.pkl", "--user-conf", "u.conf",
                           "--total-sample-count", "16", "--no-progress", "--no-sysmetrics"],
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sub = work / "sub"
    for detail in (sub / BENCH).glob("*/*/**/mlperf_log_detail.txt"):
        set_detail(detail, **PASSING)
    for acc in (sub / BENCH).glob("*/accuracy/accuracy.txt"):
        set_scores(acc, GOOD_SCORES)
    return sub


@pytest.fixture()
def tree(passing_tree, tmp_path) -> Path:
    shutil.copytree(passing_tree, tmp_path / "sub", symlinks=True)
    return tmp_path / "sub"


def test_the_edited_tree_breaks_no_rule(tree):
    # Server's min_query_count is 16 here: early stopping stands in for it, as in the official checker
    assert check_tree(tree) == []
    assert official_failures(tree) in (None, set())


def _perf(tree: Path, scenario: str) -> Path:
    return tree / BENCH / scenario / "performance/run_1/mlperf_log_detail.txt"


BROKEN = {
    "duration": (lambda t: set_detail(_perf(t, "Offline"), effective_min_duration_ms=1000),
                 ["Offline/performance/run_1/mlperf_log_detail.txt: min_duration 1000 ms < 600000 ms"]),
    "query count": (lambda t: set_detail(_perf(t, "Offline"), effective_samples_per_query=100),
                    ["Offline/performance/run_1/mlperf_log_detail.txt: samples_per_query 100 < 24576"]),
    "dataset coverage": (lambda t: set_detail(t / BENCH / "Server/accuracy/mlperf_log_detail.txt",
                                              effective_accuracy_sample_count=100),
                         ["Server/accuracy/mlperf_log_detail.txt: accuracy run covers 100 samples, not 24576 "
                          "(dataset_check: accuracy-sample-count, dataset-size)"]),
    "seeds": (lambda t: set_detail(_perf(t, "Offline"), effective_qsl_rng_seed=7),
              ["Offline/performance/run_1/mlperf_log_detail.txt: qsl_rng_seed 7 is not v6.1's 2085463073848966840"]),
    "latency": (lambda t: set_detail(_perf(t, "Server"), **{"result_first_token_99.00_percentile_latency_ns": 3 * 10**9}),
                ["Server/performance/run_1/mlperf_log_detail.txt: TTFT p99 3000000000 ns"]),
    "accuracy": (lambda t: set_scores(t / BENCH / "Offline/accuracy/accuracy.txt", GOOD_SCORES.replace("44.5", "40.0")),
                 ["Offline/accuracy/accuracy.txt: rouge1 40.0 not >= 44.3868"]),
    "missing file": (lambda t: (t / BENCH / "Server/user.conf").unlink(), ["Server/user.conf: missing"]),
    "early stopping": (lambda t: set_detail(_perf(t, "Interactive"), early_stopping_met=False),
                       ["Interactive/performance/run_1/mlperf_log_detail.txt: early stopping condition not met"]),
}


def _status(tree: Path, value: str) -> None:
    path = tree / "closed/Org/systems/sys1.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), status=value)))


@pytest.mark.parametrize("rule", BROKEN)
def test_one_rule_broken_is_one_finding(tree, rule):
    breaks, expected = BROKEN[rule]
    breaks(tree)
    found = check_tree(tree)
    assert len(found) == len(expected), found
    for line, want in zip(found, expected):
        assert line.startswith(f"{tree / BENCH}/{want}"), line
    assert official_failures(tree) in (None, {where(line.split(":", 1)[0]) for line in found})


def test_bad_system_field(tree):
    _status(tree, "TO FILL: one of available, preview, rdi")
    found = check_tree(tree)
    assert found == [f"{tree}/closed/Org/systems/sys1.json: status 'TO FILL: one of available, preview, rdi' is not "
                     "one of available, preview, rdi (VALID_AVAILABILITIES)"]
    assert official_failures(tree) in (None, {"system"})


def test_wrong_folders(tree):
    # code/ is the pre-v6.0 name of src/; llama2-70b-99 left the benchmarks in v6.1
    (tree / "closed/Org/src").rename(tree / "closed/Org/code")
    assert check_tree(tree) == [f"{tree}/closed/Org/src: missing (submission_structure.md, SRC_PATH)"]
    (tree / "closed/Org/code").rename(tree / "closed/Org/src")
    (tree / BENCH).rename(tree / BENCH.replace("99.9", "99"))
    found = check_tree(tree)
    assert len(found) == 1 and "'llama2-70b-99' is not a benchmark of this round" in found[0]


# -- the official checker, where it is at hand ------------------------------------------------------
def _official_checker(tmp: Path) -> Path | None:
    dest = tmp / "official"
    if (dest / "submission_checker").is_dir():
        return dest
    try:
        archive = subprocess.run(["git", f"--git-dir={INFERENCE_GIT}", "archive", "HEAD",
                                  "tools/submission/submission_checker"], capture_output=True, check=True,
                                 timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    dest.mkdir(parents=True)
    subprocess.run(["tar", "x", "--strip-components=2", "-C", str(dest)], input=archive, check=True, timeout=60)
    return dest


def where(path: str) -> str:
    """What a finding is about, as both checkers name it: the system, or SCENARIO[/run]."""
    m = re.search(r"/results/[^/]+/[^/]+/([^/]+)(?:/(performance|accuracy|TEST06))?", path)
    return "system" if m is None else "/".join(g for g in m.groups() if g)


def official_failures(tree: Path, version: str = "v6.1") -> set[str] | None:
    """What the official checker's ERROR lines and 'accuracy not met' warnings are about (None
    without a clone of mlcommons/inference)."""
    checker = _official_checker(tree.parent.parent)
    if checker is None:
        return None
    proc = subprocess.run([sys.executable, "-m", "submission_checker.main", "--input", str(tree), "--version", version],
                          cwd=checker, capture_output=True, text=True, timeout=120)
    found = set()
    for line in (proc.stdout + proc.stderr).splitlines():
        if (" ERROR] " in line and "NoResults" not in line and "SUMMARY" not in line) or "accuracy not met" in line:
            m = re.search(r"(/\S+)", line.split("] ", 1)[1])
            if m:
                found.add(where(m.group(1)))
    return found
