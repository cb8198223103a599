"""mlsubmit/registry.py: the lookups, and every number against its sources: LoadGen's mlperf.conf
(the copy at the top of the repository, always) and the official submission checker's constants
(read from a local clone of mlcommons/inference where there is one: MLPERF_INFERENCE_GIT, a bare
or normal git repository; skipped elsewhere)."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers import ROOT
from common.errors import HarnessError
from mlsubmit import registry

INFERENCE_GIT = os.environ.get("MLPERF_INFERENCE_GIT", "/work/.mirror/mlcommons+inference/repo")


def test_lookups_and_errors():
    assert registry.rounds() == ("v6.0", "v6.1")
    assert registry.get_round().name == registry.DEFAULT_ROUND == "v6.1"
    b = registry.benchmark("v6.1", "llama2-70b-99.9")
    assert (b.level, b.lg_model_name, b.dataset.size) == ("99.9", "llama2-70b", 24576)
    assert b.scenarios("datacenter") == ("Offline", "Server", "Interactive")
    assert b.scenarios("datacenter", optional=False) == ("Offline",)
    assert b.loadgen_model("Interactive") == "llama2-70b-interactive"
    assert registry.benchmark(None, "llama3.1-8b-edge").scenarios("edge") == ("Offline", "SingleStream")
    assert registry.benchmark("v6.0", "llama2-70b-99").level == "99"
    with pytest.raises(HarnessError, match=r"'llama2-70b-99' is not a benchmark of MLPerf v6.1 \(known: "
                                           r"llama2-70b-99.9, llama3.1-8b, llama3.1-8b-edge, deepseek-r1, gpt-oss-120b\); it is a benchmark of v6.0"):
        registry.benchmark("v6.1", "llama2-70b-99")
    with pytest.raises(HarnessError, match=r"unknown MLPerf round 'v5.9' \(known: v6.0, v6.1\)"):
        registry.benchmark("v5.9", "llama3.1-8b")
    with pytest.raises(HarnessError, match="llama3.1-8b-edge is not a datacenter benchmark"):
        registry.benchmark("v6.1", "llama3.1-8b-edge").scenarios("datacenter")
    with pytest.raises(HarnessError, match="system type must be one of"):
        b.scenarios("cloud")


def test_metrics_and_targets():
    b = registry.benchmark("v6.1", "llama3.1-8b")
    gen_len = next(m for m in b.metrics if m.name == "gen_len")
    assert gen_len.bounds == pytest.approx((8167644 * 0.9, 8167644 * 1.1))
    assert gen_len.passes(8167644) and not gen_len.passes(8167644 * 1.2)
    t = registry.model_targets("llama2-70b")
    assert t.metrics == {"rouge1": 44.4312, "rouge2": 22.0352, "rougeL": 28.6162, "tokens_per_sample": 294.45}
    assert t.sample_count == 24576
    with pytest.raises(HarnessError, match="no benchmark of MLPerf v6.1 runs model 'gpt2'"):
        registry.model_targets("gpt2")


def _conf(text: str) -> dict[tuple[str, str, str], str]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([\w.*-]+)\.([\w*]+)\.(\w+)\s*=\s*(\S+)", line.split("#", 1)[0].strip())
        if m:
            out[m.group(1), m.group(2), m.group(3)] = m.group(4)
    return out


def test_numbers_match_loadgen_mlperf_conf():
    """The repository's mlperf.conf is LoadGen's embedded one: sample counts, token latency
    limits (Interactive under the '-interactive' model) and the newest round's seeds."""
    conf = _conf((ROOT / "mlperf.conf").read_text())
    for b in registry.get_round().benchmarks.values():
        for scen in b.scenarios(next(iter(b.required))):
            model = b.loadgen_model(scen)
            assert int(conf[model, "*", "performance_sample_count_override"]) == b.performance_sample_count
            if scen in b.latency:
                lim = b.latency[scen]
                assert (int(conf[model, "Server", "ttft_latency"]), int(conf[model, "Server", "tpot_latency"])) \
                    == (lim.ttft_ms, lim.tpot_ms), model
    for key, value in registry.get_round("v6.1").seeds.items():
        assert int(conf["*", "*", key]) == value


def _official_constants() -> dict:
    try:
        text = subprocess.run(["git", f"--git-dir={INFERENCE_GIT}", "show",
                               "HEAD:tools/submission/submission_checker/constants.py"],
                              capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip(f"no clone of mlcommons/inference at {INFERENCE_GIT} (set MLPERF_INFERENCE_GIT)")
    scope: dict = {}
    exec(compile(text, "constants.py", "exec"), scope)  # the official file: plain literals and arithmetic
    return scope


@pytest.mark.parametrize("round_name", registry.rounds())
def test_numbers_match_the_official_checker(round_name):
    c = _official_constants()
    cfg = c["MODEL_CONFIG"][round_name]
    r = registry.get_round(round_name)
    assert dict(r.seeds.items()) == cfg["seeds"]
    for name, b in r.benchmarks.items():
        assert name in cfg["models"]
        official = list(cfg["accuracy-target"][name])
        targets = [m for m in b.metrics if m.low]  # gpt-oss-120b's length has only an upper limit
        assert official[0::2] == [m.checker for m in targets]
        assert official[1::2] == pytest.approx([m.reference * m.low for m in targets])
        uppers = [(m.checker, m.reference * m.high) for m in b.metrics if m.high]
        official_upper = cfg["accuracy-upper-limit"][name]
        assert [(official_upper[i], pytest.approx(official_upper[i + 1])) for i in range(0, len(official_upper), 2)] \
            == uppers
        assert b.performance_sample_count == cfg["performance-sample-count"][name]
        assert b.dataset.size == cfg["dataset-size"][name]
        assert b.dataset.accuracy_count == cfg.get("accuracy-sample-count", {}).get(name, b.dataset.size)
        assert b.offline_min_samples_per_query == c["OFFLINE_MIN_SPQ_SINCE_V4"][name]
        assert b.min_queries == cfg["min-queries"][name]
        assert b.target_latency_ns == cfg["latency-constraint"].get(name, {})
        assert b.test06 == (name in cfg["models_TEST06"])
        assert b.test07 == (name in cfg.get("models_TEST07", []))
        assert b.test09 == (name in cfg.get("models_TEST09", []))
        assert b.min_duration_ms == c["TEST_DURATION_MS"]
        assert {s: (lim.ttft_ms * 10**6, lim.tpot_ms * 10**6) for s, lim in b.latency.items()} == \
            {s: (v["ttft"], v["tpot"]) for s, v in c["LLM_LATENCY_LIMITS"].get(name, {}).items()}
        for system_type in registry.SYSTEM_TYPES:
            key = system_type.replace(",", "-")
            assert sorted(b.required.get(system_type, ())) == sorted(cfg[f"required-scenarios-{key}"].get(name, []))
            assert sorted(b.optional.get(system_type, ())) == sorted(cfg[f"optional-scenarios-{key}"].get(name, []))


def test_server_or_interactive_where_both_are_optional():
    """The checker's check_scenarios: a closed datacenter submission of a benchmark whose optional
    scenarios are Server and Interactive needs one of them (mlcommons/inference #2654)."""
    for name in ("llama2-70b-99.9", "llama3.1-8b", "deepseek-r1", "gpt-oss-120b"):
        assert registry.benchmark("v6.1", name).one_of("datacenter") == ("Server", "Interactive")
    assert registry.benchmark("v6.1", "llama3.1-8b-edge").one_of("edge") == ()
