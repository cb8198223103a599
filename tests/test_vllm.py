"""--backend vllm on the real vLLM CPU build with the embedded Gemma 3 270M (its GGUF dequantized
into a Hugging Face folder by the hf backend's cached conversion).

vLLM is not in the project's venv (it pins its own numpy and transformers): these tests are marked
`vllm` and skipped where vLLM cannot be imported. Run them in the venv of README's "vLLM" section:
    .venv-vllm/bin/python -m pytest -m vllm tests/test_vllm.py
Each vLLM start takes about a minute on 2 cores and some GB of memory, so one engine runs at a time:
the in-process tests share one (class scope), closed before main.py starts its own, and the
server tests share one vLLM API server (module scope), started after those and stopped at the end.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
import time

import pytest

from backends import get_backend_class, make_backend
from backends.base import GenerationParams
from common.errors import HarnessError

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def vllm_test(fn):
    """Marked `vllm` (and slow); skipped where vLLM cannot be imported."""
    for mark in (pytest.mark.vllm, pytest.mark.slow,
                 pytest.mark.skipif(not HAVE_VLLM, reason="vLLM not installed (README: vLLM)")):
        fn = mark(fn)
    return fn


# vLLM's CPU KV cache, in GiB: small, the machine is shared.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
OPTIONS = {"max_model_len": "2048", "enforce_eager": "true"}   # eager: starts in half the time
MAX_NEW = 16
N = 6


def test_missing_vllm_is_one_line_naming_the_extra():
    if HAVE_VLLM:
        pytest.skip("vLLM is installed here")
    with pytest.raises(HarnessError, match=r"^backend 'vllm' needs the Python package 'vllm': "
                                           r"pip install -e '\.\[vllm\]'$"):
        get_backend_class("vllm")


@pytest.fixture(scope="module")
def prompts():
    """The N shortest prompts of the demo set (tokenized for the embedded model)."""
    from dataset import Dataset
    from inputs.demo import default_dataset_path

    ids = Dataset(default_dataset_path(None)).input_ids
    return sorted(ids, key=len)[:N]


def _vllm(max_new=MAX_NEW, min_new=1, ignore_eos=False, **options):
    be = make_backend("vllm", params=GenerationParams(max_new, min_new, ignore_eos), options={**OPTIONS, **options})
    be.load()
    return be


class TestInProcess:
    @pytest.fixture(scope="class")
    def vllm_backend(self):
        be = _vllm()
        yield be
        be.close()

    @vllm_test
    def test_greedy_ids_equal_hf_float32(self, vllm_backend, prompts):
        assert vllm_backend.eos_token_ids == {1, 106, 212}    # <eos>, <end_of_turn>, </s>: llama.cpp's set
        got = vllm_backend.generate(prompts)
        hf = make_backend("hf", dtype="float32", params=GenerationParams(MAX_NEW))
        hf.load()
        try:
            want = hf.generate(prompts)
        finally:
            hf.close()
        assert got == want
        assert all(len(g) == MAX_NEW or g[-1] in vllm_backend.eos_token_ids for g in got)

    @vllm_test
    def test_concurrent_streams_yield_each_token_as_it_is_made(self, vllm_backend, prompts):
        want = vllm_backend.generate(prompts)
        chunks: dict[int, list[tuple[float, list[int]]]] = {}
        t0 = time.perf_counter()

        def run(i):
            chunks[i] = [(time.perf_counter() - t0, c) for c in vllm_backend.stream(prompts[i])]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert [[t for _, c in chunks[i] for t in c] for i in range(len(prompts))] == want
        for i in range(len(prompts)):
            times = [t for t, _ in chunks[i]]
            # One engine step per chunk: the first id arrives well before the last.
            assert len(times) >= len(want[i]) // 2 and times[0] < times[-1]

    @vllm_test
    def test_bad_prompts_fail_alone_and_abandoned_streams_are_freed(self, vllm_backend, prompts):
        too_long = [2] + [10] * 2040                        # 2041 + 16 > max_model_len 2048
        outs = vllm_backend.generate([prompts[0], [], too_long, [2, 10**7]])
        assert outs[0] == vllm_backend.generate([prompts[0]])[0]
        assert isinstance(outs[1], HarnessError) and "empty prompt" in str(outs[1])
        assert isinstance(outs[2], HarnessError) and "max_model_len=2048" in str(outs[2])
        assert isinstance(outs[3], HarnessError) and "vocabulary" in str(outs[3])
        with pytest.raises(HarnessError, match="empty prompt"):
            next(vllm_backend.stream([]))
        for _ in range(3):
            stream = vllm_backend.stream(prompts[1])
            first = next(stream)
            stream.close()                                 # abandoned after its first id
            assert len(first) >= 1
        engine = vllm_backend.llm.llm_engine
        deadline = time.monotonic() + 30
        while engine.get_num_unfinished_requests() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert engine.get_num_unfinished_requests() == 0
        assert vllm_backend.generate(prompts[:2]) == vllm_backend.generate(prompts[:2])


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
@vllm_test
def test_main_accuracy_run_passes_test06(tmp_path, prompts, scenario):
    from tests.helpers import accuracy_entries, assert_test06, decode_ids, results, run_main, tiny_conf, tiny_dataset

    data = tiny_dataset(tmp_path / "data.pkl", prompts=prompts)
    conf = tiny_conf(tmp_path / "user.conf", n=len(prompts), qps=2.0)
    out = tmp_path / "logs"
    p = run_main("--backend", "vllm", "--scenario", scenario, "--accuracy", "--dataset-path", str(data),
                 "--user-conf", str(conf), "--output-log-dir", str(out), "--max-new-tokens", str(MAX_NEW),
                 "--total-sample-count", str(len(prompts)),
                 *[a for k, v in OPTIONS.items() for a in ("--backend-arg", f"{k}={v}")], timeout=420)
    assert p.returncode == 0, p.stderr[-3000:]
    assert_test06(out, scenario)
    entries = accuracy_entries(out)
    assert len(entries) == len(prompts) and all(1 <= len(decode_ids(e)) <= MAX_NEW for e in entries)
    res = results(out)
    run = res["run"]
    assert run["backend"]["backend"] == "vllm" and run["eos_token_ids"] == [1, 106, 212]


# -- the openai backend against vLLM's own API server ------------------------------------------
@pytest.fixture(scope="module")
def inprocess_ids(prompts):
    """--backend vllm's greedy ids for the prompts (float32, eager), from an engine closed before
    the server below starts: one vLLM at a time."""
    be = _vllm()
    try:
        return be.generate(prompts)
    finally:
        be.close()


@pytest.fixture(scope="module")
def vllm_server(inprocess_ids, tmp_path_factory):
    """vLLM's API server (float32, eager, as the in-process engine) on a free loopback port, with
    the embedded model's converted folder and a Gemma chat tokenizer; stopped after the module.
    Started by the interpreter running these tests: the venv with vLLM (.venv-vllm)."""
    from backends.vllm import VLLMBackend
    from tests.servers import VLLMServer, gemma_chat_tokenizer

    folder = VLLMBackend(model_path=None)._model_folder()
    tok = gemma_chat_tokenizer(str(tmp_path_factory.mktemp("chat-tokenizer")))
    with VLLMServer(folder, python=sys.executable, tokenizer=tok, start_timeout_s=300) as srv:
        yield srv


def _openai(url, max_new=MAX_NEW, **options):
    be = make_backend("openai", params=GenerationParams(max_new), options={"api_server": url, **options})
    be.load()
    return be


@vllm_test
def test_openai_backend_on_vllm_server_equals_inprocess_vllm(vllm_server, prompts, inprocess_ids):
    be = _openai(vllm_server.url)
    try:
        assert be.info()["endpoints"] == [{"url": vllm_server.url, "prompt": "ids", "output": "ids"}]
        assert be.eos_token_ids == {1, 106, 212}              # from the served folder (vLLM's `root`)
        assert be.generate(prompts) == inprocess_ids
        streams = [list(be.stream(p)) for p in prompts[:3]]
        assert [sum(s, []) for s in streams] == inprocess_ids[:3]
        assert all(len(s) >= len(ids) // 2 for s, ids in zip(streams, inprocess_ids))   # streamed, not one chunk
        assert not any(e["shortened"] or e["error"] for e in be.request_log())
    finally:
        be.close()


@vllm_test
def test_chat_endpoint_on_vllm_server_reports_the_models_own_ids(vllm_server, prompts):
    """Chat: the prompt goes out as text in one user message; the server renders the chat template
    and returns its token ids, which must be the greedy continuation of that rendered prompt."""
    from inputs.tokenizer import load_tokenizer

    tok = load_tokenizer(None)
    chat = _openai(vllm_server.url, api_endpoint="chat")
    plain = _openai(vllm_server.url)
    try:
        assert chat.info()["endpoints"] == [{"url": vllm_server.url, "prompt": "text", "output": "ids"}]
        got = chat.generate(prompts[:3])
        # tests/servers.py's GEMMA_CHAT_TEMPLATE, rendered here with llama.cpp's tokenizer
        rendered = [tok.encode(f"<start_of_turn>user\n{tok.decode(p[1:])}<end_of_turn>\n<start_of_turn>model\n")
                    for p in prompts[:3]]
        assert got == plain.generate(rendered)
        assert [sum(chat.stream(p), []) for p in prompts[:2]] == got[:2]
        log = chat.request_log()
        assert [e["server_prompt_tokens"] for e in log[:3]] == [len(r) for r in rendered]
        assert all(e["n_output"] == e["server_tokens"] for e in log if e["kind"] == "generate")
    finally:
        chat.close()
        plain.close()


@pytest.mark.parametrize("scenario,endpoint", [("Offline", "completions"), ("Server", "completions"),
                                               ("Server", "chat")])
@vllm_test
def test_main_openai_on_vllm_server_passes_test06(tmp_path, vllm_server, prompts, inprocess_ids, scenario, endpoint):
    from tests.helpers import accuracy_entries, assert_test06, decode_ids, results, run_main, tiny_conf, tiny_dataset

    data = tiny_dataset(tmp_path / "data.pkl", prompts=prompts)
    conf = tiny_conf(tmp_path / "user.conf", n=len(prompts), qps=2.0)
    out = tmp_path / "logs"
    p = run_main("--backend", "openai", "--api-server", vllm_server.url, "--api-endpoint", endpoint,
                 "--scenario", scenario, "--accuracy", "--dataset-path", str(data), "--user-conf", str(conf),
                 "--output-log-dir", str(out), "--max-new-tokens", str(MAX_NEW),
                 "--total-sample-count", str(len(prompts)), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert_test06(out, scenario)
    got = [decode_ids(e) for e in sorted(accuracy_entries(out), key=lambda e: e["qsl_idx"])]
    if endpoint == "completions":
        assert got == inprocess_ids
    else:
        assert all(1 <= len(g) <= MAX_NEW for g in got)
    run = results(out)["run"]
    assert run["eos_token_ids"] == [1, 106, 212] and run["backend"]["reply_counts"]["shortened"] == 0
