"""Speculative decoding (backends/speculative.py): prompt-lookup drafts, the acceptance rule, option
errors, and the llama.cpp backend with speculative=ngram on the embedded Gemma 3 270M, in-process
and through the real LoadGen (Offline and Server, TEST06).

llama.cpp's CPU kernels round a multi-token decode differently from a one-token decode (logits
differ by up to ~1.4 on this model, measured in docs/backends.md), so exact equality with the plain
run holds only where the plain run's choice is clear; the tests check exactly that, and that every
kept id is the target's near-argmax under a separate full-sequence pass (as for n_parallel > 1).
"""
import numpy as np
import pytest

from backends import GenerationParams, make_backend
from backends.speculative import SpecStats, accept, check_options, ngram_draft
from common.errors import HarnessError

BATCH_NOISE = 1.5   # largest logit difference between batch shapes measured on the embedded model, rounded up


def test_ngram_draft_takes_what_followed_the_latest_longest_match():
    ctx = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 2, 3]
    assert ngram_draft(ctx, 2, ngram_max=3) == [7, 8]        # "2 3" last seen before "7 8"
    assert ngram_draft(ctx, 5, ngram_max=1) == [7, 8, 5, 2, 3]  # "3" latest at index 7
    assert ngram_draft([4, 5, 6], 3, ngram_max=2) == []       # no earlier occurrence
    assert ngram_draft([5, 5, 5, 5], 4, ngram_max=2) == [5]   # the match runs into the end of the context
    assert ngram_draft([7], 3, ngram_max=3) == []


def test_accept_keeps_drafts_up_to_the_first_mismatch_plus_the_targets_id():
    target = [10, 11, 12, 13, 14]
    pick = lambda i: (target[i], False)   # noqa: E731
    assert accept([10, 11, 99], pick) == ([10, 11, 12], 2)
    assert accept([10, 11, 12, 13], pick) == ([10, 11, 12, 13, 14], 4)
    assert accept([5], pick) == ([10], 0)
    assert accept([], pick) == ([10], 0)
    ends = lambda i: (target[i], i == 1)  # noqa: E731 - e.g. EOS or max_new_tokens at the second id
    assert accept([10, 11, 12], ends) == ([10, 11], 2)


def test_stats_report_acceptance_and_mean_accepted():
    s = SpecStats("ngram", 4)
    s.add(4, 3)
    s.add(2, 0)
    s.add(0, 0)
    d = s.to_dict()
    assert (d["acceptance_rate"], d["mean_accepted_per_step"], d["steps"], d["steps_without_draft"]) == (0.5, 1.5, 2, 1)


@pytest.mark.parametrize("opts, message", [
    ({"speculative": "medusa"}, "unknown speculative kind 'medusa'"),
    ({"speculative": "draft"}, "needs a draft model"),
    ({"speculative": "ngram", "draft_model": "x.gguf"}, "takes no draft model"),
    ({"speculative": "ngram", "num_draft_tokens": 0}, "num_draft_tokens must be >= 1"),
])
def test_bad_options_are_one_line_errors(opts, message):
    base = {"speculative": "", "num_draft_tokens": 4, "ngram_max": 3, "draft_model": ""}
    with pytest.raises(HarnessError, match=message):
        check_options({**base, **opts}, "llamacpp")
    pytest.importorskip("llama_cpp")
    with pytest.raises(HarnessError, match=message):
        make_backend("llamacpp", options={k: str(v) for k, v in opts.items()})


# ---- llama.cpp on the embedded model ------------------------------------------------------------

llama_cpp = pytest.importorskip("llama_cpp")
from inputs.models import default_model_path  # noqa: E402

# Prompts that make the answer copy from the prompt, so prompt lookup finds drafts.
TEXTS = ["Repeat exactly: the quick brown fox jumps over the lazy dog. the quick brown fox jumps over",
         "Count: one two three four five six seven eight nine ten one two three four five six",
         "Summarize: The harness runs LoadGen. The harness runs LoadGen on llama.cpp. The harness runs"]


@pytest.fixture(scope="module")
def raw():
    llm = llama_cpp.Llama(default_model_path(), n_ctx=512, n_threads=1, n_threads_batch=1,
                          logits_all=True, verbose=False)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def prompts(raw):
    return [raw.tokenize(t.encode(), add_bos=True, special=True) for t in TEXTS]


@pytest.fixture(scope="module")
def pair():
    """(plain, ngram) llama.cpp backends on the embedded model, 24 new tokens."""
    made = []
    for extra in ({}, {"speculative": "ngram", "num_draft_tokens": "4"}):
        be = make_backend("llamacpp", params=GenerationParams(24, 1, False),
                          options={"n_ctx": "256", "n_threads": "1", **extra})
        be.load()
        made.append(be)
    yield made
    for be in made:
        be.close()


def logits_rows(raw, prompt, out):
    raw.reset()
    raw.eval(prompt + out)
    return np.asarray(raw.scores[len(prompt) - 1: len(prompt) - 1 + len(out)])


def check_lossless(raw, prompt, plain, spec):
    """spec equals plain up to the first step where plain's top two logits are within batch noise,
    and every spec id is within that noise of the best logit of a separate full-sequence pass."""
    assert len(spec) == len(plain)
    for i, row in enumerate(logits_rows(raw, prompt, plain)):
        top2 = np.sort(row)[-2:]
        if top2[1] - top2[0] < 2 * BATCH_NOISE:
            break
        assert spec[i] == plain[i], (i, plain, spec)
    rows = logits_rows(raw, prompt, spec)
    gaps = [float(r.max() - r[t]) for r, t in zip(rows, spec)]
    assert max(gaps) < BATCH_NOISE, gaps


def test_ngram_generate_and_stream_match_plain_and_accept_drafts(pair, raw, prompts):
    plain, spec = pair
    expected = plain.generate(prompts)
    got = spec.generate(prompts)
    for prompt, a, b in zip(prompts, expected, got):
        check_lossless(raw, prompt, a, b)
    stats = spec.info()["speculative"]
    assert stats["kind"] == "ngram" and stats["drafted"] > 0 and stats["accepted"] > 0
    assert 0 < stats["acceptance_rate"] <= 1 and stats["verify_s"] > 0
    # Server: accepted drafts arrive together, so some chunk holds several ids; same ids as generate().
    chunks = [list(spec.stream(p)) for p in prompts]
    assert [[t for c in cs for t in c] for cs in chunks] == got
    assert max(len(c) for cs in chunks for c in cs) > 1
    assert "speculative" not in plain.info()


def test_ngram_respects_max_min_and_ignore_eos(raw, prompts):
    newline = raw.tokenize(b"\n", add_bos=False, special=False)[0]
    for params in (GenerationParams(7, 1, False), GenerationParams(9, 9, True), GenerationParams(10, 4, False)):
        outs = {}
        for extra in ({}, {"speculative": "ngram", "num_draft_tokens": "6"}):
            be = make_backend("llamacpp", params=params, options={"n_ctx": "256", "n_threads": "1",
                                                                  "eos_ids": str(newline), **extra})
            be.load()
            outs[bool(extra)] = be.generate(prompts)
            be.close()
        for prompt, a, b in zip(prompts, outs[False], outs[True]):
            assert params.min_new_tokens <= len(b) <= params.max_new_tokens
            eos = [i for i, t in enumerate(b) if t in be.eos_token_ids]
            assert eos == [] if params.ignore_eos else eos in ([], [len(b) - 1])
            if params.ignore_eos:
                assert len(b) == params.max_new_tokens


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_main_ngram_run_end_to_end(tmp_path, scenario, pair, prompts):
    """main.py through the real LoadGen with speculative=ngram: the logged ids are the backend's
    in-process ids, TEST06 passes, and results.json carries the acceptance figures."""
    from helpers import accuracy_entries, assert_test06, decode_ids, results, run_main, tiny_conf, tiny_dataset

    data = tiny_dataset(tmp_path / "d.pkl", prompts=prompts)
    conf = tiny_conf(tmp_path / "user.conf", n=len(prompts), qps=20.0)
    p = run_main("--scenario", scenario, "--accuracy", "--backend", "llamacpp", "--dataset-path", str(data),
                 "--user-conf", str(conf), "--output-log-dir", str(tmp_path / "out"), "--max-new-tokens", "24",
                 "--num-workers", "2", "--backend-arg", "n_ctx=256", "--backend-arg", "n_threads=1",
                 "--backend-arg", "speculative=ngram", "--backend-arg", "num_draft_tokens=4", timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    entries = sorted(accuracy_entries(tmp_path / "out"), key=lambda e: e["qsl_idx"])
    assert [decode_ids(e) for e in entries] == pair[1].generate(prompts)
    assert_test06(tmp_path / "out", scenario)
    spec = results(tmp_path / "out")["run"]["backend"]["speculative"]
    assert spec["drafted"] > 0 and spec["acceptance_rate"] is not None
