"""The hf backend on a tiny random Llama (2 layers, float32, built in-process) and the embedded Gemma GGUF.

CUDA cannot run here: the CUDA-graph path of the slots engine is exercised on the GPU machine by
benchmarks/gpu_throughput.py; here the same engine runs eagerly on the CPU.
"""
import threading
import time

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from backends.base import GenerationParams  # noqa: E402
from backends.hf import HFBackend  # noqa: E402
from common.errors import HarnessError  # noqa: E402

EOS = (2, 3)


def _tiny_config(**overrides):
    kw = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              bos_token_id=1, eos_token_id=list(EOS), pad_token_id=0)
    kw.update(overrides)
    return transformers.LlamaConfig(**kw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(_tiny_config()).eval()
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    return str(path), model


@pytest.fixture(scope="module")
def prompts():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(4, 512, (n,), generator=g).tolist() for n in (5, 17, 9, 30, 3, 12)]


def _backend(path, max_new=12, min_new=1, ignore_eos=False, **options):
    b = HFBackend(model_path=path, params=GenerationParams(max_new_tokens=max_new, min_new_tokens=min_new,
                                                           ignore_eos=ignore_eos),
                  options={k: str(v) for k, v in options.items()})
    b.load()
    return b


def _reference(model, prompt, max_new=12, min_new=1, eos=EOS):
    """Plain one-prompt greedy model.generate, cut after the first EOS."""
    x = torch.tensor([prompt])
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, min_new_tokens=min_new,
                         do_sample=False, eos_token_id=list(eos), pad_token_id=0)[0, len(prompt):].tolist()
    for i, t in enumerate(out):
        if t in eos:
            return out[: i + 1]
    return out


@pytest.mark.parametrize("engine", ["slots", "generate"])
def test_matches_plain_generate_and_batch_size_invariant(tiny, prompts, engine):
    path, model = tiny
    refs = [_reference(model, p) for p in prompts]
    for bs in ((1, 4, 6) if engine == "slots" else (1, 6)):
        # kv_bucket=4 makes the slots engine change its attention window many times.
        b = _backend(path, engine=engine, batch_size=bs, kv_bucket=4)
        assert b.engine_name == engine
        assert b.generate(prompts) == refs, f"engine={engine} batch_size={bs}"
        b.close()


def test_compiled_elementwise_path_matches_plain_generate(tiny, prompts):
    # compile=eager runs the fused RMSNorm/RoPE/SiLU*up functions through torch.compile without
    # code generation, so it checks the rerouting itself (inductor is the GPU default).
    path, model = tiny
    refs = [_reference(model, p) for p in prompts]
    b = _backend(path, engine="slots", batch_size=4, kv_bucket=4, compile="eager")
    assert b.generate(prompts) == refs
    layer = b.model.model.layers[0]
    assert "forward" in vars(layer.input_layernorm) and "forward" in vars(layer.mlp)
    b.close()
    assert "forward" not in vars(layer.input_layernorm) and "forward" not in vars(layer.mlp)


def test_engine_auto_picks_slots_and_grows_its_cache(tiny, prompts):
    path, model = tiny
    b = _backend(path)
    assert b.engine_name == "slots" and b.eos_token_ids == frozenset(EOS)
    assert b.info()["engine"] == "slots"
    long_prompt = (prompts[3] * 20)[:520]
    assert b.generate([prompts[4]]) == [_reference(model, prompts[4])]
    first_len = b.engine.cache_len
    assert b.generate([long_prompt]) == [_reference(model, long_prompt)]  # needs a longer cache
    assert b.engine.cache_len > first_len
    b.close()


@pytest.mark.parametrize("engine", ["slots", "generate"])
def test_stream_equals_generate_token_by_token(tiny, prompts, engine):
    b = _backend(tiny[0], engine=engine, batch_size=4)
    expected = b.generate(prompts[:3])
    for p, exp in zip(prompts[:3], expected):
        chunks = list(b.stream(p))
        assert [t for c in chunks for t in c] == exp
        assert len(chunks) == len(exp)  # one chunk per token: the first is delivered before the rest exist
    b.close()


def test_stream_interval_groups_tokens_after_the_first(tiny, prompts):
    b = _backend(tiny[0], stream_interval=4, ignore_eos=True, max_new=10)
    chunks = list(b.stream(prompts[0]))
    assert [len(c) for c in chunks] == [1, 4, 4, 1]
    assert [t for c in chunks for t in c] == b.generate([prompts[0]])[0]
    b.close()


@pytest.mark.parametrize("engine", ["slots", "generate"])
def test_concurrent_streams_from_threads(tiny, prompts, engine):
    b = _backend(tiny[0], engine=engine, batch_size=4)
    expected = b.generate(prompts)
    got: dict[int, list[int]] = {}
    errors = []

    def worker(i):
        try:
            got[i] = [t for c in b.stream(prompts[i]) for t in c]
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert [got[i] for i in range(len(prompts))] == expected
    b.close()


@pytest.fixture(scope="module")
def eos_model(tiny, prompts, tmp_path_factory):
    """The tiny model saved again with an EOS that greedy decoding of prompts[0] hits at step 4."""
    _, model = tiny
    free_run = _reference(model, prompts[0], max_new=12, eos=())
    eos = free_run[3]
    path = tmp_path_factory.mktemp("tiny-llama-eos")
    model.config.eos_token_id = eos
    model.generation_config.eos_token_id = eos
    model.save_pretrained(path)
    model.config.eos_token_id = list(EOS)
    model.generation_config.eos_token_id = list(EOS)
    return str(path), eos, free_run


@pytest.mark.parametrize("engine", ["slots", "generate"])
def test_eos_min_max_ignore_eos(eos_model, tiny, prompts, engine):
    path, eos, free_run = eos_model
    _, model = tiny
    first = free_run.index(eos)
    b = _backend(path, engine=engine)
    out = b.generate([prompts[0]])[0]
    assert out == free_run[: first + 1] and out[-1] == eos  # stops at EOS, kept once
    b.close()

    b = _backend(path, engine=engine, ignore_eos=True, max_new=12)
    assert b.generate([prompts[0]])[0] == free_run  # forced length, EOS inside kept
    b.close()

    b = _backend(path, engine=engine, min_new=8)
    out = b.generate([prompts[0]])[0]
    assert len(out) >= 8 and eos not in out[:7]
    assert out == _reference(model, prompts[0], min_new=8, eos=(eos,))
    b.close()

    b = _backend(path, engine=engine, max_new=2)
    assert b.generate(prompts[:3]) == [_reference(model, p, max_new=2, eos=(eos,)) for p in prompts[:3]]
    b.close()


def test_grouped_query_decode_attention_equals_sdpa():
    """The engine's decode attention folds query groups instead of repeating the KV cache."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from backends.hf_engine.attention import slots_attention

    class Module:
        num_key_value_groups = 4
        is_causal = True

    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 8, 1, 16, generator=g)
    k, v = torch.randn(3, 2, 10, 16, generator=g), torch.randn(3, 2, 10, 16, generator=g)
    mask = (torch.arange(10)[None, :] <= torch.tensor([[3], [9], [0]]))[:, None, None, :]
    got, _ = slots_attention(Module(), q, k, v, mask, scaling=0.25)
    want, _ = sdpa_attention_forward(Module(), q, k, v, mask, scaling=0.25)
    assert got.shape == want.shape == (3, 1, 8, 16)
    torch.testing.assert_close(got, want)


def test_prefill_uses_causal_sdpa_without_mask_on_engine_thread_only(tiny, prompts, monkeypatch):
    """Slots-engine prefill runs SDPA with is_causal and no mask (the flash/cuDNN kernels need
    that); generate() on the caller's thread keeps its padding masks. Outputs stay equal to plain
    generate (test_matches_plain_generate_and_batch_size_invariant)."""
    from transformers.integrations import sdpa_attention

    calls = []
    real = sdpa_attention.sdpa_attention_forward

    def spy(module, query, key, value, attention_mask, **kw):
        calls.append((threading.current_thread().name, query.shape[2], attention_mask is None, kw.get("is_causal")))
        return real(module, query, key, value, attention_mask, **kw)

    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", spy)
    path, model = tiny
    b = _backend(path, engine="slots", batch_size=4)
    try:
        b.generate(prompts[:4])
    finally:
        b.close()
    prefill = [c for c in calls if c[1] > 1]
    assert prefill and all(c == ("hf-slot-engine", c[1], True, True) for c in prefill)
    # Any other thread (generate()/score() of the backend) keeps its mask, e.g. left padding.
    from backends.hf_engine.attention import slots_attention

    class Module:
        num_key_value_groups = 1
        is_causal = True

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool).tril()
    mask[0, :, :, :2] = False  # row 0: two left pads
    mask[0, :, :2, :2] = torch.eye(2, dtype=torch.bool)  # (pads attend to themselves: no NaN)
    got, _ = slots_attention(Module(), q, k, v, mask, scaling=0.5)
    want, _ = real(Module(), q, k, v, mask, scaling=0.5)
    torch.testing.assert_close(got, want)
    assert calls[-1][2:] == (False, None)


def test_score_matches_direct_forward(tiny, prompts):
    path, model = tiny
    b = _backend(path)
    ids = prompts[3]
    got = b.score(ids)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    want = [0.0] + [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
    assert got == pytest.approx(want, abs=1e-5)
    b.close()


def test_prompt_longer_than_cache_is_an_error(tiny):
    b = _backend(tiny[0], max_seq_len=16)
    with pytest.raises(HarnessError, match="max_seq_len"):
        b.generate([[5] * 10])
    b.close()


@pytest.mark.parametrize("kwargs, match", [
    ({"dtype": "float8"}, "unknown dtype 'float8'"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"options": {"engine": "vllm"}}, "option engine"),
    ({"options": {"nope": "1"}}, "unknown option 'nope'"),
    ({"options": {"compile": "max"}}, "option compile"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(HarnessError, match=match):
        HFBackend(model_path="unused", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu(tiny):
    b = HFBackend(model_path=tiny[0], device="cuda")
    with pytest.raises(HarnessError, match="no CUDA GPU"):
        b.load()


def test_missing_and_corrupt_checkpoint(tmp_path):
    with pytest.raises(HarnessError, match="not found"):
        HFBackend(model_path=str(tmp_path / "nothing")).load()
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(HarnessError, match="cannot load a model"):
        HFBackend(model_path=str(tmp_path)).load()
    bad = tmp_path / "m.gguf"
    bad.write_bytes(b"GGUF garbage")
    with pytest.raises(HarnessError, match="cannot load a model"):
        HFBackend(model_path=str(bad)).load()


def test_prepare_model_hook_runs_before_engine(tiny):
    seen = {}

    class Marked(HFBackend):
        defaults = {**HFBackend.defaults, "mark": "x"}

        def prepare_model(self, model):
            seen["dtype"] = next(model.parameters()).dtype
            seen["engine"] = self.engine
            return model

    b = Marked(model_path=tiny[0], options={"mark": "y"})
    b.load()
    assert seen == {"dtype": torch.float32, "engine": None} and b.options["mark"] == "y"
    b.close()


@pytest.mark.slow
def test_embedded_gemma_gguf_loads_and_caches():
    """The default model: GGUF dequantized once into the cache, then loaded from there."""
    from backends.hf import GGUF_CACHE_VERSION
    from inputs.models import cache_dir, default_model_path, file_fingerprint
    from inputs.tokenizer import load_tokenizer

    folder = cache_dir("hf-from-gguf") / f"{file_fingerprint(default_model_path())}-{GGUF_CACHE_VERSION}"
    t0 = time.perf_counter()
    b = HFBackend(params=GenerationParams(max_new_tokens=8))
    b.load()
    first = time.perf_counter() - t0
    assert (folder / "config.json").is_file() and any(f.suffix == ".safetensors" for f in folder.iterdir())
    assert b.engine_name == "generate"  # Gemma 3 has sliding-window layers: not a slots-engine model
    tok = load_tokenizer(None)
    markers = [tok.encode(t, add_special_tokens=False) for t in ("<eos>", "<end_of_turn>", "</s>")]
    # The same end-of-generation set as llama.cpp (and so as the llamacpp backend).
    assert b.eos_token_ids == {m[0] for m in markers} == tok.eog_token_ids
    ids = tok("<start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\n")["input_ids"]
    out = b.generate([ids])[0]
    assert 1 <= len(out) <= 8
    b.close()
    t0 = time.perf_counter()
    b = HFBackend(params=GenerationParams(max_new_tokens=8))
    b.load()
    second = time.perf_counter() - t0
    assert second < max(30.0, first / 2), f"cached load took {second:.1f}s (first {first:.1f}s)"
    assert b.generate([ids])[0] == out
    b.close()
