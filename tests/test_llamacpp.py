"""The llama.cpp backend on the real embedded Gemma 3 270M GGUF (short prompts, few new tokens).

One thread per model: on a shared 2-core machine llama.cpp's spinning thread pool slows down
many times over when its threads are descheduled.
"""
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from backends import GenerationParams, make_backend  # noqa: E402
from common.errors import HarnessError  # noqa: E402
from inputs.models import default_model_path  # noqa: E402

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.",
             "List three prime numbers.", "Explain gravity to a child."]


def chat(text: str) -> str:
    return f"<start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n"


@pytest.fixture(scope="module")
def prompts(raw):
    return [raw.tokenize(chat(q).encode(), add_bos=True, special=True) for q in QUESTIONS]


@pytest.fixture(scope="module")
def make():
    """Build and load backends; all are closed at the end of the module."""
    made = []

    def _make(max_new_tokens=12, min_new_tokens=1, ignore_eos=False, **options):
        be = make_backend("llamacpp", model_path=None,
                          params=GenerationParams(max_new_tokens, min_new_tokens, ignore_eos),
                          options={"n_ctx": "256", "n_threads": "1", **{k: str(v) for k, v in options.items()}})
        be.load()
        made.append(be)
        return be

    yield _make
    for be in made:
        be.close()


@pytest.fixture(scope="module")
def newline(raw):
    return raw.tokenize(b"\n", add_bos=False, special=False)[0]


@pytest.fixture(scope="module")
def backend(make, newline):
    # Greedy Gemma 3 270M Q4 never picks its own EOG ids on short prompts, so a newline is made an
    # extra end id (option eos_ids): the stop/min/ignore paths then get exercised on real outputs.
    return make(eos_ids=newline)


def streamed(be, prompt):
    return [t for chunk in be.stream(prompt) for t in chunk]


def test_generate_equals_stream_and_is_deterministic(backend, prompts):
    first = backend.generate(prompts)
    assert all(1 <= len(out) <= 12 for out in first)
    assert backend.generate(prompts) == first
    assert [streamed(backend, p) for p in prompts] == first


def test_eos_set_and_at_most_one_trailing_eos(backend, prompts, raw, newline):
    # Gemma 3 ends a turn with <end_of_turn>; both it and <eos> are end-of-generation ids.
    for text in (b"<eos>", b"<end_of_turn>"):
        ids = raw.tokenize(text, add_bos=False, special=True)
        assert len(ids) == 1 and ids[0] in backend.eos_token_ids
    vocab = llama_cpp.llama_model_get_vocab(backend._model)
    assert all(llama_cpp.llama_vocab_is_eog(vocab, t) for t in backend.eos_token_ids - {newline})
    outputs = backend.generate(prompts)
    assert any(out[-1] == newline for out in outputs), "precondition: some output stops at an end id"
    for out in outputs:
        eos_at = [i for i, t in enumerate(out) if t in backend.eos_token_ids]
        assert eos_at in ([], [len(out) - 1])


def test_min_and_max_new_tokens(make, backend, prompts, newline):
    free = backend.generate(prompts)
    assert all(len(out) <= 12 for out in free)
    n = min(len(out) for out in free if out[-1] == newline)
    forced = make(min_new_tokens=n + 2, eos_ids=newline).generate(prompts)
    for out in forced:
        assert n + 2 <= len(out) <= 12
        assert newline not in out[: n + 1]


def test_ignore_eos_forces_the_length(make, prompts, newline):
    # Every prompt stops at a newline without ignore_eos (see the tests above); here all run to the cap.
    be = make(max_new_tokens=10, ignore_eos=True, eos_ids=newline)
    for out in be.generate(prompts) + [streamed(be, prompts[0])]:
        assert len(out) == 10
        assert not set(out) & be.eos_token_ids


def test_concurrent_streams_match_sequential(backend, prompts):
    expected = [streamed(backend, p) for p in prompts[:3]]
    got: dict[int, list[int]] = {}

    def run(i):
        got[i] = streamed(backend, prompts[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [got.get(i) for i in range(3)] == expected


def test_parallel_sequences_decode_their_own_greedy_tokens(make, raw, prompts, newline):
    # Sequences decoded together must not see each other's KV cache. Exact equality with one-at-a-time
    # decoding is not expected: llama.cpp's kernels round differently for other batch shapes, and this
    # model has near-ties (e.g. two ids 0.36 apart at one step of prompt 0). So check that every id
    # is within a small margin of the best log-probability under a separate full-sequence pass.
    batched = make(n_parallel=3, n_batch=64, eos_ids=newline)
    outputs = batched.generate(prompts)
    assert batched.generate(prompts) == outputs, "same prompts, same batch shapes: same ids"
    got: dict[int, list[int]] = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, streamed(batched, prompts[i])))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for prompt, out in list(zip(prompts, outputs)) + [(prompts[i], got[i]) for i in range(3)]:
        gaps = greedy_gaps(raw, prompt, out)
        assert max(gaps) < 1.0, (out, gaps)


def greedy_gaps(raw, prompt, out):
    """For each generated id: the best logit at that step minus the id's own (0 = the argmax),
    from llama-cpp-python's own full-sequence pass."""
    raw.reset()
    raw.eval(prompt + out)
    rows = np.asarray(raw.scores[len(prompt) - 1: len(prompt) - 1 + len(out)])
    return [float(row.max() - row[t]) for row, t in zip(rows, out)]


def test_abandoned_stream_frees_its_sequence(backend, prompts):
    gen = backend.stream(prompts[0])
    first = next(gen)
    gen.close()
    assert backend.generate([prompts[0]])[0][: len(first)] == first


def test_score_matches_direct_llama_cpp_logits(backend, raw, prompts):
    ids = prompts[1] + backend.generate([prompts[1]])[0]
    ours = backend.score(ids)
    raw.reset()
    raw.eval(ids)
    logits = np.asarray(raw.scores[: len(ids) - 1], dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    logprobs = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    expected = [0.0] + [logprobs[i, ids[i + 1]] for i in range(len(ids) - 1)]
    assert len(ours) == len(ids)
    np.testing.assert_allclose(ours, expected, atol=2e-3)
    # Greedy outputs are the argmax, so their log-probabilities are the row maxima.
    n_prompt = len(prompts[1])
    assert np.allclose(ours[n_prompt:], logprobs[n_prompt - 1:].max(axis=1), atol=2e-3)


def test_too_long_or_bad_prompts_fail_alone(backend, prompts):
    too_long = prompts[0] * 40
    out = backend.generate([prompts[0], too_long, [10 ** 9]])
    assert isinstance(out[0], list) and out[0]
    assert isinstance(out[1], HarnessError) and "n_ctx" in str(out[1])
    assert isinstance(out[2], HarnessError) and "vocabulary" in str(out[2])
    with pytest.raises(HarnessError, match="n_ctx"):
        next(backend.stream(too_long))


def test_corrupt_or_truncated_gguf_is_a_harness_error(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.gguf"
    with open(default_model_path(), "rb") as f:
        truncated.write_bytes(f.read(1 << 20))
    for path in (junk, truncated, tmp_path / "missing.gguf"):
        be = make_backend("llamacpp", model_path=str(path))
        with pytest.raises(HarnessError):
            be.load()
        be.close()


def test_bad_options_are_harness_errors():
    with pytest.raises(HarnessError, match="unknown option 'n_gpus'"):
        make_backend("llamacpp", options={"n_gpus": "1"})
    with pytest.raises(HarnessError, match="n_ctx"):
        make_backend("llamacpp", params=GenerationParams(max_new_tokens=4096), options={"n_ctx": "2048"})
    with pytest.raises(HarnessError, match="expects int"):
        make_backend("llamacpp", options={"n_parallel": "two"})


def test_info_describes_the_model(backend):
    info = backend.info()
    assert info["model_file"].endswith(".gguf") and info["quantization"] == "Q4_K_M"
    assert info["n_ctx"] == 256 and info["n_threads"] >= 1 and info["llama_cpp_python"] == llama_cpp.__version__


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_main_accuracy_run_end_to_end(tmp_path, scenario, backend, prompts, newline):
    """main.py through the real LoadGen: every sample logged with the ids the backend gives in-process
    (n_parallel=1, so the ids do not depend on which requests shared a decode step)."""
    from helpers import accuracy_entries, assert_test06, decode_ids, run_main, tiny_conf, tiny_dataset

    data = tiny_dataset(tmp_path / "d.pkl", prompts=prompts)
    conf = tiny_conf(tmp_path / "user.conf", n=len(prompts), qps=20.0)
    p = run_main("--scenario", scenario, "--accuracy", "--backend", "llamacpp", "--dataset-path", str(data),
                 "--user-conf", str(conf), "--output-log-dir", str(tmp_path / "out"), "--max-new-tokens", "12",
                 "--num-workers", "2", "--backend-arg", "n_ctx=256", "--backend-arg", "n_threads=1",
                 "--backend-arg", f"eos_ids={newline}", timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    entries = sorted(accuracy_entries(tmp_path / "out"), key=lambda e: e["qsl_idx"])
    assert [e["qsl_idx"] for e in entries] == list(range(len(prompts)))
    assert [decode_ids(e) for e in entries] == backend.generate(prompts)
    assert_test06(tmp_path / "out", scenario)


def test_main_exits_with_one_line_error_on_a_corrupt_gguf(tmp_path, prompts):
    from helpers import run_main, tiny_dataset

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + np.random.default_rng(1).bytes(4092))   # right magic, garbage after it
    p = run_main("--backend", "llamacpp", "--model-path", str(junk), "--accuracy",
                 "--dataset-path", str(tiny_dataset(tmp_path / "d.pkl", prompts=prompts)),
                 "--output-log-dir", str(tmp_path / "out"), timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("error: llama.cpp cannot load"), p.stderr[-1000:]


def test_gguf_vocabulary_load_prints_nothing():
    """Loading the GGUF vocabulary (every run and evaluation does) leaves stdout and stderr clean:
    llama.cpp's own n_ctx warning is written straight to fd 2 unless silenced."""
    code = ("from inputs.models import default_model_path; from inputs.tokenizer import load_tokenizer; "
            "print(len(load_tokenizer(default_model_path())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().isdigit() and int(out.stdout) > 1000
    assert out.stderr == "", out.stderr


def test_results_record_where_llamacpp_runs_not_the_device_asked_for(caplog):
    """llama.cpp places layers by n_gpu_layers: `--device cuda` on a CPU build (or with
    n_gpu_layers=0) runs on the CPU, says so, and info() records device cpu."""
    be = make_backend("llamacpp", model_path=None, device="cuda", params=GenerationParams(4),
                      options={"n_ctx": "256", "n_threads": "1"})
    with caplog.at_level("WARNING", logger="backends.llamacpp"):
        be.load()
    try:
        assert be.info()["device"] == "cpu"
        assert any("--device cuda: llama.cpp runs on the CPU here (n_gpu_layers=0" in r.getMessage()
                   for r in caplog.records)
    finally:
        be.close()
