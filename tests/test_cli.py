"""main.py's console: the LoadGen-setting flags that override user.conf, the run summary and its
verdict reasons, and LoadGen's own summary kept out of stdout unless asked for. Real LoadGen runs
on the null backend."""
from __future__ import annotations

import re

import pytest
from helpers import results, run_main, tiny_conf, tiny_dataset


@pytest.fixture
def data(tmp_path):
    return tiny_dataset(tmp_path / "data.pkl", n=16)


def test_flags_override_user_conf_and_are_recorded(tmp_path, data):
    # user.conf asks for 32 queries over 300 ms at 100 QPS; the flags ask for 40 at 400 QPS
    conf = tiny_conf(tmp_path / "user.conf", n=32, qps=100)
    out = tmp_path / "run"
    p = run_main("--backend", "null", "--scenario", "Server", "--dataset-path", str(data), "--user-conf", str(conf),
                 "--output-log-dir", str(out), "--target-qps", "400", "--min-query-count", "40",
                 "--min-duration", "0.05", timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    r = results(out)
    assert r["run"]["loadgen_overrides"] == {"server_target_qps": 400.0, "min_query_count": 40, "min_duration_ms": 50}
    params = r["loadgen"]["test_parameters"]
    assert params["target_qps"] == 400 and params["min_query_count"] == 40 and params["min_duration_ms"] == 50
    assert r["requests"]["count"] >= 40


@pytest.mark.parametrize("flag, value, message", [
    ("--target-qps", "0", "--target-qps must be > 0"),
    ("--min-duration", "-1", "--min-duration must be >= 0 seconds"),
    ("--min-query-count", "0", "--min-query-count must be >= 1"),
])
def test_bad_override_is_one_line_and_exit_2(tmp_path, data, flag, value, message):
    p = run_main("--backend", "null", "--dataset-path", str(data), "--output-log-dir", str(tmp_path / "run"),
                 flag, value, timeout=60)
    assert p.returncode == 2 and p.stderr.strip() == f"error: {message}, got {value}"
    assert not (tmp_path / "run").exists()


def test_one_output_token_is_refused_before_loadgen(tmp_path, data):
    """LoadGen's LLM mode rejects every 1-token reply ('Number of tokens need to be greater than 1'):
    refused in one line before any model loads or any folder is made."""
    p = run_main("--backend", "null", "--dataset-path", str(data), "--output-log-dir", str(tmp_path / "run"),
                 "--max-new-tokens", "1", timeout=60)
    assert p.returncode == 2 and p.stderr.strip().startswith("error: --max-new-tokens 1: LoadGen's LLM mode needs")
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_summary_says_why_a_short_server_run_is_invalid(tmp_path, data):
    """A short Server run is INVALID by early stopping; the summary says how many queries it needs,
    and LoadGen's own summary stays in its file unless --print-loadgen-summary."""
    conf = tiny_conf(tmp_path / "user.conf", n=16, qps=200)
    out = tmp_path / "run"
    p = run_main("--backend", "null", "--scenario", "Server", "--dataset-path", str(data), "--user-conf", str(conf),
                 "--output-log-dir", str(out), timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "MLPerf Results Summary" not in p.stdout
    assert "LoadGen result: INVALID" in p.stdout
    m = re.search(r"early stopping \((TTFT|TPOT)\): (\d+) queries processed; the p99 bound needs at least (\d+)", p.stdout)
    assert m and int(m.group(3)) > int(m.group(2)), p.stdout
    assert re.search(r"^  TTFT +[0-9]", p.stdout, re.M) and "Status: ok" in p.stdout
    assert re.search(r"^    dispatched +[0-9]", p.stdout, re.M) and re.search(r"^    queued +[0-9]", p.stdout, re.M)
    p2 = run_main("--backend", "null", "--scenario", "Server", "--dataset-path", str(data), "--user-conf", str(conf),
                  "--output-log-dir", str(tmp_path / "run2"), "--print-loadgen-summary", timeout=120)
    assert p2.returncode == 0 and "MLPerf Results Summary" in p2.stdout


def test_results_json_names_and_units(tmp_path, data):
    """schema 2: ISO-8601 UTC times, enum names, snake_case LoadGen parameters with units (LoadGen's
    WARNING line among the warnings), and the dtype and model path that actually ran."""
    out = tmp_path / "run"
    p = run_main("--backend", "null", "--dataset-path", str(data), "--output-log-dir", str(out),
                 "--user-conf", str(tiny_conf(tmp_path / "user.conf", n=16)), timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    r = results(out)
    run = r["run"]
    assert r["schema_version"] == 2
    for key in ("started", "finished"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", run[key]), run[key]
    assert run["duration_s"] >= 0
    assert run["loadgen_settings"]["mode"] == "PerformanceOnly" and run["loadgen_settings"]["scenario"] == "Offline"
    assert run["dtype"] == run["backend"]["dtype"] == "none"
    assert run["model_path"] == run["backend"]["model_path"]
    params = r["loadgen"]["test_parameters"]
    assert params and all(re.fullmatch(r"[a-z0-9_]+", k) for k in params), list(params)
    assert "ttft_latency_ns" in params and "min_duration_ms" in params
    assert any("sample_concatenate_permutation" in w for w in r["loadgen"]["warnings"])


def test_llamacpp_run_records_the_gguf_quantization_and_path(tmp_path, data):
    pytest.importorskip("llama_cpp")
    from inputs.models import default_model_path

    out = tmp_path / "run"
    p = run_main("--dataset-path", str(data), "--output-log-dir", str(out), "--max-new-tokens", "4",
                 "--total-sample-count", "2", "--user-conf", str(tiny_conf(tmp_path / "user.conf", n=2)),
                 "--backend-arg", "n_threads=1", timeout=300)   # one thread: see test_embedded_model_submission
    assert p.returncode == 0, p.stderr[-2000:]
    run = results(out)["run"]
    assert run["dtype"] == "Q4_K_M" and run["model_path"] == default_model_path()
