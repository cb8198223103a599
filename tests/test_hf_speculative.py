"""Speculative decoding in the hf backend (transformers' prompt lookup and assisted generation) on
tiny random Llama models: greedy outputs equal the same backend without speculation, token for
token, in generate() and stream(); acceptance figures in info(); option and vocabulary errors."""
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from backends.base import GenerationParams  # noqa: E402
from backends.hf import HFBackend  # noqa: E402
from common.errors import HarnessError  # noqa: E402

EOS = (2, 3)


def _save(tmp_path_factory, name, seed, **overrides):
    kw = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              bos_token_id=1, eos_token_id=list(EOS), pad_token_id=0)
    kw.update(overrides)
    torch.manual_seed(seed)
    path = tmp_path_factory.mktemp(name)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw)).eval().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return _save(tmp_path_factory, "target", 0)


@pytest.fixture(scope="module")
def prompts():
    g = torch.Generator().manual_seed(1)
    base = [torch.randint(4, 512, (n,), generator=g).tolist() for n in (6, 9, 4)]
    # Repeated phrases, so prompt lookup finds drafts in the prompt.
    return [b * 3 for b in base] + [torch.randint(4, 512, (11,), generator=g).tolist()]


def _backend(path, max_new=16, min_new=1, ignore_eos=False, **options):
    b = HFBackend(model_path=path, params=GenerationParams(max_new, min_new, ignore_eos),
                  options={k: str(v) for k, v in options.items()})
    b.load()
    return b


def _streamed(b, prompt):
    chunks = list(b.stream(prompt))
    return [t for c in chunks for t in c], chunks


@pytest.mark.parametrize("params", [dict(), dict(max_new=12, min_new=12, ignore_eos=True), dict(min_new=5)])
def test_ngram_equals_plain_token_for_token(target, prompts, params):
    plain = _backend(target, **params).generate(prompts)
    spec = _backend(target, speculative="ngram", num_draft_tokens=3, **params)
    assert spec.generate(prompts) == plain
    assert [_streamed(spec, p)[0] for p in prompts] == plain
    s = spec.info()["speculative"]
    assert s["kind"] == "ngram" and s["drafted"] > 0 and s["accepted"] > 0 and 0 < s["acceptance_rate"] <= 1
    assert s["verify_s"] > 0 and spec.info()["engine"] == "generate"


def test_draft_model_and_quantized_self_draft_equal_plain(target, prompts, tmp_path_factory):
    plain = _backend(target).generate(prompts)
    other = _save(tmp_path_factory, "draft", 7, num_hidden_layers=1)   # a different, smaller model
    by_other = _backend(target, draft_model=other, num_draft_tokens=4)
    assert by_other.generate(prompts) == plain
    streamed, chunks = _streamed(by_other, prompts[0])
    assert streamed == plain[0]
    # The target's own weights, fake-quantized to 8 bits: it drafts nearly what the target picks.
    by_self = _backend(target, draft_quant_config="quant_configs/w8a16.yaml", num_draft_tokens=4)
    assert by_self.generate(prompts) == plain
    s_other, s_self = by_other.info()["speculative"], by_self.info()["speculative"]
    assert s_other["kind"] == s_self["kind"] == "draft" and s_self["drafted"] > 0
    assert s_self["acceptance_rate"] > s_other["acceptance_rate"]
    # Several accepted ids reach the Server path in one chunk.
    assert max(len(c) for c in _streamed(by_self, prompts[0])[1]) > 1


def test_bad_speculative_options(target, tmp_path_factory):
    with pytest.raises(HarnessError, match="unknown speculative kind 'eagle'"):
        HFBackend(model_path=target, options={"speculative": "eagle"})
    with pytest.raises(HarnessError, match="needs a draft model"):
        HFBackend(model_path=target, options={"speculative": "draft"})
    with pytest.raises(HarnessError, match="engine=generate"):
        HFBackend(model_path=target, options={"speculative": "ngram", "engine": "slots"})
    with pytest.raises(HarnessError, match="cannot load a model from"):
        _backend(target, draft_model=str(tmp_path_factory.mktemp("empty")))
    wide = _save(tmp_path_factory, "wide-vocab", 3, vocab_size=640)
    with pytest.raises(HarnessError, match="vocabulary of 640 ids, the target 512"):
        _backend(target, draft_model=wide)
