"""reporting.sweep: defaults, help, sweep.csv's columns and rounding, latencies from dispatch.

The end-to-end run is the command of the README on the null backend (real main.py processes on
the real LoadGen), made short: two concurrency levels of 6 queries each.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reporting.sweep import COLUMNS, LONG_LENGTHS, SHORT_LENGTHS, default_lengths, main, point_row

ROOT = Path(__file__).resolve().parent.parent


def test_default_lengths_suit_the_backend():
    for backend in ("llamacpp", "null", "hf", "fakequant"):
        assert default_lengths(backend, "cpu") == SHORT_LENGTHS == "128/64"
    assert default_lengths("hf", "cuda") == default_lengths("hf", "cuda:1") == LONG_LENGTHS == "2560/768"
    assert default_lengths("openai", "cpu") == LONG_LENGTHS


def test_every_flag_says_its_default(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    flags = [line.split()[0] for line in text.splitlines() if line.startswith("  --") and line.split()[0] != "--help"]
    assert len(flags) == 15
    # Help entries wrap over lines: each flag's text runs to the next flag.
    entries = text.split("\n  --")[1:]
    for entry in entries:
        name = entry.split()[0]
        if name != "help":
            assert "(default:" in " ".join(entry.split()), name
    assert "128/64" in text and "2560/768" in text and "output-logs/sweep-BACKEND-DATE-TIME" in text


def test_point_row_units_rounding_and_latencies_from_dispatch():
    dist = {"p50": 12.3456789, "p99": 45.6789123}
    results = {
        "loadgen": {"result": "INVALID", "ttft_ms": {"p99": 987.654321}},
        "requests": {"count": 8, "errors": 1, "output_tokens_per_s": 123.456789, "requests_per_s": 1.23456789,
                     "ttft_ms": {"p50": 500.0, "p99": 900.0},     # from issue: not what the sweep shows
                     "ttft_from_dispatch_ms": dist, "tpot_ms": dist, "itl_ms": dist, "e2e_ms": {"p50": 1.0, "p99": 2.0},
                     "e2e_from_dispatch_ms": dist, "queue_ms": {"p50": 400.1234567, "p99": 800.0}}}
    row = point_row(results, 128, 64, 1, 1000.0)
    assert list(row) == COLUMNS
    assert all(c.endswith(("_ms", "_s", "_len", "concurrency", "target_qps", "requests", "failed", "result"))
               for c in COLUMNS)
    assert row["ttft_p50_ms"] == 12.346 and row["ttft_p99_ms"] == 45.679 and row["e2e_p99_ms"] == 45.679
    assert row["queue_p50_ms"] == 400.123 and row["loadgen_ttft_p99_ms"] == 987.654
    assert row["output_tok_s"] == 123.5 and row["requests_per_s"] == 1.235
    assert (row["requests"], row["failed"], row["loadgen_result"]) == (8, 1, "INVALID")


def test_readme_sweep_on_the_null_backend(tmp_path):
    """The README's command, on the null backend and shortened: the output folder defaults to a new
    one under output-logs/ (of the working directory), the lengths to 128/64. One worker serving
    6 queries issued together, 30 ms each: TTFT from dispatch is the backend's 30 ms, the queue wait
    shows apart, and LoadGen's TTFT (from its issue) includes it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "reporting.sweep", "--backend", "null", "--backend-arg",
                           "delay_ms=30", "--concurrency", "1", "3", "--num-samples", "6", "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (out,) = (tmp_path / "output-logs").iterdir()
    assert out.name.startswith("sweep-null-")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["confs", "data", "in128-out64-c1", "in128-out64-c3"]
    with open(out / "sweep.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert [(r["concurrency"], r["input_len"], r["output_len"]) for r in rows] == [("1", "128", "64"), ("3", "128", "64")]
    for r in rows:
        assert r["requests"] == "6" and r["failed"] == "0"
        for col in COLUMNS:   # rounded: no float noise such as 30.118273645
            if col.endswith("_ms"):
                assert len(r[col].partition(".")[2]) <= 3, (col, r[col])
        assert len(r["output_tok_s"].partition(".")[2]) <= 1
        assert 29.0 <= float(r["ttft_p50_ms"]) < 150.0          # one backend delay
    c1, c3 = rows
    assert float(c1["queue_p50_ms"]) >= 2 * 30 * 0.9            # the median query waits for 2-3 others
    assert float(c1["loadgen_ttft_p99_ms"]) > 3 * float(c1["ttft_p99_ms"])   # LoadGen's includes the wait
    assert float(c3["output_tok_s"]) > 1.5 * float(c1["output_tok_s"])
    report = (out / "report.html").read_text()
    assert 'alt="throughput against TTFT p99"' in report
    assert "from dispatch" in proc.stdout and str(out.resolve()) in proc.stdout
