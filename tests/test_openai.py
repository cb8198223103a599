"""The OpenAI-compatible server backend against real HTTP servers on 127.0.0.1.

- FakeServer (tests/servers.py): a stdlib server speaking vLLM's flavour of /v1/completions
  (token-id prompts, token ids in replies) with injectable faults: 500s, stalls, dropped
  connections, endless streams, keep-alives forever, shortened replies. Covers the id path,
  balancing, failover, deadlines and credentials without a model.
- LlamaServer: llama-cpp-python's `python -m llama_cpp.server` with the embedded Gemma 3 270M
  GGUF (text prompts, text replies). Greedy outputs must equal the in-process llama.cpp backend's;
  servers are killed mid-run to check failover.
"""
from __future__ import annotations

import os
import threading
import time

import pytest

from backends import make_backend
from backends.base import GenerationParams
from backends.openai_client import RequestError, normalize_url
from common.errors import HarnessError
from tests.servers import FAKE_EOS, FakeServer, LlamaServer, fake_answer, refused_port, wait_for

PROMPTS = [[5, 6, 7], [11, 12], [20], [3, 3, 3, 3], [9, 8]]


def make(urls: list[str], max_new: int = 8, min_new: int = 1, ignore_eos: bool = False, **opts):
    options = {"api_server": ",".join(urls), **{k: str(v) for k, v in opts.items()}}
    return make_backend("openai", params=GenerationParams(max_new_tokens=max_new, min_new_tokens=min_new,
                                                          ignore_eos=ignore_eos), options=options)


def loaded(urls, **kw):
    be = make(urls, **kw)
    be.load()
    return be


@pytest.fixture
def fake():
    with FakeServer() as s:
        yield s


@pytest.fixture
def fake2():
    with FakeServer() as s:
        yield s


# -- options and start-up checks ---------------------------------------------------------------
def test_bad_options_are_harness_errors():
    with pytest.raises(HarnessError, match="balance"):
        make(["http://127.0.0.1:1"], balance="random")
    with pytest.raises(HarnessError, match="prompt_mode"):
        make(["http://127.0.0.1:1"], prompt_mode="bytes")
    with pytest.raises(HarnessError, match="--api-server"):
        make([]).load()


def test_normalize_url():
    assert normalize_url("http://h:8000/v1/") == "http://h:8000"
    assert normalize_url("127.0.0.1:9") == "http://127.0.0.1:9"


def test_server_not_up_is_a_clear_error():
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        with pytest.raises(HarnessError, match=f"{url} is not usable.*ConnectError"):
            loaded([url], timeout_s=2)
        assert time.monotonic() - t0 < 30      # fails at once: no retrying for long


def test_wrong_model_name_says_what_is_served(fake):
    with pytest.raises(HarnessError, match="does not serve model 'llama-70b'.*fake-model"):
        loaded([fake.url], api_model_name="llama-70b")


def test_stalled_server_fails_load_in_bounded_time(fake):
    fake.mode = "stall"
    t0 = time.monotonic()
    with pytest.raises(HarnessError, match="test completion failed.*ReadTimeout"):
        loaded([fake.url], timeout_s=1)
    assert time.monotonic() - t0 < 30      # the 1 s read timeout, not the 600 s stall


# -- token-id path (vLLM-like server) ----------------------------------------------------------
def test_generate_and_stream_use_token_ids(fake):
    be = loaded([fake.url + "/v1"], max_new=6, min_new=2)
    try:
        assert be.info()["endpoints"] == [{"url": fake.url, "prompt": "ids", "output": "ids"}]
        assert be.generate(PROMPTS) == [fake_answer(p, 6) for p in PROMPTS]
        chunks = list(be.stream(PROMPTS[0]))
        assert chunks[0] == fake_answer(PROMPTS[0], 6)[:1]         # first token goes out alone
        assert sum(chunks, []) == fake_answer(PROMPTS[0], 6)
        body = fake.bodies[-1]
        assert (body["prompt"], body["temperature"], body["max_tokens"], body["min_tokens"], body["stream"]) \
            == (PROMPTS[0], 0.0, 6, 2, True)
        log = be.request_log()
        assert [e["kind"] for e in log] == ["generate"] * len(PROMPTS) + ["stream"]
        assert all(e["endpoint"] == fake.url and e["status"] == 200 and e["error"] is None for e in log)
        assert log[-1]["n_output"] == 6 and len(log[-1]["itl_s"]) == 5 and log[-1]["ttft_s"] > 0
    finally:
        be.close()


def test_loopback_servers_are_reached_directly_whatever_the_proxy_settings(fake, monkeypatch):
    """A proxy from the environment (nothing listens on it here) would fail every request if httpx
    sent loopback traffic through it, as it does unless NO_PROXY names the host."""
    with refused_port() as port:
        for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(var, f"http://127.0.0.1:{port}")
        for var in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(var, raising=False)
        be = loaded([fake.url], max_new=3)
        try:
            assert be.generate(PROMPTS[:2]) == [fake_answer(p, 3) for p in PROMPTS[:2]]
        finally:
            be.close()


def test_ignore_eos_forces_min_tokens_to_max(fake):
    be = loaded([fake.url], max_new=5, ignore_eos=True)
    try:
        be.generate([[1]])
        assert fake.bodies[-1]["ignore_eos"] is True and fake.bodies[-1]["min_tokens"] == 5
    finally:
        be.close()


def test_offline_concurrency_is_bounded():
    with FakeServer(token_delay_s=0.01) as slow:
        be = loaded([slow.url], concurrency=3)
        try:
            prompts = [[i] for i in range(12)]
            assert be.generate(prompts) == [fake_answer(p, 8) for p in prompts]
            assert slow.max_in_flight == 3
        finally:
            be.close()


def test_round_robin_and_least_outstanding(fake):
    with FakeServer(token_delay_s=0.05) as slow:     # 0.4 s a request: the fast one takes a few ms
        prompts = [[i] for i in range(20)]
        be = loaded([slow.url, fake.url], concurrency=4, balance="round_robin")
        try:
            n0 = (len(slow.bodies), len(fake.bodies))
            be.generate(prompts)
            assert (len(slow.bodies) - n0[0], len(fake.bodies) - n0[1]) == (10, 10)
        finally:
            be.close()
        be = loaded([slow.url, fake.url], concurrency=4, balance="least_outstanding")
        try:
            n0 = len(fake.bodies)
            assert be.generate(prompts) == [fake_answer(p, 8) for p in prompts]
            assert len(fake.bodies) - n0 >= 14     # the fast server is free more often
        finally:
            be.close()


# -- faults ------------------------------------------------------------------------------------
def test_500s_fail_each_request_with_the_status(fake):
    be = loaded([fake.url], failover=False)
    try:
        fake.mode = "error500"
        outs = be.generate(PROMPTS)
        assert all(isinstance(o, RequestError) and "HTTP 500" in str(o) for o in outs)
        with pytest.raises(RequestError, match="HTTP 500"):
            list(be.stream([1]))
        assert all(e["status"] == 500 and "HTTP 500" in e["error"] for e in be.request_log())
    finally:
        be.close()


def test_failover_moves_requests_off_a_500_server(fake, fake2):
    be = loaded([fake.url, fake2.url])
    try:
        fake.mode = "error500"
        assert be.generate(PROMPTS) == [fake_answer(p, 8) for p in PROMPTS]
        assert sum(be.stream([4]), []) == fake_answer([4], 8)
        log = be.request_log()
        assert all(e["endpoint"] == fake2.url for e in log)
        assert any(a["endpoint"] == fake.url and a["status"] == 500 for e in log for a in e["failed_attempts"])
    finally:
        be.close()
    fake.mode = "ok"
    be = loaded([fake.url, fake2.url], failover=False)   # same servers, no failover: only half succeed
    try:
        fake.mode = "error500"
        outs = be.generate([[i] for i in range(10)])
        failed = [o for o in outs if isinstance(o, Exception)]
        assert 0 < len(failed) <= 5 and all("HTTP 500" in str(o) for o in failed)
    finally:
        be.close()


def test_stall_times_out_every_request(fake):
    be = loaded([fake.url], timeout_s=1, deadline_s=1, deadline_per_token_s=0, failover=False, concurrency=8)
    try:
        fake.mode = "stall"
        t0 = time.monotonic()
        outs = be.generate(PROMPTS)
        with pytest.raises(RequestError, match="timed out"):
            list(be.stream([1]))
        assert time.monotonic() - t0 < 30       # 1 s per wave of requests, not the 600 s stall
        assert all(isinstance(o, RequestError) and "timed out" in str(o) for o in outs)
    finally:
        be.close()


def test_stream_dropped_midway_restarts_on_other_endpoint(fake, fake2):
    be = loaded([fake.url, fake2.url])
    try:
        fake.mode = "drop"          # sends one token, then closes the connection
        chunks = list(be.stream([7, 7]))
        assert sum(chunks, []) == fake_answer([7, 7], 8)   # the repeated first token is not sent twice
        entry = be.request_log()[-1]
        assert entry["endpoint"] == fake2.url and "incomplete" in entry["failed_attempts"][0]["error"]
    finally:
        be.close()


def test_abandoned_stream_is_cancelled():
    with FakeServer(token_delay_s=0.2) as slow:
        be = loaded([slow.url], max_new=1000)
        try:
            it = be.stream([1])
            assert next(it) == fake_answer([1], 1)
            it.close()
            assert wait_for(lambda: slow.in_flight == 0, timeout_s=30)   # not the 200 s the whole reply takes
            assert be.request_log()[-1]["n_output"] == 1
        finally:
            be.close()


# -- endless replies and deadlines --------------------------------------------------------------
def within(seconds: float, fn):
    """fn()'s result (or the exception it raised), failing the test if it takes longer."""
    out: list = []

    def call():
        try:
            out.append(fn())
        except Exception as e:     # noqa: BLE001 - handed to the test
            out.append(e)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s"
    return out[0]


def test_stream_stops_reading_at_max_tokens(fake):
    be = loaded([fake.url], max_new=5, timeout_s=5, deadline_s=30)
    try:
        fake.mode = "endless"       # tokens past max_tokens, never a finish_reason
        assert len(within(20, lambda: sum(be.stream([1]), []))) == 5      # not the 30 s deadline
        assert wait_for(lambda: fake.in_flight == 0, timeout_s=30)   # the request was closed
        entry = be.request_log()[-1]
        assert entry["error"] is None and entry["n_output"] == 5 and entry["endpoint"] == fake.url
    finally:
        be.close()


def test_keepalives_forever_hit_the_deadline(fake):
    be = loaded([fake.url], max_new=4, timeout_s=5, deadline_s=1, deadline_per_token_s=0, failover=False)
    try:
        fake.mode = "keepalive"     # SSE comments / whitespace every 10 ms: no read timeout ever fires
        outs = within(20, lambda: be.generate([[1], [2]]))    # bounded: the server never stops by itself
        assert all(isinstance(o, RequestError) and "1 s deadline" in str(o) for o in outs)
        err = within(20, lambda: list(be.stream([3])))
        assert isinstance(err, RequestError) and "1 s deadline" in str(err)
        assert wait_for(lambda: fake.in_flight == 0, timeout_s=30)
    finally:
        be.close()


def test_default_deadline_fits_long_completions():
    """A non-streaming reply sends nothing until it is complete, so the gap allowed between reads
    (timeout_s) must not cut it: it waits up to the deadline, which grows with max_tokens."""
    assert make(["http://127.0.0.1:1"], max_new=2040).deadline_s >= 600    # 2,040 tokens: 10 minutes or more
    # 150 tokens: 1.5 s before the first byte, twice the gap allowed (0.75 s, which the start-up
    # checks' replies must still meet on a loaded machine)
    with FakeServer(token_delay_s=0.01) as slow:
        be = loaded([slow.url], max_new=150, timeout_s=0.75, failover=False)
        try:
            assert be.generate([[4]]) == [fake_answer([4], 150)]
        finally:
            be.close()


# -- concurrency by default --------------------------------------------------------------------
def test_concurrency_is_shared_by_concurrent_generate_calls():
    with FakeServer(token_delay_s=0.01) as slow:
        be = loaded([slow.url], concurrency=3)
        try:
            calls = [threading.Thread(target=be.generate, args=([[i] for i in range(6)],)) for _ in range(3)]
            for t in calls:
                t.start()
            for t in calls:
                t.join(30)
            assert slow.max_in_flight == 3 and len(be.request_log()) == 18
        finally:
            be.close()


def test_main_offline_uses_concurrency_and_never_records_secrets(tmp_path):
    """Offline without --batch-size/--num-workers sends requests concurrently; a user:password URL
    and --api-key authenticate (basic auth is replaced by the bearer token) and appear in no output."""
    from tests.helpers import results, run_main, tiny_conf, tiny_dataset
    prompts = [[5 + i, 6, 7] for i in range(8)]
    password, key = "s3cret-pw", "sk-top-secret-42"
    with FakeServer(token_delay_s=0.05) as srv:
        url = srv.url.replace("http://", f"http://alice:{password}@")
        out = tmp_path / "logs"
        p = run_main("--backend", "openai", "--api-server", url, "--api-key", key, "--scenario", "Offline",
                     "--dataset-path", str(tiny_dataset(tmp_path / "data.pkl", prompts=prompts)),
                     "--user-conf", str(tiny_conf(tmp_path / "user.conf", n=8)), "--output-log-dir", str(out),
                     "--max-new-tokens", "8", "--total-sample-count", "8", timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        assert srv.max_in_flight >= 4                      # one request at a time before
        assert srv.headers and all(h.get("Authorization") == f"Bearer {key}" for h in srv.headers)
    res = results(out)
    assert res["run"]["command"][res["run"]["command"].index("--api-key") + 1] == "***"
    assert res["run"]["backend"]["options"]["api_key"] == "***"
    texts = [p.stdout, p.stderr] + [f.read_text(errors="replace") for f in tmp_path.rglob("*")
                                    if f.is_file() and f.suffix != ".pkl"]
    assert any("requests.csv" in str(f) for f in tmp_path.rglob("*"))
    assert not [t[:200] for t in texts if password in t or key in t]


def test_credentials_in_url_go_as_basic_auth_and_are_never_shown(fake, monkeypatch):
    import base64
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    url = fake.url.replace("http://", "http://alice:pw%40x@")
    be = loaded([url], failover=False)
    try:
        assert fake.headers[-1]["Authorization"] == "Basic " + base64.b64encode(b"alice:pw@x").decode()
        fake.mode = "error500"
        outs = be.generate([[1]])
        shown = str(be.info()) + str(outs) + str(be.request_log())
        assert "HTTP 500" in shown and "pw" not in shown and "alice" not in shown
    finally:
        be.close()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    fake.mode = "ok"
    be = loaded([url])
    try:
        assert fake.headers[-1]["Authorization"] == "Bearer sk-from-env"
        assert "sk-from-env" not in str(be.info())
    finally:
        be.close()


def test_redact():
    from common.redact import redact, redact_argv
    assert redact("failed: http://u:p@h:1/v1 and https://tok@x") == "failed: http://***@h:1/v1 and https://***@x"
    assert redact("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert redact_argv(["main.py", "--api-key", "K", "--api-key=K2", "--backend-arg", "api_key=K3",
                        "--api-server", "http://u:p@h"]) == \
        ["main.py", "--api-key", "***", "--api-key=***", "--backend-arg", "api_key=***", "--api-server", "http://***@h"]


# -- vLLM behaviours ---------------------------------------------------------------------------
def test_shortened_requests_are_flagged_and_counted():
    with FakeServer(context=3) as short:      # lowers max_tokens to 3, finish_reason "length"
        be = loaded([short.url], max_new=8)
        try:
            assert be.generate([[1], [2]]) == [fake_answer([1], 3), fake_answer([2], 3)]
            assert sum(be.stream([3]), []) == fake_answer([3], 3)
            assert [e["shortened"] for e in be.request_log()] == [True, True, True]
            assert be.info()["reply_counts"] == {"shortened": 3, "min_ignored": 0}
        finally:
            be.close()
    with FakeServer(stop_after=2) as stops:   # an end token is not a shortened request
        be = loaded([stops.url], max_new=8)
        try:
            assert be.generate([[1]]) == [fake_answer([1], 2) + [FAKE_EOS]]
            assert not be.request_log()[-1]["shortened"]
            assert be.info()["reply_counts"] == {"shortened": 0, "min_ignored": 0}
        finally:
            be.close()


def test_ignored_min_tokens_is_counted_and_warned(caplog):
    with FakeServer(stop_after=2, honours_min_tokens=False) as srv:
        be = loaded([srv.url], max_new=8, min_new=4)
        try:
            assert be.generate([[1]]) == [fake_answer([1], 2) + [FAKE_EOS]]    # 3 ids, 4 asked for
            assert be.info()["reply_counts"] == {"shortened": 0, "min_ignored": 1}
            assert "ignores min_tokens" in caplog.text
        finally:
            be.close()


def test_eos_ids_learned_from_the_served_model_folder(tmp_path):
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [1, 106]}')
    with FakeServer(stop_after=3, root=str(tmp_path), token_delay_s=0.01) as srv:
        be = loaded([srv.url], max_new=8)
        try:
            assert be.eos_token_ids == {1, 106}
            srv.mode = "endless"      # tokens 2, 3, ... and never a finish_reason: only max tokens end it
            assert sum(be.stream([1]), []) == list(range(2, 10))
            srv.mode = "ok"           # the end token is kept once, and ends the stream
            assert sum(be.stream([1]), []) == fake_answer([1], 3) + [FAKE_EOS]
        finally:
            be.close()
    with FakeServer() as srv:         # a root that is not a folder here: nothing learned
        be = loaded([srv.url])
        try:
            assert be.eos_token_ids == frozenset()
        finally:
            be.close()


# -- chat endpoint (api_endpoint=chat) ---------------------------------------------------------
CHAT_TEXTS = ["The capital of France is", "One, two, three,", "Water boils at"]


@pytest.fixture(scope="module")
def tok():
    pytest.importorskip("llama_cpp")
    from inputs.tokenizer import load_tokenizer
    return load_tokenizer(None)


def _chat_answer(tok, prompt: list[int], n: int) -> list[int]:
    """FakeServer's chat answer: its prompt is the message text (the ids decoded, BOS dropped) as bytes."""
    return fake_answer(list(tok.decode(prompt[1:]).encode()), n)


def test_bad_api_endpoint_options():
    with pytest.raises(HarnessError, match="api_endpoint must be one of completions, chat, got 'rest'"):
        make(["http://127.0.0.1:1"], api_endpoint="rest")
    with pytest.raises(HarnessError, match="prompt_mode=ids does not apply to api_endpoint=chat"):
        make(["http://127.0.0.1:1"], api_endpoint="chat", prompt_mode="ids")


def test_chat_sends_one_user_message_and_reports_the_servers_ids(fake, tok):
    prompts = [tok.encode(t) for t in CHAT_TEXTS]
    be = loaded([fake.url], max_new=6, min_new=2, api_endpoint="chat")
    try:
        assert be.info()["endpoints"] == [{"url": fake.url, "prompt": "text", "output": "ids"}]
        assert be.generate(prompts) == [_chat_answer(tok, p, 6) for p in prompts]
        bodies = fake.bodies[-len(prompts):]        # requests run concurrently: order them by content
        assert all("prompt" not in b for b in bodies)
        assert sorted(b["messages"][0]["content"] for b in bodies) == sorted(CHAT_TEXTS)
        assert all(len(b["messages"]) == 1 and b["messages"][0]["role"] == "user" for b in bodies)
        assert {(b["max_tokens"], b["min_tokens"], b["temperature"]) for b in bodies} == {(6, 2, 0.0)}
        chunks = list(be.stream(prompts[0]))
        assert chunks[0] == _chat_answer(tok, prompts[0], 1)       # the role-only piece yields nothing
        assert sum(chunks, []) == _chat_answer(tok, prompts[0], 6)
        assert fake.bodies[-1]["stream"] is True
        assert all(e["error"] is None and e["n_output"] == 6 for e in be.request_log())
    finally:
        be.close()


def test_chat_text_replies_are_tokenized_with_the_models_tokenizer(tok):
    def ids(text):
        return tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    prompt = tok.encode(CHAT_TEXTS[0])
    with FakeServer(chat_ids=False) as srv:
        be = loaded([srv.url], max_new=5, api_endpoint="chat")
        try:
            assert be.info()["endpoints"] == [{"url": srv.url, "prompt": "text", "output": "text"}]
            answer = _chat_answer(tok, prompt, 5)
            # Non-streaming: the whole text at once; streaming: each piece as it arrives. Each fake
            # token's text " tN" is several ids here: the re-tokenized ids are not the server's, and
            # max_tokens (5) caps the ids counted here as well.
            assert be.generate([prompt]) == [ids("".join(f" t{t}" for t in answer))[:5]]
            assert sum(be.stream(prompt), []) == sum((ids(f" t{t}") for t in answer), [])[:5]
        finally:
            be.close()


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_main_chat_endpoint_passes_test06(tmp_path, tok, scenario):
    from tests.helpers import accuracy_entries, assert_test06, decode_ids, results, run_main, tiny_conf, tiny_dataset
    prompts = [tok.encode(t) for t in CHAT_TEXTS]
    out = tmp_path / "logs"
    with FakeServer(token_delay_s=0.01) as srv:
        p = run_main("--backend", "openai", "--api-server", srv.url, "--api-endpoint", "chat", "--scenario", scenario,
                     "--accuracy", "--dataset-path", str(tiny_dataset(tmp_path / "data.pkl", prompts=prompts)),
                     "--user-conf", str(tiny_conf(tmp_path / "user.conf", n=len(prompts), qps=5.0)),
                     "--output-log-dir", str(out), "--max-new-tokens", "8",
                     "--total-sample-count", str(len(prompts)), timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        assert all("messages" in b for b in srv.bodies)
        url = srv.url
    assert_test06(out, scenario)
    got = sorted(decode_ids(e) for e in accuracy_entries(out))
    assert got == sorted(_chat_answer(tok, q, 8) for q in prompts)
    backend = results(out)["run"]["backend"]
    assert backend["options"]["api_endpoint"] == "chat"
    assert backend["endpoints"] == [{"url": url, "prompt": "text", "output": "ids"}]


# -- real llama_cpp.server (text prompts, text replies) ----------------------------------------
# Distinct plain-text prompts with confident continuations: llama_cpp.server reuses the KV cache of
# a shared prompt prefix, which changes the decode batch shapes and could flip a near-tie token.
TEXTS = ["The capital of France is", "Water boils at a temperature of", "The three primary colours are",
         "One, two, three, four,", "The largest planet in the solar system is", "Monday, Tuesday, Wednesday,",
         "The opposite of hot is", "January, February, March,"]
MAX_NEW = 12


@pytest.fixture(scope="module")
def text_prompts():
    pytest.importorskip("llama_cpp.server")
    from inputs.tokenizer import load_tokenizer
    tok = load_tokenizer(None)
    return [tok.encode(t) for t in TEXTS]


@pytest.fixture(scope="module")
def expected(text_prompts):
    """Greedy outputs of the in-process llama.cpp backend. A text reply carries no EOS id, so
    a trailing end-of-generation id is dropped for the comparison."""
    be = make_backend("llamacpp", params=GenerationParams(max_new_tokens=MAX_NEW), options={"n_threads": "1"})
    be.load()
    try:
        outs = be.generate(text_prompts)
    finally:
        be.close()
    return [o[:-1] if o and o[-1] in be.eos_token_ids else o for o in outs]


@pytest.fixture(scope="module")
def llama_url():
    with LlamaServer() as srv:
        yield srv.url


@pytest.mark.slow
def test_llama_server_greedy_matches_inprocess_backend(llama_url, text_prompts, expected):
    be = loaded([llama_url], max_new=MAX_NEW, concurrency=4)
    try:
        assert be.info()["endpoints"] == [{"url": llama_url, "prompt": "text", "output": "text"}]
        assert be.generate(text_prompts[:4]) == expected[:4]
        # Server scenario: several threads stream at once; each stream's ids match too.
        results: dict[int, list[list[int]]] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, list(be.stream(text_prompts[i]))))
                   for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [sum(results[i], []) for i in range(3)] == expected[:3]
        assert all(len(c) >= 1 for i in range(3) for c in results[i])
        log = be.request_log()
        # Token counts agree with the server's own count (usage) for the non-streamed requests.
        assert all(e["n_output"] == e["server_tokens"] for e in log if e["kind"] == "generate")
        assert all(e["ttft_s"] > 0 and len(e["itl_s"]) == e["n_output"] - 1 for e in log if e["kind"] == "stream")
    finally:
        be.close()


@pytest.mark.slow
def test_llama_server_refuses_token_id_prompts(llama_url):
    with pytest.raises(HarnessError, match="does not accept token-id prompts.*prompt_mode=text"):
        loaded([llama_url], prompt_mode="ids")


@pytest.mark.slow
def test_killed_server_fails_over_then_all_dead_fails_fast(text_prompts, expected):
    with LlamaServer() as doomed, LlamaServer() as survivor:
        be = loaded([doomed.url, survivor.url], max_new=MAX_NEW, concurrency=4, timeout_s=30)
        try:
            prompts = text_prompts[:6]
            outs: list = []
            streamed: dict[int, list[int]] = {}
            gen = threading.Thread(target=lambda: outs.extend(be.generate(prompts)))
            streams = [threading.Thread(target=lambda i=i: streamed.__setitem__(i, sum(be.stream(text_prompts[i]), [])))
                       for i in (6, 7)]
            for t in [gen, *streams]:
                t.start()
            # Its first request answered (or its first stream started), of the four or so sent to it.
            assert wait_for(lambda: doomed.requests_answered() >= 1, timeout_s=60, poll_s=0.01)
            doomed.kill()            # mid-run: requests queued and running on it fail over
            for t in [gen, *streams]:
                t.join(180)
            log = be.request_log()
            restarted = sum(any(a["endpoint"] == doomed.url for a in e["failed_attempts"]) for e in log)
            assert restarted >= 1
            assert all(e["error"] is None for e in log)
            got = outs + [streamed[6], streamed[7]]
            assert [len(g) for g in got] == [len(e) for e in expected]
            # llama_cpp.server reuses its KV cache for a shared prompt prefix, so a request restarted
            # on the survivor can flip a near-tie token (seen once: " largest planet in" came back
            # as " largest in"). Every request that was not restarted must match exactly.
            assert sum(g == e for g, e in zip(got, expected)) >= len(expected) - restarted

            # Now the survivor dies too: every request still finishes, with the reason.
            outs.clear()
            answered = survivor.requests_answered()
            gen = threading.Thread(target=lambda: outs.extend(be.generate(text_prompts[:4])))
            gen.start()
            # Killed once it has answered the first of the four (about 0.2 s each, one at a time), so
            # the other three are still to come; a fixed pause could outlast all four.
            assert wait_for(lambda: survivor.requests_answered() > answered, timeout_s=60, poll_s=0.01)
            survivor.kill()
            t0 = time.monotonic()
            gen.join(60)
            assert not gen.is_alive() and time.monotonic() - t0 < 30
            failed = [o for o in outs if isinstance(o, Exception)]
            assert failed and all("cannot connect" in str(o) or "disconnected" in str(o).lower() for o in failed)
            with pytest.raises(RequestError, match="cannot connect"):
                list(be.stream(text_prompts[0]))
        finally:
            be.close()


@pytest.mark.slow
@pytest.mark.parametrize("scenario,pin", [("Offline", False), ("Server", False), ("Server", True)])
def test_main_against_llama_server_passes_test06(tmp_path, llama_url, text_prompts, scenario, pin):
    from tests.helpers import accuracy_entries, assert_test06, decode_ids, run_main, tiny_conf, tiny_dataset
    data = tiny_dataset(tmp_path / "data.pkl", prompts=text_prompts)
    conf = tiny_conf(tmp_path / "user.conf", n=len(text_prompts), qps=2.0)
    out = tmp_path / "logs"
    p = run_main("--backend", "openai", "--api-server", llama_url, "--scenario", scenario, "--accuracy",
                 "--dataset-path", str(data), "--user-conf", str(conf), "--output-log-dir", str(out),
                 "--max-new-tokens", "8", "--total-sample-count", str(len(text_prompts)),
                 *(["--pin-cpu", str(min(os.sched_getaffinity(0)))] if pin else []), timeout=170)
    assert p.returncode == 0, p.stderr[-2000:]
    assert_test06(out, scenario)
    entries = accuracy_entries(out)
    assert len(entries) == len(text_prompts) and all(1 <= len(decode_ids(e)) <= 8 for e in entries)
