"""results.json, LoadGen log parsing, request statistics, goodput and the system monitor.

LoadGen logs here are real: LoadGen runs in-process against a trivial SUT that answers every
query at once, in the Offline and Server scenarios with sub-second settings.
"""
from __future__ import annotations

import array
import datetime
import json
import os
import re
import sys
import time
import types
from pathlib import Path

import pytest
from helpers import start_loadgen_test

from common.errors import HarnessError
from harness.loadgen_logs import DETAIL_FILE, SUMMARY_FILE, loadgen_figures, parse_summary
from harness.records import RequestLog, RequestRecord
from harness.results import (
    REQUESTS_COLUMNS,
    distribution_ms,
    goodput_stats,
    load_requests,
    load_results,
    parse_goodput,
    request_stats,
    write_run_results,
)
from harness.summary import loadgen_reasons, run_summary
from harness.sysmetrics import SystemMonitor

N_TOKENS = 16


def run_loadgen(scenario: str, out_dir: Path, target_qps: float = 100, min_duration_ms: int = 300,
                min_query_count: int = 20, accuracy: bool = False) -> RequestLog:
    """Run real LoadGen with a SUT that completes each query inline; return its records."""
    import mlperf_loadgen as lg

    tokens = array.array("i", [7] * N_TOKENS)
    ptr, _ = tokens.buffer_info()
    first = array.array("i", [7])
    fptr, _ = first.buffer_info()
    records: list[RequestRecord] = []

    def issue(queries):
        for q in queries:
            rec = RequestRecord(sample_index=q.index, query_id=q.id, n_input=8, t_issued=time.perf_counter())
            rec.t_dispatch = rec.t_issued
            lg.FirstTokenComplete([lg.QuerySampleResponse(q.id, fptr, 4)])
            rec.t_first = time.perf_counter()
            lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, ptr, N_TOKENS * 4, N_TOKENS)])
            rec.t_done = time.perf_counter()
            rec.n_output = N_TOKENS
            rec.chunk_times, rec.chunk_sizes = [rec.t_first, rec.t_done], [1, N_TOKENS - 1]
            records.append(rec)

    qsl = lg.ConstructQSL(64, 64, lambda x: None, lambda x: None)
    try:
        start_loadgen_test(issue, lambda: None, qsl, out_dir, scenario, accuracy, target_qps,
                           min_duration_ms=min_duration_ms, min_query_count=min_query_count)
    finally:
        lg.DestroyQSL(qsl)
    return RequestLog.from_records(records)


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("offline")
    return out, run_loadgen("Offline", out)


@pytest.fixture(scope="module")
def server_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("server")
    return out, run_loadgen("Server", out, target_qps=400, min_duration_ms=400, min_query_count=50)


RUN_INFO = {"scenario": "Server", "mode": "performance", "backend": {"backend": "null"}, "model_path": None,
            "dtype": "float32", "loadgen_settings": {"min_duration_ms": 400}, "command": ["main.py"],
            "started": 1.0, "finished": 2.0, "status": "ok", "errors": []}


# -- LoadGen logs ------------------------------------------------------------------------------------
def test_offline_logs_parsed(offline_run):
    out, records = offline_run
    fig = loadgen_figures(out)
    summary = parse_summary(out / SUMMARY_FILE)
    assert fig["scenario"] == summary["results"]["Scenario"] == "Offline"
    assert fig["mode"] == "PerformanceOnly"
    assert fig["result"] == summary["results"]["Result is"]
    assert fig["samples_per_s"] == pytest.approx(summary["results"]["Samples per second"], rel=1e-4)
    assert fig["tokens_per_s"] == pytest.approx(summary["results"]["Tokens per second"], rel=1e-4)
    # LoadGen's token rate is its sample rate times our fixed output length.
    assert fig["tokens_per_s"] == pytest.approx(fig["samples_per_s"] * N_TOKENS, rel=1e-3)
    # The inline SUT answers one 33-sample query in well under min_duration: LoadGen says INVALID and why.
    assert fig["result"] == "INVALID" and fig["min_duration_met"] is False
    assert "min duration not satisfied" in fig["invalid_reasons"]
    assert fig["query_count"] == 1 and fig["test_parameters"]["samples_per_query"] == len(records)
    assert fig["latency_ms"]["p99"] >= fig["latency_ms"]["p50"] > 0
    assert fig["errors"] == [] and fig["num_errors"] == 0


def test_server_logs_parsed(server_run):
    out, records = server_run
    fig = loadgen_figures(out)
    summary = parse_summary(out / SUMMARY_FILE)
    res, stats = summary["results"], summary["additional_stats"]
    assert fig["scenario"] == "Server" and fig["result"] == res["Result is"]
    assert fig["query_count"] == len(records)
    assert fig["samples_per_s"] == pytest.approx(res["Completed samples per second"], rel=1e-3)
    assert fig["tokens_per_s"] == pytest.approx(res["Completed tokens per second"], rel=1e-3)
    for p in ("50.00", "90.00", "99.00"):
        key = "p" + p.rstrip("0").rstrip(".")
        assert fig["ttft_ms"][key] == pytest.approx(stats[f"{p} percentile first token latency (ns)"] / 1e6)
        assert fig["tpot_ms"][key] == pytest.approx(stats[f"{p} percentile time to output token (ns)"] / 1e6)
    assert fig["ttft_ms"]["min"] <= fig["ttft_ms"]["p50"] <= fig["ttft_ms"]["p99"] <= fig["ttft_ms"]["max"]
    # VALID exactly when LoadGen gave no reason against it.
    assert (fig["result"] == "VALID") == (not fig["invalid_reasons"])
    if fig["early_stopping_met"] is False:
        assert "early stopping not satisfied" in fig["invalid_reasons"] and fig["early_stopping"]


def test_accuracy_mode_logs(tmp_path):
    # Accuracy mode: every sample once, a summary without figures; not an error.
    records = run_loadgen("Offline", tmp_path, accuracy=True)
    fig = loadgen_figures(tmp_path)
    assert fig["mode"] == "AccuracyOnly" and len(records) == 64
    assert fig["result"] is None and fig["errors"] == []


def test_corrupt_and_missing_logs(tmp_path, offline_run):
    out, _ = offline_run
    with pytest.raises(HarnessError, match="no LoadGen logs"):
        loadgen_figures(tmp_path)
    (tmp_path / SUMMARY_FILE).write_text("garbage\n")
    with pytest.raises(HarnessError, match="not a LoadGen summary"):
        loadgen_figures(tmp_path)
    # A detail log cut mid-line at the end (interrupted run) still parses; a bad middle line does not.
    lines = (out / DETAIL_FILE).read_text().splitlines()
    (tmp_path / SUMMARY_FILE).unlink()
    (tmp_path / DETAIL_FILE).write_text("\n".join(lines[:40] + [lines[40][:30]]))
    assert loadgen_figures(tmp_path)["scenario"] == "Offline"
    (tmp_path / DETAIL_FILE).write_text("\n".join(lines[:10] + [":::MLLOG {oops"] + lines[10:]))
    with pytest.raises(HarnessError, match=r":11 is not a LoadGen MLLOG line"):
        loadgen_figures(tmp_path)


# -- metric definitions on a scripted clock ---------------------------------------------------------
def scripted_records() -> RequestLog:
    # Request 0: issued at 0 s, dispatched at 0.02 s, 1 token at 0.1 s, 3 more at once at 0.3 s.
    r0 = RequestRecord(sample_index=0, query_id=10, n_input=100, t_issued=0.0, t_first=0.1, t_done=0.3,
                       n_output=4, chunk_times=[0.1, 0.3], chunk_sizes=[1, 3], t_dispatch=0.02)
    # Request 1: issued at 0.05 s, dispatched at 0.15 s, a single token at 0.25 s (no TPOT).
    r1 = RequestRecord(sample_index=1, query_id=11, n_input=50, t_issued=0.05, t_first=0.25, t_done=0.25,
                       n_output=1, chunk_times=[0.25], chunk_sizes=[1], t_dispatch=0.15)
    # Request 2: failed before it reached the backend; completed empty.
    r2 = RequestRecord(sample_index=2, query_id=12, n_input=70, t_issued=0.1, t_done=0.2, error="boom")
    return RequestLog.from_records([r0, r1, r2])


def test_request_stats_scripted_clock():
    st = request_stats(scripted_records())
    assert (st["count"], st["completed"], st["errors"]) == (3, 2, 1)
    assert st["error_messages"] == {"boom": 1}
    assert st["duration_s"] == pytest.approx(0.3)
    assert st["output_tokens"] == {"total": 5, "mean": 2.5}
    assert st["input_tokens"] == {"total": 150, "mean": 75.0}
    assert st["output_tokens_per_s"] == pytest.approx(5 / 0.3)
    assert st["requests_per_s"] == pytest.approx(2 / 0.3)
    assert st["ttft_ms"]["count"] == 2
    assert st["ttft_ms"]["mean"] == pytest.approx(150.0)
    assert st["ttft_ms"]["p50"] == pytest.approx(150.0)
    assert st["ttft_ms"]["p90"] == pytest.approx(190.0)          # linear interpolation between 100 and 200
    assert st["tpot_ms"]["count"] == 1                           # one-token output has no TPOT
    assert st["tpot_ms"]["mean"] == pytest.approx(200.0 / 3)     # (300 - 100) / (4 - 1)
    assert st["itl_ms"]["count"] == 3                            # n_out - 1 gaps: 200, 0, 0
    assert st["itl_ms"]["max"] == pytest.approx(200.0) and st["itl_ms"]["min"] == 0.0
    assert st["e2e_ms"]["p50"] == pytest.approx(250.0)
    # From dispatch: r0 80 ms, r1 100 ms; queue 20 and 100 ms; r2 never dispatched (and failed).
    assert st["ttft_from_dispatch_ms"]["count"] == 2
    assert (st["ttft_from_dispatch_ms"]["min"], st["ttft_from_dispatch_ms"]["max"]) == pytest.approx((80.0, 100.0))
    assert (st["queue_ms"]["min"], st["queue_ms"]["max"]) == pytest.approx((20.0, 100.0))
    assert st["e2e_from_dispatch_ms"]["mean"] == pytest.approx((280.0 + 100.0) / 2)


def random_records(n: int, seed: int = 0) -> list[RequestRecord]:
    """Streamed requests on a scripted clock: chunks of 1-4 ids at random gaps, some failed, some
    one-token, some failed before any token, issued in one order and listed in another."""
    import random

    rng = random.Random(seed)
    records = []
    for seq in range(n):
        t_issued = seq * 0.01
        r = RequestRecord(sample_index=rng.randrange(50), query_id=2**63 + seq, n_input=rng.randint(1, 99),
                          t_issued=t_issued, t_dispatch=t_issued + rng.random() * 0.05, seq=seq)
        if rng.random() < 0.1:
            r.error, r.t_done = "boom", r.t_dispatch + 0.5
        else:
            t = r.t_dispatch
            for _ in range(1 if rng.random() < 0.2 else rng.randint(1, 6)):
                t += rng.random() * 0.02
                r.chunk_times.append(t)
                r.chunk_sizes.append(rng.randint(1, 4) if r.chunk_times[1:] else 1)
            r.t_first, r.t_done, r.n_output = r.chunk_times[0], t + 0.001, sum(r.chunk_sizes)
            if rng.random() < 0.05:
                r.error = "failed mid-stream"
        records.append(r)
    rng.shuffle(records)   # completion order differs from issue order
    return records


def test_compact_log_gives_the_per_record_metrics():
    """request_stats over the column store equals the per-record definitions (RequestRecord's
    properties, the form records had before they became columns)."""
    records = random_records(400)
    log = RequestLog.from_records(records)
    st = request_stats(log)
    ok = [r for r in records if r.ok]
    expected = {"ttft_ms": [r.ttft for r in ok], "tpot_ms": [r.tpot for r in ok],
                "itl_ms": [g for r in ok for g in r.itl], "e2e_ms": [r.e2e for r in ok],
                "queue_ms": [r.queue for r in ok]}
    for key, values in expected.items():
        want = distribution_ms(values)
        assert st[key]["count"] == want["count"] > 0, key
        for stat in ("mean", "min", "max", "p50", "p90", "p99"):
            assert st[key][stat] == pytest.approx(want[stat], abs=1e-9), (key, stat)
    assert st["count"] == 400 and st["errors"] == sum(not r.ok for r in records)
    assert st["output_tokens"]["total"] == sum(r.n_output for r in ok)
    for slo in ({"ttft": 40.0}, {"tpot": 5.0, "e2e": 80.0}):
        gp = goodput_stats(log, slo)

        def meets(r, slo=slo):
            return r.ok and all((getattr(r, k) is None and k == "tpot") or
                                (getattr(r, k) is not None and getattr(r, k) * 1000 <= v) for k, v in slo.items())
        assert 0 < gp["good_requests"] == sum(meets(r) for r in records) < len(ok)
    # Back as records: every field survives, in issue order, 64-bit query ids included.
    back = list(log)
    assert [r.seq for r in back] == list(range(400))
    by_seq = {r.seq: r for r in records}
    assert all(r == by_seq[r.seq] for r in back)
    assert log.output_tokens() == sum(r.n_output for r in records)
    assert len(log.snapshot()) == 400 and list(log.snapshot()) == back


def test_distribution_empty():
    d = distribution_ms([None, None])
    assert d["count"] == 0 and d["p99"] is None and d["mean"] is None


def test_goodput():
    recs = scripted_records()
    assert parse_goodput(["ttft:250", "tpot:100"]) == {"ttft": 250.0, "tpot": 100.0}
    assert parse_goodput("ttft:250 e2e:1000") == {"ttft": 250.0, "e2e": 1000.0}
    assert parse_goodput(None) is None
    gp = goodput_stats(recs, {"ttft": 250.0, "tpot": 100.0})
    # r0 and r1 meet both (r1 has no TPOT, which passes); r2 failed.
    assert gp["good_requests"] == 2 and gp["fraction"] == pytest.approx(2 / 3)
    assert gp["requests_per_s"] == pytest.approx(2 / 0.3)
    assert gp["output_tokens_per_s"] == pytest.approx(5 / 0.3)
    gp = goodput_stats(recs, {"ttft": 150.0, "tpot": 50.0})
    assert gp["good_requests"] == 0                              # r0 TPOT 66.7 ms, r1 TTFT 200 ms
    assert goodput_stats(recs, {"ttft": 150.0})["good_requests"] == 1
    for bad in (["ttft"], ["latency:5"], ["ttft:abc"], ["tpot:-1"]):
        with pytest.raises(HarnessError, match="--goodput"):
            parse_goodput(bad)


# -- results.json ----------------------------------------------------------------------------------
def test_write_results_schema_and_no_overwrite(server_run, tmp_path):
    src, records = server_run
    out = tmp_path / "run"
    out.mkdir()
    for name in (SUMMARY_FILE, DETAIL_FILE):
        (out / name).write_bytes((src / name).read_bytes())
    path = write_run_results(out, RUN_INFO, records, None, goodput={"ttft": 2000.0, "tpot": 200.0})
    assert path == out / "results.json"
    raw = path.read_text()
    results = json.loads(raw)  # strict JSON: json.loads would accept NaN, so check the text too
    assert "NaN" not in raw and "Infinity" not in raw
    assert set(results) == {"schema_version", "run", "environment", "loadgen", "requests", "goodput",
                            "sysmetrics", "files"}
    assert results["run"] == RUN_INFO
    env = results["environment"]
    assert env["python"] == sys.version.split()[0]
    assert env["packages"]["mlcommons-loadgen"] == "6.0.17"
    assert env["cpu_count_logical"] == os.cpu_count() and env["ram_bytes"] > 0
    assert results["loadgen"]["query_count"] == len(records) == results["requests"]["count"]
    assert results["requests"]["output_tokens"]["total"] == N_TOKENS * len(records)
    assert results["goodput"]["total_requests"] == len(records)
    rows = load_requests(out)
    assert len(rows) == len(records) and rows[0]["output_tokens"] == N_TOKENS
    assert {r["loadgen_query_id"] for r in rows} == {r.query_id for r in records}
    started = datetime.datetime.fromisoformat(rows[0]["start_time_utc"]).timestamp()
    assert time.time() - 600 < started <= time.time()
    assert load_results(out)["_dir"] == str(out)

    before = raw
    with pytest.raises(HarnessError, match="never overwritten"):
        write_run_results(out, {"status": "second"}, records, None)
    assert path.read_text() == before
    assert sorted(p.name for p in out.iterdir()) == sorted([SUMMARY_FILE, DETAIL_FILE, "results.json",
                                                            "requests.csv"])   # no temp files left


def test_results_without_loadgen_logs(tmp_path):
    # A run that failed before LoadGen wrote anything still gets a results.json saying so.
    path = write_run_results(tmp_path, {"status": "failed"}, scripted_records(), None)
    results = load_results(path)
    assert "no LoadGen logs" in results["loadgen"]["error"]
    assert results["requests"]["errors"] == 1 and results["goodput"] is None
    text = run_summary(results)
    assert "no figures" in text and "RUN FAILED" in text


def test_requests_csv_header_units_ids_and_times(tmp_path):
    log = scripted_records()
    write_run_results(tmp_path, {"status": "failed"}, log, None)
    header = (tmp_path / "requests.csv").read_text().splitlines()[0].split(",")
    assert header == list(REQUESTS_COLUMNS)
    timed = [c for c in header if c.startswith(("t_", "issued", "dispatched", "first", "done", "queue", "ttft",
                                                "tpot", "e2e", "start"))]
    assert len(timed) == 10 and all(c.endswith(("_s", "_ms", "_utc")) for c in timed)   # every time has its unit
    r0, r1, r2 = load_requests(tmp_path)
    assert [r["request_id"] for r in (r0, r1, r2)] == ["r0-s0", "r1-s1", "r2-s2"]   # issue order, sample
    assert [r["loadgen_query_id"] for r in (r0, r1, r2)] == [10, 11, 12]
    assert (r0["queue_ms"], r0["ttft_ms"], r0["ttft_from_dispatch_ms"], r0["e2e_ms"]) == (20.0, 100.0, 80.0, 300.0)
    assert r0["tpot_ms"] == pytest.approx(200 / 3, abs=1e-3) and r1["tpot_ms"] is None   # one token: no TPOT
    assert (r1["issued_s"], r1["dispatched_s"], r1["first_token_s"], r1["done_s"]) == (0.05, 0.15, 0.25, 0.25)
    assert r2["error"] == "boom" and r2["dispatched_s"] is None and r2["ttft_ms"] is None and r2["done_s"] == 0.2
    starts = [datetime.datetime.fromisoformat(r["start_time_utc"]) for r in (r0, r1, r2)]
    assert all(t.utcoffset() == datetime.timedelta(0) for t in starts)
    assert (starts[1] - starts[0]).total_seconds() == pytest.approx(0.05, abs=0.001)
    wall, perf = log.clock_origin   # t_issued 0.0 on the perf_counter clock, as wall-clock time
    assert starts[0].timestamp() == pytest.approx(wall - perf, abs=0.001)


def test_load_results_errors(tmp_path):
    with pytest.raises(HarnessError, match="no results.json"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"schema_version": 1, "run": {')
    with pytest.raises(HarnessError, match="not valid JSON"):
        load_results(tmp_path)


def test_run_summary(offline_run, tmp_path):
    src, records = offline_run
    for name in (SUMMARY_FILE, DETAIL_FILE):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    results = load_results(write_run_results(tmp_path, dict(RUN_INFO, scenario="Offline"), records, None,
                                             goodput={"ttft": 1000.0}))
    text = run_summary(results)
    assert "LoadGen result: INVALID\n  - min duration not reached" in text
    assert re.search(r"^  TTFT +[0-9]", text, re.M) and re.search(r"^  TPOT +[0-9-]", text, re.M)
    assert re.search(r"^  ITL ", text, re.M) and re.search(r"^  E2E +[0-9]", text, re.M)
    assert "output tok/s" in text and f"Status: ok ({len(records)} of {len(records)} queries answered)" in text
    assert "Goodput (ttft<=1000ms)" in text


def test_loadgen_reasons_explain_each_invalid_verdict():
    lg = {"result": "INVALID", "perf_constraints_met": False, "min_duration_met": True, "min_queries_met": True,
          "ttft_ms": {"p99": 3500.0}, "tpot_ms": {"p99": 50.0},
          "test_parameters": {"ttft_latency_ns": 2_000_000_000, "tpot_latency_ns": 200_000_000},
          "early_stopping": {"tpot": "Run unsuccessful. Processed 18 queries. Would need to run at least 441 "
                                    "more queries, with the run being successful if every additional query "
                                    "were under latency."},
          "invalid_reasons": ["TTFT constrain not met: Reduce target QPS to improve latency."]}
    reasons = loadgen_reasons(lg)
    assert reasons[0] == ("latency constraint not met (TTFT p99 3,500 ms > limit 2,000 ms): "
                          "lower the target QPS (--target-qps)")
    assert "needs at least 459" in reasons[1] and "--min-query-count 459" in reasons[1]
    # a reason LoadGen gives that none of the flags explains is shown in its own words
    assert loadgen_reasons({"result": "INVALID", "invalid_reasons": ["something new"]}) == ["something new"]


# -- system monitor ---------------------------------------------------------------------------------
def test_system_monitor_samples():
    mon = SystemMonitor(interval_s=0.05).start()
    t_end = time.perf_counter() + 0.6     # 12 intervals: on a loaded machine, two thirds of them were sampled
    while time.perf_counter() < t_end:   # keep one core busy so process CPU is visible
        sum(range(1000))
    m = mon.stop(output_tokens=100)
    s = m["samples"]
    assert len(s["t_s"]) >= 3 and s["t_s"] == sorted(s["t_s"])
    assert all(len(v) == len(s["t_s"]) for v in s.values())
    assert m["aggregates"]["rss_bytes_max"] > 10_000_000
    assert m["aggregates"]["cpu_process_pct_max"] > 10
    if "pynvml" not in sys.modules:
        assert "gpus" not in m and not any(k.startswith("gpu") for k in s)


def test_system_monitor_with_fake_nvml(monkeypatch):
    """NVML cannot run on this machine (no NVIDIA GPU), so a fake pynvml stands in for it; the
    real library is exercised by benchmarks/sysmetrics_gpu_check.py on a GPU machine."""
    state = {"energy_mj": 1_000_000}

    def energy(h):
        state["energy_mj"] += 500      # 0.5 J per read
        return state["energy_mj"]

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}", nvmlDeviceGetName=lambda h: b"Fake H100",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=5 * 2**30),
        nvmlDeviceGetPowerUsage=lambda h: 250_000, nvmlDeviceGetTotalEnergyConsumption=energy,
        nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    mon = SystemMonitor(interval_s=0.05).start()
    time.sleep(0.15)
    m = mon.stop(output_tokens=10)
    agg = m["aggregates"]
    assert m["gpus"] == ["Fake H100"]
    assert agg["gpu0_util_pct_mean"] == 87 and agg["gpu0_power_w_mean"] == 250.0
    assert agg["gpu0_mem_used_bytes_max"] == 5 * 2**30 and agg["gpu0_power_limit_w"] == 700.0
    assert agg["gpu_energy_j"] == pytest.approx(0.5)        # two counter reads, start and stop
    assert agg["gpu_joules_per_output_token"] == pytest.approx(0.05)
