"""submission.py end to end on real LoadGen (main.py, evaluation.py and compliance.py run as
subprocesses): the layout, the truncated accuracy logs, the system description, --check, resuming,
failed and interrupted runs. The null backend keeps it fast; one slow test uses the embedded model."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, tiny_conf, tiny_dataset
from mlsubmit.layout import MAX_ACCURACY_LOG_SIZE, VIEWABLE_SIZE, truncate_accuracy_log
from mlsubmit.system import REQUIRED_FIELDS, TO_FILL

SCEN = "closed/Org/results/sys1/llama2-70b-99.9/{}"


def submission(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / "submission.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def null_args(out: str, division: str = "closed", scenarios: tuple[str, ...] = ("Offline",),
              *extra: str) -> list[str]:
    return ["--submitter", "Org", "--system-name", "sys1", "--division", division, "--scenarios", *scenarios,
            "--allow-unsubmittable", "--output-dir", out, "--", "--backend", "null", "--dataset-path", "d.pkl", "--user-conf", "u.conf",
            "--total-sample-count", "16", "--no-progress", "--no-sysmetrics", *extra]


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    tiny_dataset(tmp_path / "d.pkl", n=16)
    tiny_conf(tmp_path / "u.conf", n=16)
    return tmp_path


@pytest.fixture(scope="module")
def closed_tree(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("closed")
    tiny_dataset(work / "d.pkl", n=16)
    tiny_conf(work / "u.conf", n=16)
    proc = submission(*null_args("sub", "closed", ("Offline", "Server")), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, proc


def tree_files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def test_layout_of_a_closed_submission(closed_tree):
    work, proc = closed_tree
    sub = work / "sub"
    for scenario in ("Offline", "Server"):
        d = sub / SCEN.format(scenario)
        for f in ("performance/run_1/mlperf_log_summary.txt", "performance/run_1/mlperf_log_detail.txt",
                  "accuracy/mlperf_log_summary.txt", "accuracy/mlperf_log_detail.txt", "accuracy/accuracy.txt",
                  "accuracy/mlperf_log_accuracy.json", "TEST06/verify_accuracy.txt",
                  "TEST06/accuracy/mlperf_log_accuracy.json", "user.conf", "mlperf.conf", "measurements.json",
                  "README.md"):
            assert (d / f).is_file(), f"{scenario}/{f}"
        assert (d / "user.conf").read_text() == (work / "u.conf").read_text()
        # accuracy.txt carries the hash of the full log, which run_logs/ keeps
        full = sub / "run_logs/sys1/llama2-70b-99.9" / scenario / "accuracy/mlperf_log_accuracy.json"
        assert f"hash={hashlib.sha256(full.read_bytes()).hexdigest()}" in (d / "accuracy/accuracy.txt").read_text()
        assert "'rouge1':" in (d / "accuracy/accuracy.txt").read_text()
        verify = (d / "TEST06/verify_accuracy.txt").read_text()
        assert "TEST06 verification complete" in verify
        assert ("First token check pass: True" if scenario == "Server" else "Skipped") in verify
        readme = (d / "README.md").read_text()
        assert f"python {os.path.relpath(ROOT / 'main.py', work)} --scenario {scenario} --lg-model-name llama2-70b " \
            "--accuracy" in readme
        assert "Not submittable as it stands" in readme and "min_duration 200 ms < 600000 ms" in readme
        assert "compliance/TEST06/audit.config" in readme and "evaluation.py" in readme
        measurements = json.loads((d / "measurements.json").read_text())
        assert measurements["input_data_types"] == "int32" and measurements["retraining"] == "No"
    # only LoadGen's files in the tree; no staging left behind
    assert sorted(p.name for p in (sub / SCEN.format("Offline") / "performance/run_1").iterdir()) == \
        ["mlperf_log_detail.txt", "mlperf_log_summary.txt"]
    assert not (sub / "run_logs/.staging").exists()
    assert (sub / "closed/Org/src/llama2-70b-99.9/README.md").is_file() and not (sub / "closed/Org/code").exists()
    assert not (sub / "closed/Org/model_mapping.json").exists()
    # progress: which run of how many, with an estimate
    assert "[1/6] Offline performance: about" in proc.stdout and "[6/6] Server TEST06: done" in proc.stdout


def test_system_description_has_every_required_field(closed_tree):
    work, _ = closed_tree
    desc = json.loads((work / "sub/closed/Org/systems/sys1.json").read_text())
    assert list(desc) == list(REQUIRED_FIELDS)
    assert desc["division"] == "closed" and desc["submitter"] == "Org" and desc["system_name"] == "sys1"
    assert desc["host_processor_core_count"].isdigit() and desc["host_memory_capacity"].endswith(" GB")
    assert desc["operating_system"] and TO_FILL not in desc["operating_system"]
    assert desc["status"] == "available" and desc["system_type"] == "datacenter" and TO_FILL in desc["cooling"]


def test_check_lists_each_rule_broken_and_nothing_else(closed_tree, tmp_path):
    work, _ = closed_tree
    import shutil
    sub = tmp_path / "sub"
    shutil.copytree(work / "sub", sub)
    proc = submission("--check", str(sub), cwd=work)
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == f"{len(lines) - 1} problem(s)"
    problems = "\n".join(lines[:-1])
    # tiny runs on the null backend break exactly these rules (those the official checker reports)
    assert "system description" not in problems   # "TO FILL" hints are answers to the official checker
    assert "Offline/performance/run_1/mlperf_log_detail.txt: min_duration 200 ms < 600000 ms" in problems
    assert "samples_per_query 16 < 24576" in problems
    assert "Server/performance/run_1/mlperf_log_detail.txt: early stopping condition not met" in problems
    assert "min_query_count 16" not in problems   # early stopping stands in for Server's query count
    assert "rouge1 0.0" in problems and "tokens_per_sample 32.0" in problems   # closed: llama2-70b targets
    assert "accuracy run covers 16 samples, not 24576 (dataset_check" in problems
    assert "missing" not in problems and "TEST06 failed" not in problems and "not truncated" not in problems

    # a bad status, a missing file and a failed TEST06 appear
    systems = sub / "closed/Org/systems/sys1.json"
    desc = json.loads(systems.read_text())
    desc.update(status="TO FILL")
    systems.write_text(json.dumps(desc))
    (sub / SCEN.format("Offline") / "measurements.json").unlink()
    verify = sub / SCEN.format("Server") / "TEST06/verify_accuracy.txt"
    verify.write_text(verify.read_text().replace("EOS check pass: True", "EOS check pass: False"))
    after = submission("--check", str(sub), cwd=work).stdout
    assert "status 'TO FILL' is not one of available, preview, rdi" in after
    assert f"{sub / SCEN.format('Offline') / 'measurements.json'}: missing" in after
    assert "Server/TEST06/verify_accuracy.txt: TEST06 failed: EOS check pass" in after


def test_rerun_resumes_without_touching_the_tree(closed_tree):
    work, _ = closed_tree
    before = tree_files(work / "sub/closed")
    proc = submission(*null_args("sub", "closed", ("Offline", "Server")), cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("in the tree already, kept") == 6
    assert tree_files(work / "sub/closed") == before
    # other settings on the same folder: one error line, nothing run
    other = submission(*null_args("sub", "closed", ("Offline", "Server"), "--max-new-tokens", "4"), cwd=work)
    assert other.returncode == 2 and other.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "main_flags differ" in other.stderr and tree_files(work / "sub/closed") == before


def test_open_division_maps_another_model(work):
    proc = submission(*null_args("sub", "open"), cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    org = work / "sub/open/Org"
    assert json.loads((org / "model_mapping.json").read_text()) == {"gemma3-270m-q4_k_m": "llama2-70b-99.9"}
    assert (org / "results/sys1/gemma3-270m-q4_k_m/Offline/accuracy/accuracy.txt").is_file()
    problems = submission("--check", str(work / "sub"), cwd=work).stdout
    assert "gemma3-270m-q4_k_m" in problems and "not a benchmark" not in problems
    assert "rouge1" not in problems  # the open division is not held to the targets
    assert (org / "src/gemma3-270m-q4_k_m/README.md").is_file()


def test_failed_run_never_lands(work):
    tiny_dataset(work / "d.pkl", prompts=[[9, 10, 11]] * 16)
    proc = submission(*null_args("sub", "closed", ("Offline",), "--backend-arg", "fail_on=9"), cwd=work)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: [1/3] Offline performance failed (main.py exited with 1)") and "resume" in err
    assert not (work / "sub" / SCEN.format("Offline")).exists()
    failed = list((work / "sub/run_logs/failed").iterdir())
    assert len(failed) == 1 and (failed[0] / "results.json").is_file()


def test_crashed_run_keeps_its_partial_logs(work):
    """main.py crashing natively leaves its .partial-PID folder: it goes to failed/, as the error says."""
    (work / "sitecustomize.py").write_text(
        "import faulthandler, sys\nif sys.argv and sys.argv[0].endswith('main.py'):\n"
        "    import backends.null\n    backends.null.NullBackend.generate = lambda self, p: faulthandler._sigsegv()\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(work), str(ROOT)]))
    proc = subprocess.run([sys.executable, str(ROOT / "submission.py"), *null_args("sub", "closed", ("Offline",))],
                          cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: [1/3] Offline performance failed (main.py exited with 139)")
    [failed] = list((work / "sub/run_logs/failed").iterdir())
    assert str(failed) in err and (failed / "native_crash.txt").is_file()
    assert not (work / "sub/run_logs/.staging").exists()


def test_interrupted_run_never_lands_and_the_same_command_resumes(work):
    args = null_args("sub", "closed", ("Offline",), "--backend-arg", "delay_ms=1500")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, str(ROOT / "submission.py"), *args], cwd=work, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=env)
    for line in p.stdout:
        if line.startswith("[2/3] Offline accuracy: about"):
            break
    time.sleep(1.0)  # inside the accuracy run's 1.5 s answer
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 130
    tree = work / "sub" / SCEN.format("Offline")
    assert (tree / "performance/run_1").is_dir() and not (tree / "accuracy").exists()
    assert not (work / "sub/run_logs/.staging").exists()
    proc = submission(*args, cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[1/3] Offline performance: in the tree already, kept" in proc.stdout
    assert (tree / "accuracy/accuracy.txt").is_file() and (tree / "TEST06/verify_accuracy.txt").is_file()


def test_truncation_as_the_official_tool(tmp_path):
    big = tmp_path / "big.json"
    big.write_text("[" + ",".join(json.dumps({"qsl_idx": i, "data": "AB" * 50}) for i in range(200)) + "]")
    truncate_accuracy_log(big, tmp_path / "t.json")
    text, full = (tmp_path / "t.json").read_text(), big.read_text()
    assert text == full[:VIEWABLE_SIZE] + "\n\n...\n\n" + full[-VIEWABLE_SIZE:]
    assert len(text) <= MAX_ACCURACY_LOG_SIZE
    small = tmp_path / "small.json"
    small.write_text("[]")
    truncate_accuracy_log(small, tmp_path / "s.json")
    assert (tmp_path / "s.json").read_text() == "[]"


@pytest.mark.parametrize("args, message", [
    (["--check", "no-such-dir"], "error: no submission folder at no-such-dir"),
    ([a for a in null_args("sub") if a != "--allow-unsubmittable"],
     "error: 4 rule(s) of MLPerf v6.1 would be broken (above); the closed division refuses"),
    (["--benchmark", "llama2-70b-99", *null_args("sub")],
     "error: 'llama2-70b-99' is not a benchmark of MLPerf v6.1 (known: llama2-70b-99.9, "),
    (null_args("sub", "closed", ("Offline",), "--scenario", "Server"), "error: --scenario is set by submission.py"),
    (["--submitter", "Org", "--system-name", "a/b", "--division", "open", "--output-dir", "o"],
     "error: --system-name 'a/b' must be a plain folder name"),
])
def test_bad_input_is_one_error_line(work, args, message):
    proc = submission(*args, cwd=work)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(message)
    assert not (work / "sub").exists()   # refused before anything is written


@pytest.mark.slow
def test_embedded_model_submission(tmp_path):
    """llama.cpp on the embedded Gemma 3 270M: the same tree, TEST06 passed on a real model. One
    thread: two threads on 2 cores wait on each other whenever anything else needs a core (a CPU
    hog on both made this test take 851 s, against 51 s with one thread)."""
    pytest.importorskip("llama_cpp")
    tiny_conf(tmp_path / "u.conf", n=4)
    proc = submission("--submitter", "Org", "--system-name", "cpu", "--division", "open", "--scenarios", "Offline",
                      "--output-dir", "sub", "--", "--user-conf", "u.conf", "--total-sample-count", "4",
                      "--max-new-tokens", "8", "--backend-arg", "n_threads=1", "--no-progress", "--no-sysmetrics",
                      cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = tmp_path / "sub/open/Org/results/cpu/gemma3-270m-q4_k_m/Offline"
    assert "TEST06 verification complete" in (d / "TEST06/verify_accuracy.txt").read_text()
    assert "'rouge1':" in (d / "accuracy/accuracy.txt").read_text()
    desc = json.loads((tmp_path / "sub/open/Org/systems/cpu.json").read_text())
    assert desc["framework"].startswith("llama.cpp (llama-cpp-python ")
    assert json.loads((d / "measurements.json").read_text())["weight_data_types"] == "Q4_K_M (GGUF)"
