"""Reasoning-length outputs (20,000 tokens, the deepseek-r1 limit main.py takes from the registry)
through both SUTs and real LoadGen, on the null backend: every query completes with all its tokens
and the process's resident memory, sampled by the run's monitor, stays under 1 GiB."""
import json

import pytest

from helpers import results, run_main, tiny_conf, tiny_dataset


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_twenty_thousand_tokens_per_query(tmp_path, scenario):
    data = tiny_dataset(tmp_path / "data.pkl", n=8)
    conf = tiny_conf(tmp_path / "user.conf", n=8, qps=50.0)
    out = tmp_path / "run"
    # the backend could give 30,000; the registry's 20,000 for deepseek-r1 caps it
    p = run_main("--backend", "null", "--backend-arg", "tokens=30000", "--scenario", scenario, "--accuracy",
                 "--dataset-path", str(data), "--user-conf", str(conf), "--lg-model-name", "deepseek-r1",
                 "--output-log-dir", str(out), timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    entries = json.loads((out / "mlperf_log_accuracy.json").read_text())
    assert len(entries) == 8
    assert {e["token_count"] for e in entries} == {20000}
    assert {len(e["data"]) for e in entries} == {20000 * 8}  # hex of int32 ids
    r = results(out)
    assert r["run"]["max_new_tokens"] == 20000
    # the whole process (LoadGen, the harness, the 8 replies) stays far under a GiB
    assert 0 < r["sysmetrics"]["aggregates"]["rss_bytes_max"] < 1 << 30
