"""The slots engine's admission: option prefill_wait_ms batches Server arrivals into shared
prefills, never delays an idle engine, never starves; and the time split it records (stats.py).

Tiny random Llama (2 layers, float32) on the CPU. Arrivals are paced by the engine's own decode
step count, not by sleeps, so the group counts asserted here do not depend on machine speed.
"""
import threading
import time

import pytest
from helpers import accuracy_entries, decode_ids, start_loadgen_test

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from backends.base import GenerationParams  # noqa: E402
from backends.hf import HFBackend  # noqa: E402
from backends.hf_engine import SlotEngine  # noqa: E402
from backends.hf_engine.stats import line, summarize, thread_cpu_s  # noqa: E402
from common.errors import HarnessError  # noqa: E402

SLOTS = 8
NEVER_MS = 600_000.0  # a wait no test outlasts: only the other admission rules can end it


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def prompts():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(4, 512, (n,), generator=g).tolist() for n in (5, 17, 9, 30, 3, 12, 8, 21)]


def _engine(model, wait_ms=0.0, max_new=48, **kw):
    params = GenerationParams(max_new_tokens=max_new, min_new_tokens=max_new, ignore_eos=True)
    return SlotEngine(model, n_slots=SLOTS, cache_len=max_new + 64, params=params, eos_ids=frozenset({2}),
                      kv_bucket=16, prefill_wait_ms=wait_ms, **kw)


def _wait_for(cond, timeout=60.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.0005)


def _one_by_one(engine, prompts):
    """A long request first; once it decodes, the others one at a time, each after the engine has
    taken another decode step (and, without a wait, prefilled the one before). Returns all outputs."""
    first = engine.submit([prompts[0]])[0]
    _wait_for(lambda: first.generated)
    reqs = [first]
    for p in prompts[1:]:
        steps = engine.stats["decode_steps"]
        _wait_for(lambda steps=steps: engine.stats["decode_steps"] > steps)
        reqs += engine.submit([p])
        if engine.prefill_wait_ms == 0:
            _wait_for(lambda r=reqs[-1]: r.generated)
    assert len(first.generated) < engine.params.max_new_tokens  # the others arrived while it decoded
    return engine.collect(reqs)


def test_wait_prefills_one_by_one_arrivals_together_with_the_same_outputs(model, prompts):
    now = _engine(model)
    outs_now = _one_by_one(now, prompts)
    groups_now = now.stats["prefill_groups"]
    now.close()
    waiting = _engine(model, wait_ms=NEVER_MS)
    outs_wait = _one_by_one(waiting, prompts)
    st = waiting.stats
    waiting.close()
    # The first alone (the engine was idle), the other 7 in one group once they filled the free slots.
    assert (groups_now, st["prefill_groups"]) == (len(prompts), 2)
    assert st["prefill_prompts"] == len(prompts) and st["admit_deferred"] > 0
    assert outs_wait == outs_now  # greedy: grouping changes no token
    batch = _engine(model)
    assert batch.collect(batch.submit(prompts)) == outs_now
    batch.close()


def test_a_full_prefill_group_goes_at_once(model, prompts):
    """prefill_tokens=60: the fourth 20-token arrival fills a group; it does not wait for the rest."""
    engine = _engine(model, wait_ms=NEVER_MS, prefill_tokens=60)
    same = [p[:3] * 7 for p in prompts[:5]]  # 21 tokens each: three fill 63 >= 60
    _one_by_one(engine, same)
    st = engine.stats
    engine.close()
    assert st["prefill_groups"] == 3 and st["prefill_prompts"] == 5  # 1 (idle) + 3 (full) + the last one


def test_idle_engine_prefills_a_lone_request_at_once(model, prompts):
    engine = _engine(model, wait_ms=NEVER_MS, max_new=4)
    for p in prompts[:3]:   # one after another, each to an idle engine
        out = engine.collect(engine.submit([p]))
        assert len(out[0]) == 4
    together = engine.submit(prompts[3:7])   # several at once to an idle engine: one group
    engine.collect(together)
    st = engine.stats
    engine.close()
    assert st["admit_deferred"] == 0 and st["prefill_groups"] == 4
    assert st["admit_wait_s"] / st["prefill_prompts"] < 30   # no 600 s wait (a generous bound)


def test_wait_ends_after_prefill_wait_ms_while_others_decode(model, prompts):
    """One arrival, nothing else coming: it waits its 50 ms (the engine decodes meanwhile), then
    is prefilled although it fills nothing."""
    engine = _engine(model, wait_ms=50, max_new=600)
    long = engine.submit([prompts[0]])[0]
    _wait_for(lambda: long.generated)
    t = time.perf_counter()
    late = engine.submit([prompts[1]])[0]
    _wait_for(lambda: late.generated, timeout=30)   # no starvation (a generous bound)
    waited = time.perf_counter() - t
    busy = len(long.generated) < 600
    engine.collect([long, late])
    st = engine.stats
    engine.close()
    assert st["prefill_groups"] == 2
    if busy:   # the long one still decoded when the other was admitted: the wait ran its course
        assert st["admit_deferred"] > 0 and waited >= 0.05


def test_time_split_accounts_for_the_run(model, prompts):
    engine = _engine(model)
    engine.collect(engine.submit(prompts[:2]))  # warm-up
    time.sleep(0.2)    # idle before the run: not counted in it
    before, cpu0, t = engine.snapshot(), thread_cpu_s(engine.thread), time.perf_counter()
    time.sleep(0.05)   # idle within the run
    engine.collect(engine.submit(prompts))
    wall = time.perf_counter() - t
    s = summarize(before, engine.snapshot(), wall, thread_cpu_s(engine.thread) - cpu0)
    engine.close()
    assert s["prefill_groups"] == 1 and s["prefill_prompts"] == 8 and s["prompts_per_group"] == 8
    assert s["decode_steps"] == 48 - 1 and s["steps_per_s"] > 0
    assert 0.04 <= s["idle_s"] < 0.2 + 0.04
    for k in ("prefill_s", "decode_s", "emit_s", "idle_s", "thread_cpu_s"):
        assert 0 < s[k] <= wall, k
    assert 0 <= s["prefill_launch_s"] <= s["prefill_s"] and 0 <= s["decode_launch_s"] <= s["decode_s"]
    assert abs(sum(s["share"].values()) - 1) < 1e-9 and s["other_s"] > -1e-3
    assert "8 prompts in 1 groups" in line(s)


def test_backend_option(tmp_path, model):
    model.save_pretrained(tmp_path)
    b = HFBackend(model_path=str(tmp_path), params=GenerationParams(max_new_tokens=4),
                  options={"prefill_wait_ms": "25", "batch_size": "4"})
    b.load()
    b.generate([[5, 6, 7]])
    assert b.engine.prefill_wait_ms == 25.0
    b.close()
    with pytest.raises(HarnessError, match="prefill_wait_ms must be >= 0"):
        HFBackend(model_path=str(tmp_path), options={"prefill_wait_ms": "-1"})


def test_server_run_through_loadgen_completes_every_query(tmp_path, model):
    """Real LoadGen Server over the hf backend with prefill_wait_ms on: each query once, each
    output the one plain batch generation gives."""
    import mlperf_loadgen as lg

    from SUT_server import SUTServer

    model.save_pretrained(tmp_path / "m")
    b = HFBackend(model_path=str(tmp_path / "m"), params=GenerationParams(max_new_tokens=8),
                  options={"prefill_wait_ms": "20", "batch_size": "4", "stream_interval": "4"})
    b.load()
    n = 24

    class Data:
        input_ids = [[100 + i, 5, 6 + i % 7] for i in range(n)]
        total_sample_count = perf_count = n

        def LoadSamplesToRam(self, s):  # noqa: N802
            pass

        def UnloadSamplesFromRam(self, s):  # noqa: N802
            pass

    expected = b.generate(Data.input_ids)
    sut = SUTServer(b, Data(), workers=8)
    sut.start()
    try:
        start_loadgen_test(sut.issue_queries, sut.flush_queries, sut.qsl, tmp_path, "Server", accuracy=True,
                           target_qps=200)
    finally:
        sut.stop()
        lg.DestroyQSL(sut.qsl)
    recs = sut.core.records
    assert sorted(r.sample_index for r in recs) == list(range(n)) and not sut.core.errors
    got = {e["qsl_idx"]: decode_ids(e) for e in accuracy_entries(tmp_path)}
    assert got == dict(enumerate(expected))
    assert b.engine.stats["prefill_prompts"] == 2 * n
    b.close()


def test_wait_option_may_change_between_runs(model, prompts):
    engine = _engine(model, max_new=4)
    engine.prefill_wait_ms = NEVER_MS
    done = threading.Event()
    threading.Thread(target=lambda: (engine.collect(engine.submit([prompts[0]])), done.set())).start()
    assert done.wait(30)   # idle engine: no wait, whatever the setting
    engine.close()


@pytest.mark.slow
def test_gpu_throughput_compares_server_variants_on_the_cpu(tmp_path):
    """benchmarks/gpu_throughput.py's Server comparison, tiny model on the CPU: one row per target
    and --server-backend-args variant, each with the engine's split over its LoadGen run and at
    least --server-min-queries queries (8 QPS for 1 s would give about 8)."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "r.json"
    cmd = [sys.executable, os.path.join(root, "benchmarks", "gpu_throughput.py"), "--tiny", "--device", "cpu",
           "--skip-baseline", "--slots", "", "--server-slots", "4", "--input-len", "16", "--output-len", "8",
           "--n-prompts", "16", "--server-limits", "llama2-70b:8;interactive:8", "--server-duration-s", "1",
           "--stream-interval", "4", "--server-quant-configs", "fp16", "--server-min-queries", "12",
           "--server-backend-args", "prefill_wait_ms=0;prefill_wait_ms=30,prefill_tokens=64",
           "--log-dir", str(tmp_path / "logs"), "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root,
                       env=dict(os.environ, PYTHONPATH=root, HF_HUB_OFFLINE="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    runs = json.loads(out.read_text())["server"]
    assert [(r["limits"], r["variant"]) for r in runs] == [
        ("llama2-70b", "prefill_wait_ms=0"), ("llama2-70b", "prefill_wait_ms=30,prefill_tokens=64"),
        ("interactive", "prefill_wait_ms=0"), ("interactive", "prefill_wait_ms=30,prefill_tokens=64")]
    assert runs[1]["schedule"] == {"prefill_tokens": 64, "stream_interval": 4, "prefill_wait_ms": 30.0}
    assert runs[2]["schedule"] == {"prefill_tokens": 8192, "stream_interval": 4, "prefill_wait_ms": 0.0}
    for r in runs:
        e = r["engine"]
        assert r["errors"] == 0 and e["prefill_prompts"] == r["samples"] >= 12 and e["decode_steps"] > 0
        assert abs(sum(e["share"].values()) - 1) < 1e-9 and e["other_s"] > -0.05
    assert runs[0]["engine"]["admit_deferred"] == 0
    assert p.stdout.count("ENGINE fp16") == 4

    bad = subprocess.run(cmd[:-4] + ["--server-backend-args", "batch_size=2"], capture_output=True, text=True,
                         timeout=120, cwd=root, env=dict(os.environ, PYTHONPATH=root))
    assert bad.returncode == 2 and "unknown option 'batch_size'" in bad.stderr
