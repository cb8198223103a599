"""End-to-end tests of the SUTs on the real LoadGen with the null backend."""
from __future__ import annotations

import json
import os
import pickle
import time

import pytest
from helpers import (
    accuracy_entries,
    assert_test06,
    decode_ids,
    results,
    run_main,
    run_test06,
    start_loadgen_test,
    summary,
    tiny_conf,
    tiny_dataset,
)


@pytest.fixture
def data(tmp_path):
    return tiny_dataset(tmp_path / "tiny.pkl", n=32)


def _null(tmp_path, data, *extra, conf=None, out="out"):
    conf = conf or tiny_conf(tmp_path / "user.conf", n=32)
    return run_main("--backend", "null", "--dataset-path", str(data), "--user-conf", str(conf),
                    "--output-log-dir", str(tmp_path / out), *extra)


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_accuracy_run_logs_every_sample_with_exact_token_counts(tmp_path, data, scenario):
    p = _null(tmp_path, data, "--scenario", scenario, "--accuracy", "--backend-arg", "tokens=9")
    assert p.returncode == 0, p.stderr[-2000:]
    entries = accuracy_entries(tmp_path / "out")
    assert sorted(e["qsl_idx"] for e in entries) == list(range(32))
    for e in entries:
        assert e["token_count"] == 9 and decode_ids(e) == [7] * 9
        if scenario == "Server":
            assert decode_ids({"data": e["token_data"]}) == [7]  # first token reported separately
    assert_test06(tmp_path / "out", scenario)
    r = results(tmp_path / "out")
    assert r["run"]["status"] == "ok" and r["requests"]["completed"] == 32


def test_offline_performance_run_is_valid(tmp_path, data):
    # One batch of 32 that takes 300 ms, so LoadGen's 200 ms minimum duration is met.
    p = _null(tmp_path, data, "--scenario", "Offline", "--batch-size", "32", "--backend-arg", "delay_ms=300",
              "--backend-arg", "tokens=16")
    assert p.returncode == 0, p.stderr[-2000:]
    s = summary(tmp_path / "out")
    assert "Result is : VALID" in s
    tokens_per_s = float(s.split("Tokens per second:")[1].split()[0]) if "Tokens per second:" in s else None
    samples_per_s = float(s.split("Samples per second:")[1].split()[0])
    assert samples_per_s > 0
    if tokens_per_s is not None:
        assert tokens_per_s == pytest.approx(16 * samples_per_s, rel=0.01)


def test_server_performance_run_is_valid_and_streams_first_tokens(tmp_path):
    # Early stopping needs a few hundred queries for a VALID Server result.
    data = tiny_dataset(tmp_path / "d.pkl", n=64)
    conf = tmp_path / "user.conf"
    conf.write_text("*.Server.target_qps = 2000\n*.Server.min_duration = 300\n*.Server.min_query_count = 1000\n")
    p = _null(tmp_path, data, "--scenario", "Server", "--num-workers", "2", conf=conf)
    assert p.returncode == 0, p.stderr[-2000:]
    s = summary(tmp_path / "out")
    assert "Result is : VALID" in s, s[:1500]
    r = results(tmp_path / "out")
    assert r["requests"]["completed"] >= 1000
    assert r["requests"]["output_tokens"]["total"] == 32 * r["requests"]["completed"]


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_failing_backend_still_completes_every_query(tmp_path, scenario):
    prompts = [[100 + i, 5, 6] for i in range(16)]
    data = tiny_dataset(tmp_path / "d.pkl", prompts=prompts)
    conf = tiny_conf(tmp_path / "user.conf", n=16)
    p = _null(tmp_path, data, "--scenario", scenario, "--accuracy", "--backend-arg", "fail_on=103,110",
              "--backend-arg", "fail_mid_on=105", "--backend-arg", "tokens=4", conf=conf)
    assert p.returncode == 1, p.stderr[-2000:]
    assert "RUN FAILED" in p.stderr
    entries = {e["qsl_idx"]: e for e in accuracy_entries(tmp_path / "out")}
    assert sorted(entries) == list(range(16))
    assert decode_ids(entries[3]) == [1] and decode_ids(entries[10]) == [1]   # the EOS response
    if scenario == "Server":
        assert decode_ids(entries[5]) == [7]            # the first token already sent is kept
    assert decode_ids(entries[0]) == [7] * 4
    assert_test06(tmp_path / "out", scenario)
    r = results(tmp_path / "out")
    assert r["run"]["status"] == "failed"
    n_failed = 3 if scenario == "Server" else 2  # fail_mid_on only exists while streaming
    assert r["run"]["n_errors"] == n_failed and r["requests"]["errors"] == n_failed


def test_hung_backend_is_cut_off_by_the_query_timeout(tmp_path):
    prompts = [[100 + i, 5] for i in range(8)]
    data = tiny_dataset(tmp_path / "d.pkl", prompts=prompts)
    conf = tiny_conf(tmp_path / "user.conf", n=8)
    p = _null(tmp_path, data, "--scenario", "Server", "--accuracy", "--num-workers", "2",
              "--backend-arg", "stall_on=102", "--query-timeout", "1", conf=conf)
    assert p.returncode == 1, p.stderr[-2000:]
    assert "timed out after 1 s" in p.stderr
    assert len(accuracy_entries(tmp_path / "out")) == 8


def test_server_first_token_is_counted_unlike_the_reference(tmp_path, data):
    p = _null(tmp_path, data, "--scenario", "Server", "--accuracy", "--backend-arg", "tokens=1")
    # LoadGen logs an error for each one-token reply (it has no TPOT), so the run is failed.
    assert p.returncode == 1 and "LoadGen logged 32 errors" in p.stderr, p.stderr[-2000:]
    for e in accuracy_entries(tmp_path / "out"):
        assert e["token_count"] == 1 and decode_ids(e) == [7]


def test_eos_is_kept_once_and_never_repeated(tmp_path, data):
    # token_id == eos_id: every output is a lone EOS after trimming.
    p = _null(tmp_path, data, "--scenario", "Offline", "--accuracy", "--backend-arg", "token_id=1")
    assert p.returncode == 1 and "LoadGen logged 32 errors" in p.stderr, p.stderr[-2000:]  # one-token replies
    assert all(decode_ids(e) == [1] for e in accuracy_entries(tmp_path / "out"))
    assert run_test06(tmp_path / "out", "Offline")["eos"]


def test_test06_detects_violations(tmp_path):
    import compliance
    from accuracy.mlperf_log import read_entries

    log = tmp_path / "mlperf_log_accuracy.json"
    good = {"qsl_idx": 0, "data": "0500000002000000", "token_data": "05000000", "token_count": 2}
    double_eos = {"qsl_idx": 1, "data": "050000000200000002000000", "token_data": "05000000", "token_count": 3}
    wrong_first = {"qsl_idx": 2, "data": "0500000006000000", "token_data": "06000000", "token_count": 2}
    wrong_count = {"qsl_idx": 3, "data": "0500000006000000", "token_data": "05000000", "token_count": 1}
    for entry, broken in ((good, None), (double_eos, "eos"), (wrong_first, "first_token"),
                          (wrong_count, "token_count")):
        log.write_text(json.dumps([entry]))
        r = compliance.check(read_entries(str(log)), "Server", {2})
        assert compliance.passed(r) == (broken is None)
        if broken:
            assert r[broken] is False
    assert compliance.main(["--accuracy-log", str(log), "--scenario", "Server", "--eos-token-id", "2"]) == 1


# ---- bad input: one clear line, non-zero exit, earlier results untouched -----------------------
def _one_error_line(p, *needles):
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_dataset(tmp_path):
    _one_error_line(_null(tmp_path, tmp_path / "nope.pkl"), "dataset not found")


def test_corrupt_dataset(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"this is not a pickle")
    _one_error_line(_null(tmp_path, bad), "cannot read dataset")


def test_dataset_with_wrong_columns(tmp_path):
    import pandas as pd

    path = tmp_path / "cols.pkl"
    pd.DataFrame({"input": ["a"], "output": ["b"]}).to_pickle(path)
    _one_error_line(_null(tmp_path, path), "lacks column(s) tok_input")


def test_unknown_backend(tmp_path, data):
    p = run_main("--backend", "nope", "--dataset-path", str(data), "--output-log-dir", str(tmp_path / "o"))
    _one_error_line(p, "unknown backend 'nope'")


def test_unknown_backend_option(tmp_path, data):
    _one_error_line(_null(tmp_path, data, "--backend-arg", "colour=blue"), "unknown option 'colour'")


def test_bad_user_conf_path_and_key(tmp_path, data):
    _one_error_line(_null(tmp_path, data, conf=tmp_path / "missing.conf"), "user config not found")
    typo = tmp_path / "typo.conf"
    typo.write_text("*.Server.target_qpz = 3\n")
    _one_error_line(_null(tmp_path, data, conf=typo), "unknown LoadGen key 'target_qpz'")


def test_existing_results_are_never_overwritten(tmp_path, data):
    first = _null(tmp_path, data, "--scenario", "Offline", "--accuracy")
    assert first.returncode == 0, first.stderr[-2000:]
    before = {f: os.path.getmtime(tmp_path / "out" / f) for f in os.listdir(tmp_path / "out")}
    second = _null(tmp_path, data, "--scenario", "Offline", "--accuracy")
    _one_error_line(second, "already holds results")
    assert {f: os.path.getmtime(tmp_path / "out" / f) for f in os.listdir(tmp_path / "out")} == before
    assert not [d for d in os.listdir(tmp_path) if ".partial-" in d]


def test_dataset_pickle_of_wrong_type(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    _one_error_line(_null(tmp_path, path), "expected a pandas DataFrame")


# ---- queries a Server worker serves together (in-process LoadGen) ------------------------------
def _server_accuracy_run(out_dir, backend, n=64, target_qps=4000, wrap_issue=None, pin_cpu=None, scenario="Server",
                         **settings):
    """Server (or Offline, batch size 1) accuracy run of our SUT on real LoadGen in this process; the
    core and the log entries. `wrap_issue(issue_queries)` may wrap the SUT's callback; `settings` go to
    LoadGen."""
    import mlperf_loadgen as lg

    from SUT_offline import SUT
    from SUT_server import SUTServer

    class Data:
        input_ids = [[100 + i, 5, 6] for i in range(n)]
        total_sample_count = perf_count = n

        def LoadSamplesToRam(self, s):  # noqa: N802
            pass

        def UnloadSamplesFromRam(self, s):  # noqa: N802
            pass

    sut = (SUTServer if scenario == "Server" else SUT)(backend, Data(), pin_cpu=pin_cpu)
    sut.start()
    try:
        issue = wrap_issue(sut.issue_queries) if wrap_issue else sut.issue_queries
        start_loadgen_test(issue, sut.flush_queries, sut.qsl, out_dir, scenario, accuracy=True,
                           target_qps=target_qps, **settings)
    finally:
        sut.stop()
        lg.DestroyQSL(sut.qsl)
    return sut.core, accuracy_entries(out_dir)


@pytest.mark.parametrize("together", [1, 64])
def test_server_worker_serves_queued_queries_together_only_as_the_backend_allows(tmp_path, together):
    import compliance
    from backends.base import GenerationParams
    from backends.null import NullBackend

    class CountingNull(NullBackend):
        streams_per_worker = together
        open = most_open = 0

        def stream(self, prompt):
            self.open += 1
            self.most_open = max(self.most_open, self.open)
            try:
                yield from super().stream(prompt)
            finally:
                self.open -= 1

    # 1 ms per stream at 4000 QPS: queries queue up behind the one worker.
    backend = CountingNull(params=GenerationParams(max_new_tokens=8),
                           options={"tokens": "5", "delay_ms": "1", "fail_mid_on": "103", "fail_on": "105"})
    backend.load()
    core, entries = _server_accuracy_run(tmp_path, backend)
    assert backend.most_open == 1 if together == 1 else backend.most_open > 1
    assert sorted(e["qsl_idx"] for e in entries) == list(range(64))  # every query completed once
    for e in entries:
        expected = {3: [7], 5: [1]}.get(e["qsl_idx"], [7] * 5)  # failed after / before its first token
        assert decode_ids(e) == expected and e["token_count"] == len(expected)
    assert compliance.passed(compliance.check(entries, "Server", {1}))  # first token == data[0]
    assert sorted(r.sample_index for r in core.records if r.error) == [3, 5]
    for r in core.records:
        assert r.t_issued <= r.t_first <= r.t_done and len(r.chunk_times) == len(r.chunk_sizes) >= 1
        assert sum(r.chunk_sizes) == r.n_output


@pytest.mark.parametrize("scenario", ["Server", "Offline"])
def test_ttft_from_dispatch_leaves_out_the_time_queued_behind_a_busy_worker(tmp_path, scenario):
    """One worker, 20 ms per request, 16 queries issued at once (Offline) or within a few ms
    (Server, 4000 QPS): each waits for those before it. TTFT from dispatch is the backend's 20 ms;
    TTFT from issue adds the wait, which is the queue time."""
    import numpy as np

    from backends.base import GenerationParams
    from backends.null import NullBackend
    from harness.results import request_stats

    backend = NullBackend(params=GenerationParams(max_new_tokens=8), options={"tokens": "4", "delay_ms": "20"})
    backend.load()
    core, entries = _server_accuracy_run(tmp_path, backend, n=16, scenario=scenario)
    assert len(entries) == 16
    cols = core.records.columns()
    ttft, from_dispatch, queue = cols.ttft(), cols.ttft_from_dispatch(), cols.queue()
    assert len(cols) == 16 and cols.ok.all() and (queue >= 0).all()
    assert np.allclose(ttft, queue + from_dispatch)
    assert (from_dispatch >= 0.019).all() and np.median(from_dispatch) < 0.1   # one backend delay
    # The last one waited for 15 others, less the time between the first and the last issue (a few
    # ms; longer when LoadGen's issuing thread is kept waiting on a loaded machine).
    spread = cols.t_issued.max() - cols.t_issued.min()
    assert ttft.max() >= 0.3 - spread
    assert np.median(ttft) > 3 * np.median(from_dispatch)
    stats = request_stats(core.records)
    assert stats["queue_ms"]["p50"] > 50 and stats["queue_ms"]["max"] >= 1000 * (0.25 - spread)
    assert stats["ttft_from_dispatch_ms"]["p50"] < stats["ttft_ms"]["p50"] / 3
    assert stats["e2e_from_dispatch_ms"]["p50"] < stats["e2e_ms"]["p50"]


def test_server_takes_queries_loadgen_coalesced(tmp_path):
    """With server_coalesce_queries (user.conf: *.Server.coalesce_queries = 1) LoadGen issues
    every query already due in one call when its issuing thread is late; each is still answered
    once, first token included."""
    import compliance
    from backends.base import GenerationParams
    from backends.null import NullBackend

    sizes = []

    def late(issue):  # the first calls take 20 ms, so the queries behind them fall due together
        def wrapped(query_samples):
            sizes.append(len(query_samples))
            if len(sizes) <= 3:
                time.sleep(0.02)
            issue(query_samples)
        return wrapped

    backend = NullBackend(params=GenerationParams(max_new_tokens=8), options={"tokens": "4"})
    backend.load()
    core, entries = _server_accuracy_run(tmp_path, backend, wrap_issue=late, server_coalesce_queries=True)
    assert max(sizes) > 1 and sum(sizes) == 64
    assert sorted(e["qsl_idx"] for e in entries) == list(range(64))
    assert all(decode_ids(e) == [7] * 4 and e["token_count"] == 4 for e in entries)
    assert compliance.passed(compliance.check(entries, "Server", {1}))
    assert len(core.records) == 64 and not core.failed


def test_pinned_sut_runs_issuing_thread_and_worker_on_one_cpu_and_unpins(tmp_path):
    from backends.base import GenerationParams
    from backends.null import NullBackend

    cpu = max(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    seen = {"issuer": set(), "worker": set()}

    class Watching(NullBackend):
        def stream(self, prompt):
            seen["worker"].add(frozenset(os.sched_getaffinity(0)))
            yield from super().stream(prompt)

    def watch(issue):
        def wrapped(query_samples):
            issue(query_samples)
            seen["issuer"].add(frozenset(os.sched_getaffinity(0)))
        return wrapped

    backend = Watching(params=GenerationParams(max_new_tokens=8), options={"tokens": "4"})
    backend.load()
    core, entries = _server_accuracy_run(tmp_path, backend, wrap_issue=watch, pin_cpu=cpu)
    assert seen == {"issuer": {frozenset({cpu})}, "worker": {frozenset({cpu})}}
    assert os.sched_getaffinity(0) == before          # the issuing thread is unpinned by stop()
    assert sorted(e["qsl_idx"] for e in entries) == list(range(64)) and not core.failed


def test_pin_is_refused_for_a_backend_working_on_the_worker_thread_or_a_cpu_not_ours(tmp_path, data):
    from backends.null import NullBackend
    from common.errors import HarnessError
    from harness.core import SUTCore

    class OnWorker(NullBackend):
        pinnable = False

    with pytest.raises(HarnessError, match="pinning them to one CPU would confine it"):
        SUTCore(OnWorker(), [[1]], streaming=True, pin_cpu=min(os.sched_getaffinity(0)))
    _one_error_line(_null(tmp_path, data, "--scenario", "Server", "--pin-cpu", "4096"),
                    "CPU 4096 is not available to this process")
    p = run_main("--backend", "llamacpp", "--pin-cpu", "0", "--scenario", "Server",
                 "--output-log-dir", str(tmp_path / "llamacpp"))
    _one_error_line(p, "backend 'llamacpp' runs its work on the SUT's worker threads")
    assert not (tmp_path / "llamacpp").exists()


def test_main_pin_cpu_server_run(tmp_path, data):
    p = _null(tmp_path, data, "--scenario", "Server", "--accuracy", "--pin-cpu", str(min(os.sched_getaffinity(0))))
    assert p.returncode == 0, p.stderr[-2000:]
    assert_test06(tmp_path / "out", "Server")
    assert results(tmp_path / "out")["requests"]["completed"] == 32
