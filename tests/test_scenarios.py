"""SingleStream, MultiStream and Interactive through main.py on the real LoadGen: the null backend
for the harness's own rules, the real llama.cpp backend for one short run of each."""
from __future__ import annotations

import csv

import pytest
from helpers import assert_test06, results, run_main, tiny_dataset

# LoadGen generates min_duration / target_latency queries up front and fails a run that uses them
# up before both minimums are met, so the expected latency (1 ms) is set below the null backend's
# (delay_ms=2 per query).
STREAM_CONF = """\
*.SingleStream.target_latency = 1
*.SingleStream.min_duration = 200
*.SingleStream.min_query_count = 20
*.SingleStream.sample_concatenate_permutation = 0
*.MultiStream.target_latency = 1
*.MultiStream.min_duration = 200
*.MultiStream.min_query_count = 5
*.MultiStream.sample_concatenate_permutation = 0
*.Server.target_qps = 100
*.Server.min_duration = 300
*.Server.min_query_count = 20
"""


@pytest.fixture
def data(tmp_path):
    return tiny_dataset(tmp_path / "data.pkl", n=16)


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "user.conf"
    path.write_text(STREAM_CONF)
    return path


def _run(tmp_path, data, conf, scenario, *extra, out="run", backend=("--backend", "null")):
    return run_main(*backend, "--scenario", scenario, "--dataset-path", str(data), "--user-conf", str(conf),
                    "--output-log-dir", str(tmp_path / out), "--no-sysmetrics", *extra, timeout=240)


def _requests(log_dir):
    with open(log_dir / "requests.csv") as f:
        return list(csv.DictReader(f))


def test_single_stream_answers_one_query_at_a_time(tmp_path, data, conf):
    p = _run(tmp_path, data, conf, "SingleStream", "--backend-arg", "delay_ms=2", "--lg-model-name", "llama3_1-8b")
    assert p.returncode == 0, p.stderr[-2000:]
    r = results(tmp_path / "run")
    assert r["loadgen"]["scenario"] == "SingleStream" and not r["loadgen"]["errors"]
    rows = _requests(tmp_path / "run")
    assert len(rows) == r["loadgen"]["query_count"] >= 20
    # LoadGen issues the next query only once the previous one completed, first token included
    for prev, cur in zip(rows, rows[1:]):
        assert float(cur["issued_s"]) >= float(prev["done_s"])
    assert all(float(row["first_token_s"]) <= float(row["done_s"]) for row in rows)


def test_multi_stream_queries_carry_samples_per_query_samples(tmp_path, data, conf):
    p = _run(tmp_path, data, conf, "MultiStream", "--backend-arg", "delay_ms=2", "--lg-model-name", "llama3_1-8b")
    assert p.returncode == 0, p.stderr[-2000:]
    r = results(tmp_path / "run")
    per_query = r["loadgen"]["test_parameters"]["samples_per_query"]
    assert per_query > 1  # mlperf.conf's MultiStream value, not ours
    rows = _requests(tmp_path / "run")
    assert len(rows) == r["loadgen"]["query_count"] * per_query
    # the samples of one query are issued together and the next query only after all of them are done
    groups = [rows[i:i + per_query] for i in range(0, len(rows), per_query)]
    for group in groups:
        assert len({row["issued_s"] for row in group}) == 1
    for prev, cur in zip(groups, groups[1:]):
        assert float(cur[0]["issued_s"]) >= max(float(row["done_s"]) for row in prev)


def test_interactive_is_a_server_run_under_the_interactive_limits(tmp_path, data, conf):
    runs = {}
    for scenario in ("Server", "Interactive"):
        p = _run(tmp_path, data, conf, scenario, "--lg-model-name", "llama3_1-8b", out=scenario)
        assert p.returncode == 0, p.stderr[-2000:]
        runs[scenario] = results(tmp_path / scenario)
    inter = runs["Interactive"]
    assert inter["run"]["scenario"] == "Interactive" and inter["run"]["loadgen_scenario"] == "Server"
    assert inter["run"]["lg_model_name"] == "llama3_1-8b-interactive"
    assert inter["loadgen"]["scenario"] == "Server"
    server, interactive = (runs[s]["loadgen"]["test_parameters"] for s in ("Server", "Interactive"))
    # LoadGen's own tables give the interactive entry tighter limits than the Server one
    assert interactive["ttft_latency_ns"] < server["ttft_latency_ns"]
    assert interactive["tpot_latency_ns"] < server["tpot_latency_ns"]


@pytest.mark.parametrize("scenario", ["SingleStream", "MultiStream", "Interactive"])
def test_accuracy_runs_pass_test06(tmp_path, data, conf, scenario):
    p = _run(tmp_path, data, conf, scenario, "--accuracy", "--backend-arg", "tokens=9")
    assert p.returncode == 0, p.stderr[-2000:]
    assert results(tmp_path / "run")["requests"]["count"] == 16
    assert_test06(tmp_path / "run", scenario)


@pytest.mark.parametrize("args, message", [
    (("--scenario", "Interactive", "--lg-model-name", "llama3_1-8b-edge"),
     "error: --scenario Interactive: LoadGen has no interactive settings for llama3_1-8b-edge"),
    (("--scenario", "SingleStream", "--target-qps", "5"),
     "error: --target-qps applies to Offline, Server and Interactive, not SingleStream"),
])
def test_bad_scenario_flags_are_one_line_and_exit_2(tmp_path, data, conf, args, message):
    p = run_main("--backend", "null", "--dataset-path", str(data), "--user-conf", str(conf),
                 "--output-log-dir", str(tmp_path / "run"), *args, timeout=60)
    assert p.returncode == 2 and p.stderr.strip().startswith(message), p.stderr[-500:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("scenario", ["SingleStream", "MultiStream"])
def test_llamacpp_stream_scenarios(tmp_path, conf, scenario):
    """The real llama.cpp backend on the embedded model, a few short queries, TEST06 on the accuracy run."""
    pytest.importorskip("llama_cpp")
    data = tiny_dataset(tmp_path / "data.pkl", n=8, vocab=(300, 3000))
    args = ("--max-new-tokens", "8", "--backend-arg", "n_threads=1", "--backend-arg", "n_ctx=256",
            "--backend", "llamacpp")
    p = _run(tmp_path, data, conf, scenario, "--accuracy", *args, backend=())
    assert p.returncode == 0, p.stderr[-2000:]
    assert results(tmp_path / "run")["requests"]["count"] == 8
    assert_test06(tmp_path / "run", scenario)
