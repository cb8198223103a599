"""Speculative decoding (backends/speculative.py): prompt-lookup drafts, the acceptance rule, option
errors, and the llama.cpp backend with speculative=ngram and with a draft model (the embedded GGUF
drafting for itself) on the embedded Gemma 3 270M, in-process and through the real LoadGen
(Offline and Server, TEST06).

llama.cpp's CPU kernels round a multi-token decode differently from a one-token decode (logits
differ by up to ~1.4 on this model, measured in docs/backends.md), so exact equality with the plain
run holds only where the plain run's choice is clear; the tests check exactly that, and that every
kept id is the target's near-argmax under a separate full-sequence pass (as for n_parallel > 1).
"""
import os
import shutil
import threading

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


def test_run_summary_shows_the_speculative_figures():
    from harness.summary import run_summary

    spec = {**SpecStats("draft", 4, steps=10, drafted=40, accepted=31, draft_s=1.5, verify_s=2.25).to_dict(),
            "draft_model": "draft.gguf"}
    text = run_summary({"run": {"backend": {"backend": "llamacpp", "speculative": spec}}})
    assert ("Speculative (draft.gguf, K=4): draft acceptance 77.50%, 3.10 accepted/step over 10 steps "
            "(draft 1.50 s, verify 2.25 s)") in text
    assert "Speculative" not in run_summary({"run": {"backend": {"backend": "llamacpp"}}})


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
def prompts(raw):
    return [raw.tokenize(t.encode(), add_bos=True, special=True) for t in TEXTS]


SPEC_OPTIONS = {"ngram": {"speculative": "ngram", "num_draft_tokens": "4"},
                "draft": {"draft_model": default_model_path(), "num_draft_tokens": "4"}}


@pytest.fixture(scope="module")
def backends():
    """{"plain", "ngram", "draft"}: llama.cpp backends on the embedded model, 24 new tokens; the
    draft model is the target's own GGUF."""
    made = {}
    for name, extra in (("plain", {}), *SPEC_OPTIONS.items()):
        be = make_backend("llamacpp", params=GenerationParams(24, 1, False),
                          options={"n_ctx": "256", "n_threads": "1", **extra})
        be.load()
        made[name] = be
    yield made
    for be in made.values():
        be.close()


@pytest.fixture(scope="module")
def pair(backends):
    return backends["plain"], backends["ngram"]


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


def test_draft_model_drafting_for_itself_is_nearly_always_accepted(backends, raw, prompts):
    """The target's own GGUF as the draft: its one-id-at-a-time argmax is what the target's plain
    run picks, so drafts are accepted up to batch-shape noise, and outputs follow the ngram rule."""
    plain, draft = backends["plain"], backends["draft"]
    expected, got = plain.generate(prompts), draft.generate(prompts)
    for prompt, a, b in zip(prompts, expected, got):
        check_lossless(raw, prompt, a, b)
    stats = draft.info()["speculative"]
    assert stats["kind"] == "draft" and stats["draft_model"] == os.path.basename(default_model_path())
    assert stats["acceptance_rate"] >= 0.9 and stats["mean_accepted_per_step"] >= 3.5, stats
    assert stats["draft_s"] > 0 and stats["verify_s"] > 0
    chunks = [list(draft.stream(p)) for p in prompts]
    assert [[t for c in cs for t in c] for cs in chunks] == got
    assert max(len(c) for cs in chunks for c in cs) == 5    # K accepted drafts + the target's own id


def test_draft_model_with_sequences_decoded_together(raw, prompts):
    """n_parallel=3 with n_batch=16 (shorter than the prompts, so the draft feeds prompts in
    chunks): concurrent streams share the target's and the draft's decodes, slots are reused, and
    every id is the target's near-argmax."""
    be = make_backend("llamacpp", params=GenerationParams(16, 1, False),
                      options={"n_ctx": "128", "n_threads": "1", "n_parallel": "3", "n_batch": "16",
                               **SPEC_OPTIONS["draft"]})
    be.load()
    try:
        assert min(len(p) for p in prompts) > 16
        many = prompts * 2
        got: dict[int, list[int]] = {}
        threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, [t for c in be.stream(many[i]) for t in c]))
                   for i in range(len(many))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sorted(got) == list(range(len(many)))
        for prompt, out in zip(many, (got[i] for i in range(len(many)))):
            assert len(out) == 16
            rows = logits_rows(raw, prompt, out)
            assert max(float(r.max() - r[t]) for r, t in zip(rows, out)) < BATCH_NOISE
        assert be.info()["speculative"]["acceptance_rate"] >= 0.9
    finally:
        be.close()


def test_draft_model_errors_are_one_line(tmp_path, prompts):
    # Same size, one token's text changed: another vocabulary all the same.
    other = tmp_path / "other-vocab.gguf"
    shutil.copy(default_model_path(), other)
    with open(other, "r+b") as f:
        head = f.read(16 << 20)
        at = head.index(b"\x06" + b"\x00" * 7 + b"<mask>")   # token 4 in tokenizer.ggml.tokens
        f.seek(at + 8)
        f.write(b"<MASK>")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model")
    for path, message in ((other, r"has another vocabulary than the target \(token 4 is b'<MASK>' there"),
                          (tmp_path / "missing.gguf", "draft model: cannot read model file"),
                          (junk, "draft model: .* is not a GGUF file")):
        be = make_backend("llamacpp", params=GenerationParams(8, 1, False),
                          options={"n_ctx": "64", "n_threads": "1", "draft_model": str(path)})
        with pytest.raises(HarnessError, match=message):
            be.load()
        be.close()
    from helpers import run_main, tiny_dataset

    p = run_main("--backend", "llamacpp", "--accuracy", "--backend-arg", f"draft_model={other}",
                 "--dataset-path", str(tiny_dataset(tmp_path / "d.pkl", prompts=prompts)),
                 "--output-log-dir", str(tmp_path / "out"), timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("error: llamacpp: draft model "), p.stderr[-1000:]


@pytest.mark.parametrize("kind", ["ngram", "draft"])
def test_speculation_respects_max_min_and_ignore_eos(raw, prompts, kind):
    newline = raw.tokenize(b"\n", add_bos=False, special=False)[0]
    for params in (GenerationParams(7, 1, False), GenerationParams(9, 9, True), GenerationParams(10, 4, False)):
        outs = {}
        for extra in ({}, {**SPEC_OPTIONS[kind], "num_draft_tokens": "6"}):
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
@pytest.mark.parametrize("kind", ["ngram", "draft"])
def test_main_speculative_run_end_to_end(tmp_path, scenario, kind, backends, prompts):
    """main.py through the real LoadGen with speculative=ngram or a draft model: the logged ids are
    the backend's in-process ids, TEST06 passes, and results.json carries the acceptance figures."""
    from helpers import accuracy_entries, assert_test06, decode_ids, results, run_main, tiny_conf, tiny_dataset

    data = tiny_dataset(tmp_path / "d.pkl", prompts=prompts)
    conf = tiny_conf(tmp_path / "user.conf", n=len(prompts), qps=20.0)
    p = run_main("--scenario", scenario, "--accuracy", "--backend", "llamacpp", "--dataset-path", str(data),
                 "--user-conf", str(conf), "--output-log-dir", str(tmp_path / "out"), "--max-new-tokens", "24",
                 "--num-workers", "2", "--backend-arg", "n_ctx=256", "--backend-arg", "n_threads=1",
                 *[a for k, v in SPEC_OPTIONS[kind].items() for a in ("--backend-arg", f"{k}={v}")], timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    entries = sorted(accuracy_entries(tmp_path / "out"), key=lambda e: e["qsl_idx"])
    assert [decode_ids(e) for e in entries] == backends[kind].generate(prompts)
    assert_test06(tmp_path / "out", scenario)
    spec = results(tmp_path / "out")["run"]["backend"]["speculative"]
    assert spec["kind"] == kind and spec["drafted"] > 0 and spec["acceptance_rate"] is not None
    assert "draft acceptance" in p.stdout    # the run summary shows them
