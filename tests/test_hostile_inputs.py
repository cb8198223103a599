"""Bad input to the entry points, as a careless or hostile user gives it: every case ends with one
`error:` line and exit status 2 (no traceback), before any slow work, and leaves earlier files as
they were. Each test runs the real entry point in a subprocess (or the real function)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT, run_main, tiny_conf, tiny_dataset

PY = sys.executable
BINARY = b"name: x\n\xff\xfe\x00"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """python ARGS... in the project root, output captured."""
    return subprocess.run([PY, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))


def assert_one_error(p: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, no traceback, and stderr ending with one `error:` line holding every fragment."""
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), p.stderr[-2000:]
    for fragment in fragments:
        assert fragment in last, last
    return last


@pytest.fixture
def a_file(tmp_path) -> Path:
    """An ordinary file where a user gives a folder."""
    path = tmp_path / "notes.txt"
    path.write_text("earlier notes\n")
    return path


@pytest.fixture
def accuracy_log(tmp_path) -> Path:
    """A well-formed LoadGen accuracy log of two responses (int32 ids 7, 7)."""
    path = tmp_path / "acc" / "mlperf_log_accuracy.json"
    path.parent.mkdir()
    path.write_text(json.dumps([{"seq_id": i, "qsl_idx": i, "data": "0700000007000000"} for i in range(2)]))
    return path


# -- output folders: a file in the way, or under a file --------------------------------------------
@pytest.mark.parametrize("under", [False, True], ids=["file", "under-file"])
def test_main_output_log_dir_on_a_file(tmp_path, a_file, under):
    data, conf = tiny_dataset(tmp_path / "data.pkl", n=4), tiny_conf(tmp_path / "user.conf", n=4)
    target = a_file / "run" if under else a_file
    p = run_main("--backend", "null", "--dataset-path", str(data), "--user-conf", str(conf),
                 "--output-log-dir", str(target), timeout=120)
    assert_one_error(p, str(a_file), "is a file, not a folder")
    assert a_file.read_text() == "earlier notes\n"


@pytest.mark.parametrize("flag", ["--log-dir", "--per-sample-csv"])
def test_evaluation_output_under_a_file_fails_before_scoring(tmp_path, a_file, accuracy_log, flag):
    data = tiny_dataset(tmp_path / "data.pkl", n=4)
    target = a_file / "x.csv" if flag == "--per-sample-csv" else a_file
    p = run("evaluation.py", "--mlperf-accuracy-file", str(accuracy_log), "--dataset-file", str(data),
            flag, str(target))
    assert_one_error(p, str(a_file), "is a file, not a folder")
    assert "Results" not in p.stdout  # refused before scoring
    assert sorted(x.name for x in accuracy_log.parent.iterdir()) == ["mlperf_log_accuracy.json"]


def test_evaluation_record_targets_into_a_new_log_dir(tmp_path, accuracy_log):
    """--record-targets writes accuracy_targets.yaml into --log-dir, which need not exist yet."""
    data = tiny_dataset(tmp_path / "data.pkl", n=4)
    out = tmp_path / "new" / "scores"
    p = run("evaluation.py", "--mlperf-accuracy-file", str(accuracy_log), "--dataset-file", str(data),
            "--log-dir", str(out), "--record-targets", "mine", "--num-workers", "1")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "mine:" in (out / "accuracy_targets.yaml").read_text()
    assert json.loads((out / "accuracy.json").read_text())["model_name"] == "mine"


def test_compliance_output_dir_on_a_file_prints_no_verdict(a_file, accuracy_log):
    p = run("compliance.py", "--accuracy-log", str(accuracy_log), "--scenario", "Offline", "--output-dir", str(a_file))
    assert_one_error(p, str(a_file), "is a file, not a folder")
    assert "TEST06" not in p.stdout


def test_processorca_export_dir_under_a_file(a_file):
    p = run("processorca.py", "--dataset_pq_path", str(ROOT / "assets/openorca_demo/open_orca_demo.parquet"),
            "--export_dir", str(a_file / "out"), "--num_total_samples", "8", "--calibration_size", "2")
    assert_one_error(p, "--export_dir", "Not a directory")
    assert "rows pass" not in p.stderr  # refused before filtering and tokenizing


@pytest.mark.parametrize("module", ["reporting.sweep", "reporting.compare"])
def test_sweep_and_compare_output_dir_on_a_file(tmp_path, a_file, module):
    if module == "reporting.compare":
        spec = tmp_path / "spec.yaml"
        spec.write_text('runs:\n  - name: a\n    backend: "null"\n')
        args = ["-m", module, str(spec), "--no-progress"]
    else:
        args = ["-m", module, "--backend", "null", "--no-progress"]
    p = run(*args, "--output-dir", str(a_file))
    assert_one_error(p, "--output-dir", str(a_file), "is a file, not a folder")
    assert a_file.read_text() == "earlier notes\n"


def test_submission_output_dir_on_a_file(tmp_path, a_file):
    conf = tiny_conf(tmp_path / "user.conf", n=4)
    p = run("submission.py", "--submitter", "org", "--system-name", "sys", "--division", "open",
            "--output-dir", str(a_file), "--", "--backend", "null", "--user-conf", str(conf))
    assert_one_error(p, "--output-dir", "is a file, not a folder")


# -- text inputs that are binary -------------------------------------------------------------------
def test_binary_quant_config(tmp_path):
    qc = tmp_path / "q.yaml"
    qc.write_bytes(BINARY)
    data = tiny_dataset(tmp_path / "data.pkl", n=4)
    p = run_main("--backend", "fakequant", "--quant-config", str(qc), "--dataset-path", str(data),
                 "--output-log-dir", str(tmp_path / "run"), timeout=120)
    assert_one_error(p, "quant config", "is not UTF-8 text")
    assert not (tmp_path / "run").exists()


def test_binary_comparison_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(BINARY)
    p = run("-m", "reporting.compare", str(spec), "--output-dir", str(tmp_path / "out"))
    assert_one_error(p, "comparison spec", "is not UTF-8 text")
    assert not (tmp_path / "out").exists()


def test_binary_targets_file(tmp_path, accuracy_log):
    targets = tmp_path / "targets.yaml"
    targets.write_bytes(BINARY)
    data = tiny_dataset(tmp_path / "data.pkl", n=4)
    p = run("evaluation.py", "--mlperf-accuracy-file", str(accuracy_log), "--dataset-file", str(data),
            "--targets-file", str(targets))
    assert_one_error(p, "accuracy targets file", "is not UTF-8 text")


def test_binary_user_conf_for_submission(tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_bytes(BINARY)
    p = run("submission.py", "--submitter", "org", "--system-name", "sys", "--division", "open",
            "--output-dir", str(tmp_path / "sub"), "--", "--backend", "null", "--user-conf", str(conf))
    assert_one_error(p, "user config", "is not UTF-8 text")
    assert not (tmp_path / "sub").exists()


def test_recording_targets_never_replaces_a_file_that_is_not_a_targets_file(tmp_path):
    from accuracy.targets import record_targets
    from common.errors import HarnessError

    other = tmp_path / "other.yaml"
    other.write_text("- an unrelated list\n")
    result = {"rouge1": 40.0, "rouge2": 20.0, "rougeL": 30.0, "tokens_per_sample": 100.0, "gen_num": 4}
    with pytest.raises(HarnessError, match="has no 'models:' mapping"):
        record_targets("mine", result, "test", other)
    assert other.read_text() == "- an unrelated list\n"


# -- numbers that cannot work ----------------------------------------------------------------------
def test_processorca_negative_calibration_size_fails_before_tokenizing(tmp_path):
    p = run("processorca.py", "--dataset_pq_path", str(ROOT / "assets/openorca_demo/open_orca_demo.parquet"),
            "--export_dir", str(tmp_path / "out"), "--num_total_samples", "8", "--calibration_size", "-1")
    assert_one_error(p, "--calibration_subset_size must be >= 0, got -1")
    assert "rows pass" not in p.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--num-workers", "-2", "--num-workers must be >= 1, got -2"),
    ("--query-timeout", "-1", "--query-timeout must be a finite number of seconds >= 0"),
    ("--query-timeout", "nan", "--query-timeout must be a finite number of seconds >= 0"),
    ("--target-qps", "inf", "--target-qps must be finite, got inf"),
    ("--min-duration", "inf", "--min-duration must be below 2^64 ms, got inf"),
    ("--min-query-count", str(2**64), f"--min-query-count must be below 2^64, got {2**64}"),
    ("--backend-arg", "delay_ms=nan", "option 'delay_ms' of backend 'null' expects a finite float, got 'nan'"),
    ("--backend-arg", "delay_ms=-5", "null: tokens, delay_ms and stall_s must be >= 0"),
    ("--backend-arg", "fail_on=abc", "null: fail_on, fail_mid_on and stall_on take token ids"),
])
def test_main_numbers_that_cannot_work_are_refused_before_the_run(tmp_path, flag, value, message):
    """Before: batch size, workers and query timeout were clamped or ignored while results.json
    recorded the bad value; inf / 2^64 crashed in LoadGen's bindings or wrote a detail log no JSON
    reader takes; bad null-backend options failed every query or raised at load."""
    data, conf = tiny_dataset(tmp_path / "data.pkl", n=4), tiny_conf(tmp_path / "user.conf", n=4)
    out = tmp_path / "run"
    p = run_main("--backend", "null", "--dataset-path", str(data), "--user-conf", str(conf),
                 "--output-log-dir", str(out), flag, value, timeout=120)
    assert_one_error(p, message)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["data.pkl", "user.conf"]  # no run folder


@pytest.mark.parametrize("url, message", [
    ("http://[::1", "is not a valid URL (Invalid IPv6 URL)"),
    ("http://127.0.0.1:99999", "is not a valid URL (Port out of range"),
    ("ftp://user:secret@127.0.0.1:21", "expected http://HOST:PORT or https://HOST:PORT"),
    ("", "expected http://HOST:PORT or https://HOST:PORT"),
])
def test_api_server_that_is_not_an_http_url(tmp_path, url, message):
    data = tiny_dataset(tmp_path / "data.pkl", n=4)
    p = run_main("--backend", "openai", "--api-server", url, "--api-model-name", "m", "--dataset-path", str(data),
                 "--output-log-dir", str(tmp_path / "run"), timeout=120)
    last = assert_one_error(p, "--api-server", message)
    assert "secret" not in p.stderr + p.stdout, last
    assert not (tmp_path / "run").exists()


def test_api_server_without_scheme_still_means_http():
    from backends.openai_client import normalize_url

    assert normalize_url("127.0.0.1:9/v1/") == "http://127.0.0.1:9"
    assert normalize_url("HTTPS://[::1]:8443") == "HTTPS://[::1]:8443"


def test_sweep_qps_not_a_number(tmp_path):
    p = run("-m", "reporting.sweep", "--backend", "null", "--no-progress", "--qps", "nan",
            "--output-dir", str(tmp_path / "out"))
    assert_one_error(p, "--qps", "must be positive (and finite)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, message", [
    ("..", "name: String should match pattern"),   # before: the run's folder was the output folder's parent
    (".hidden", "name: String should match pattern"),
    ("report.html", "is taken by the comparison's own files"),  # before: a traceback after every run
    ("data", "is taken by the comparison's own files"),
    ("spec.yaml", "is taken by the comparison's own files"),
])
def test_compare_run_names_stay_inside_the_output_folder(tmp_path, name, message):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f'runs:\n  - name: "{name}"\n    backend: "null"\n')
    p = run("-m", "reporting.compare", str(spec), "--no-progress", "--output-dir", str(tmp_path / "out"))
    assert_one_error(p, message)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["spec.yaml"]


def test_report_of_a_binary_results_json_and_into_a_file(tmp_path, a_file):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_bytes(b"\xff\xfe{}")
    p = run("-m", "reporting.report", str(run_dir), "--output", str(tmp_path / "r.html"))
    assert_one_error(p, "results.json is not valid JSON (not UTF-8 text")

    data, conf = tiny_dataset(tmp_path / "data.pkl", n=4), tiny_conf(tmp_path / "user.conf", n=4)
    assert run_main("--backend", "null", "--dataset-path", str(data), "--user-conf", str(conf),
                    "--output-log-dir", str(tmp_path / "good"), timeout=120).returncode == 0
    p = run("-m", "reporting.report", str(tmp_path / "good"), "--output", str(a_file / "r.html"))
    assert_one_error(p, "the folder of --output", "is a file, not a folder")


@pytest.mark.parametrize("qps, conf_line, message", [
    ("1e300", None, "makes LoadGen schedule 3e+299 queries up front"),
    (None, "*.Server.target_qps = 1e300", "makes LoadGen schedule"),
    ("1e-300", None, "is too low: the 4 queries of min_query_count would arrive after"),
])
def test_server_target_qps_loadgen_cannot_schedule(tmp_path, qps, conf_line, message):
    """Before: LoadGen filled the memory building the schedule (too many queries, or arrival times
    past its 64-bit nanosecond clock) until the process was killed."""
    data, conf = tiny_dataset(tmp_path / "data.pkl", n=4), tiny_conf(tmp_path / "user.conf", n=4)
    if conf_line:
        conf.write_text(conf.read_text() + conf_line + "\n")
    flags = ["--target-qps", qps] if qps else []
    p = run_main("--backend", "null", "--scenario", "Server", "--dataset-path", str(data), "--user-conf", str(conf),
                 "--output-log-dir", str(tmp_path / "run"), *flags, timeout=60)
    assert_one_error(p, "Server target QPS", message)
    assert not (tmp_path / "run").exists()


def test_synthetic_dataset_never_replaces_a_file_and_is_named_as_main_reads_it(tmp_path, a_file):
    earlier = tiny_dataset(tmp_path / "earlier.pkl", n=4)
    before = earlier.read_bytes()
    common = ["-m", "inputs.synthetic", "--num-samples", "4", "--input-len", "8", "--output-len", "8"]
    assert_one_error(run(*common, "--output", str(earlier)), "exists already; datasets are never overwritten")
    assert earlier.read_bytes() == before
    assert_one_error(run(*common, "--output", str(tmp_path / "syn.txt")), "name it .pkl")
    assert_one_error(run(*common, "--output", str(a_file / "syn.pkl")), "is a file, not a folder")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["earlier.pkl", "notes.txt"]


@pytest.mark.parametrize("ids", [[1.5, 3.2], "123"], ids=["floats", "a-string"])
def test_dataset_token_ids_that_are_not_integers(tmp_path, ids):
    """Before: int() cut 1.5 to 1 and read the string "123" as the ids 1, 2, 3, and the run went on."""
    data = tmp_path / "data.pkl"
    tiny_dataset(data, n=4)
    df = pd.read_pickle(data)
    df["tok_input"] = [ids] * len(df)
    df.to_pickle(data)
    p = run_main("--backend", "null", "--dataset-path", str(data), "--output-log-dir", str(tmp_path / "run"),
                 timeout=120)
    assert_one_error(p, "column tok_input must hold lists of token ids")
    assert not (tmp_path / "run").exists()


# -- files built to exhaust the parser: each is refused with one line, in bounded memory -------------
# Memory is measured on the process (psutil, every 20 ms) and the process is killed past the limit,
# so a regression fails the test instead of taking the machine's memory.
RSS_LIMIT_MB = 500
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))  # 9^9 values
DEEP = "[" * 50_000 + "]" * 50_000
HUGE_INT = "1" * 5_000


def run_bounded(*args: str, limit_mb: int = RSS_LIMIT_MB) -> tuple[subprocess.CompletedProcess, float]:
    """python ARGS... as run() does, with the peak RSS seen (MB) of the process and its children;
    killed when it passes limit_mb."""
    import time

    import psutil

    proc = subprocess.Popen([PY, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    ps, peak, deadline = psutil.Process(proc.pid), 0.0, time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            # main.py works in a child of a small supervising parent: count the whole tree
            tree = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree) / 2**20)
        except psutil.NoSuchProcess:
            pass            # a child ended between listing and reading: the next sample counts again
        except psutil.Error:
            break
        if peak > limit_mb:
            proc.kill()
            break
        time.sleep(0.02)
    if proc.poll() is None and time.monotonic() >= deadline:
        proc.kill()
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), peak


def assert_bounded_error(args, *fragments: str) -> str:
    p, peak = run_bounded(*args)
    assert peak < RSS_LIMIT_MB, f"peak RSS {peak:.0f} MB"
    line = assert_one_error(p, *fragments)
    assert len(line) < 600, line[:600]  # never the hostile content echoed back whole
    return line


@pytest.mark.parametrize("text, message", [(BOMB, "expands to more than 1,000,000 values"),
                                           (DEEP, "nests deeper than 100 levels"),
                                           (f"weights: {{bits: {HUGE_INT}}}\n", "more than 4,300 digits")],
                         ids=["alias-bomb", "deep", "huge-int"])
def test_hostile_quant_config(tmp_path, text, message):
    config = tmp_path / "q.yaml"
    config.write_text(text)
    data = tiny_dataset(tmp_path / "data.pkl", n=2)
    assert_bounded_error(["main.py", "--no-progress", "--backend", "fakequant", "--quant-config", str(config),
                          "--dataset-path", str(data), "--output-log-dir", str(tmp_path / "run")], "q.yaml", message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, text, message", [
    ("spec.yaml", BOMB, "expands to more than 1,000,000 values"),
    ("spec.yaml", DEEP, "nests deeper than 100 levels"),
    ("spec.json", DEEP, "nests deeper than about 1,000 levels"),
    ("spec.json", f'{{"runs": [{{"name": "a", "repeats": {HUGE_INT}}}]}}', "more than 4,300 digits"),
], ids=["yaml-alias-bomb", "yaml-deep", "json-deep", "json-huge-int"])
def test_hostile_comparison_spec(tmp_path, name, text, message):
    spec = tmp_path / name
    spec.write_text(text)
    assert_bounded_error(["-m", "reporting.compare", str(spec), "--output-dir", str(tmp_path / "out")], name, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("data, message", [(DEEP, "nests deeper than about 1,000 levels"),
                                           (f'[{{"seq_id": 0, "qsl_idx": {HUGE_INT}, "data": "07000000"}}]',
                                            "more than 4,300 digits")], ids=["deep", "huge-qsl_idx"])
def test_hostile_accuracy_log(tmp_path, data, message):
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text(data)
    assert_bounded_error(["compliance.py", "--accuracy-log", str(log), "--scenario", "Offline"], message)


@pytest.mark.parametrize("body, message", [
    (DEEP, "nests deeper than about 1,000 levels"),
    ('{"schema_version": 2, "requests": {"count": ' + HUGE_INT + "}}", "more than 4,300 digits"),
    ('{"schema_version": 2, "run": "x"}', "run: Input should be a valid dictionary"),
    ('{"schema_version": 2, "requests": {"ttft_ms": {"p99": "fast"}}}', "requests.ttft_ms.p99"),
    ('{"schema_version": 2, "goodput": {"fraction": 0.5}}', "goodput.slo_ms: Field required"),
], ids=["deep", "huge-int", "run-not-a-mapping", "latency-not-a-number", "goodput-without-slo"])
def test_report_of_a_results_json_of_the_wrong_shape(tmp_path, body, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(body)
    assert_bounded_error(["-m", "reporting.report", str(run_dir), "--output", str(tmp_path / "r.html")], message)
    assert not (tmp_path / "r.html").exists()


def test_user_conf_integer_of_thousands_of_digits(tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text(f"*.Offline.min_query_count = {HUGE_INT}\n")
    data = tiny_dataset(tmp_path / "data.pkl", n=2)
    assert_bounded_error(["main.py", "--no-progress", "--backend", "null", "--dataset-path", str(data), "--user-conf",
                          str(conf), "--output-log-dir", str(tmp_path / "run")], "below 2^64", "(5,000 characters)")


def test_user_conf_of_one_50_mb_line(tmp_path):
    """Before: read whole, split, and echoed back whole in the error line (a 50 MB line on stderr)."""
    conf = tmp_path / "user.conf"
    with open(conf, "w") as f:
        f.write("*.Offline.min_query_count = " + "9" * 50_000_000 + "\n")
    data = tiny_dataset(tmp_path / "data.pkl", n=2)
    assert_bounded_error(["main.py", "--no-progress", "--backend", "null", "--dataset-path", str(data), "--user-conf",
                          str(conf), "--output-log-dir", str(tmp_path / "run")], "50,000,029 bytes", "limit 1,048,576")


@pytest.mark.parametrize("row, message", [
    ('{"id": "a", "input": "q", "tok_input": [true, 5]}', "true is not a token id"),
    ('{"id": ' + HUGE_INT + ', "input": "q", "tok_input": [5]}', "line 1: holds an integer of more than 4,300 digits"),
    ('{"id": "a", "input": "q", "tok_input": [' + HUGE_INT + "]}", "more than 4,300 digits"),
], ids=["bool-token", "huge-id", "huge-token"])
def test_jsonl_dataset_with_values_that_are_not_token_ids(tmp_path, row, message):
    data = tmp_path / "data.jsonl"
    data.write_text(row + "\n")
    assert_bounded_error(["main.py", "--no-progress", "--backend", "null", "--dataset-path", str(data),
                          "--output-log-dir", str(tmp_path / "run")], message)
    assert not (tmp_path / "run").exists()


def test_duplicate_qsl_idx_in_an_accuracy_log_is_a_warning_with_the_count(tmp_path, caplog):
    import evaluation

    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text(json.dumps([{"seq_id": i, "qsl_idx": i % 2, "data": "07000000"} for i in range(5)]))
    with caplog.at_level("WARNING"):
        responses = evaluation.load_accuracy_log(str(log), "int32")
    assert [r.qsl_idx for r in responses] == [0, 1]
    assert "3 of 5 responses repeat a qsl_idx" in caplog.text


# -- task inputs: empty, wrong-typed, malformed --------------------------------------------------------
MC = '[{{"question": {q}, "mc1_targets": {{"choices": {c}, "labels": {l}}}}}]'


@pytest.mark.parametrize("task, name, text, message", [
    ("perplexity", "t.txt", "", "is empty"),
    ("perplexity", "t.txt", "\xff\xfe", "not UTF-8"),
    ("multiple-choice", "mc.json", "", "holds no questions"),
    ("multiple-choice", "mc.json", '{"question": "q"}', "expected a JSON list"),
    ("multiple-choice", "mc.json", MC.format(q="null", c='["a", "b"]', l="[1, 0]"), "question must be text"),
    ("multiple-choice", "mc.json", MC.format(q='"q"', c='"ab"', l="[1, 0]"), "choices must be a list of texts"),
    ("multiple-choice", "mc.json", MC.format(q='"q"', c='["a", "b"]', l="[true, false]"), "labels must be a list of 0/1"),
    ("multiple-choice", "mc.json", DEEP, "nests deeper"),
    ("multiple-choice", "mc.csv", 'a,b\n"open\n', "not a readable CSV"),
    ("summarization", "s.json", "", "is empty"),
    ("summarization", "s.json", '[{"document": "d", "summary": null}]', "must be texts, got str and NoneType"),
    ("summarization", "s.json", '[{"document": ["d"], "summary": "s"}]', "must be texts, got list and str"),
    ("summarization", "s.jsonl", '{"document": "d", "summary": "s"}\n{"document": ', "neither JSON nor JSON lines"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None)
def test_task_inputs_that_are_empty_wrong_typed_or_malformed(tmp_path, task, name, text, message):
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    assert_bounded_error(["-m", "tasks", task, "--dataset-path", str(path), "--output-dir", str(tmp_path / "out"),
                          "--no-progress"], message)
    assert not (tmp_path / "out").exists()
