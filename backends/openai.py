"""Backend for models served by an OpenAI-compatible server (vLLM, SGLang, llama.cpp's
llama-server, llama-cpp-python's llama_cpp.server, TGI), one or several endpoints.

- generate() (Offline) sends one non-streaming /v1/completions request per prompt, at most
  `concurrency` in flight, all from one background event loop. api_endpoint=chat sends
  /v1/chat/completions instead, the prompt as one user message (text: chat takes no token ids),
  for servers that serve only chat models; the server then applies its chat template.
- stream() (Server) sends `stream: true` and yields each piece as it arrives; several threads
  may stream at once.
- Prompts go out as token ids where the server accepts them (vLLM, SGLang, llama-server), else
  as text decoded with the local tokenizer (llama_cpp.server, TGI). Generated ids come from the
  server where it returns them (vLLM `return_token_ids`, llama-server `return_tokens`), else by
  tokenizing each returned text piece locally; what is reported to LoadGen is always the ids
  counted here, so the token count matches the data (TEST06).
- Text replies hold no end-of-sequence token, so text-mode outputs end without an EOS id.
- Decoding is greedy: temperature 0, max_tokens = max_new_tokens, min_tokens (vLLM,
  llama_cpp.server), ignore_eos (vLLM, llama-server; otherwise emulated with min_tokens = max),
  repetition penalty 1 (llama.cpp servers default to 1.1).
- Every attempt on an endpoint has a total deadline (deadline_s + deadline_per_token_s *
  max_new_tokens) besides the gap allowed between reads (timeout_s): a server that streams past
  max_tokens or sends keep-alives forever cannot hold a query. A stream is closed as soon as
  max_new_tokens ids (or an end token) have arrived.
- Credentials: an API key (option api_key, else $OPENAI_API_KEY) goes out as a bearer token;
  user:password in a URL as basic auth. Neither is ever shown, logged or stored.
- request_log() keeps one dict per request: endpoint, HTTP status, failed attempts, timings,
  and whether the server shortened it (finish_reason "length" before max_tokens).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
import time
from typing import Any, Iterator

from tqdm import tqdm

from backends.base import Backend
from backends.openai_client import (MAX_REPLY_BYTES, ROUTES, Endpoint, EndpointPool, LoopThread, Reply, RequestError,
                                    _snippet, check_usage, choice_text, describe, ids_in)
from common.errors import HarnessError
from common.redact import HIDDEN, redact
from inputs.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

BALANCE = ("round_robin", "least_outstanding")
PROMPT_MODES = ("auto", "ids", "text")
_DONE = object()
# After a stream's last wanted id: how long to wait for the server to end the reply (for its
# finish_reason and usage) before closing the request.
END_GRACE_S = 1.0


def eos_ids_in(folder: str) -> set[int]:
    """eos_token_id (an int or a list) of a Hugging Face model folder: generation_config.json's,
    else config.json's; empty when neither says."""
    for name in ("generation_config.json", "config.json"):
        try:
            with open(os.path.join(folder, name)) as f:
                value = json.load(f).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        ids = value if isinstance(value, list) else [value]
        if ids and all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            return set(ids)
    return set()


class OpenAIBackend(Backend):
    name = "openai"
    pinnable = True        # its requests run on a loop thread started in load()
    # Offline: one batch keeps `concurrency` requests in flight; Server: one stream per worker.
    default_batch_size = 64
    default_num_workers = 64
    defaults = {
        "api_server": [],              # base URLs, e.g. http://127.0.0.1:8000 (with or without /v1)
        "api_model_name": "",          # model id the servers serve; empty: the one they all serve
        "api_key": "",                 # bearer token; empty: $OPENAI_API_KEY (if set)
        "api_endpoint": "completions",  # completions | chat (/v1/chat/completions, prompts as text)
        "concurrency": 64,             # Offline: requests in flight at once (over all generate() calls)
        "timeout_s": 120.0,            # per request: connect, and the longest wait for the next bytes
        # Total time one attempt may take: a base plus an allowance per requested token, so that a
        # long non-streaming completion on a busy server fits (2,048 tokens: about 10 minutes).
        "deadline_s": 120.0,
        "deadline_per_token_s": 0.25,
        "balance": "round_robin",      # round_robin | least_outstanding
        "failover": True,              # retry a failed request on another endpoint
        "prompt_mode": "auto",         # auto | ids | text
        "tokenizer": "",               # for text mode; empty: the model path (or embedded model)
        "max_reply_bytes": MAX_REPLY_BYTES,   # a reply past this, decompressed, fails its query
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        if o["balance"] not in BALANCE:
            raise HarnessError(f"option balance must be one of {', '.join(BALANCE)}, got '{o['balance']}'")
        if o["prompt_mode"] not in PROMPT_MODES:
            raise HarnessError(f"option prompt_mode must be one of {', '.join(PROMPT_MODES)}, "
                               f"got '{o['prompt_mode']}'")
        if o["api_endpoint"] not in ROUTES:
            raise HarnessError(f"option api_endpoint must be one of {', '.join(ROUTES)}, got '{o['api_endpoint']}'")
        self._chat = o["api_endpoint"] == "chat"
        if self._chat and o["prompt_mode"] == "ids":
            raise HarnessError("prompt_mode=ids does not apply to api_endpoint=chat: chat messages are text")
        if min(o["concurrency"], o["max_reply_bytes"]) < 1 or min(o["timeout_s"], o["deadline_s"]) <= 0 \
                or o["deadline_per_token_s"] < 0:
            raise HarnessError("options concurrency, max_reply_bytes, timeout_s and deadline_s must be positive, "
                               "deadline_per_token_s not negative")
        self._api_key = o["api_key"] or os.environ.get("OPENAI_API_KEY", "")
        self._loop: LoopThread | None = None
        self._sem: asyncio.Semaphore | None = None     # created on the loop thread
        self.reply_counts = {"shortened": 0, "min_ignored": 0}     # see _judge
        self._pool: EndpointPool | None = None
        self._tokenizer = None
        self._model = ""
        self._endpoints: list[dict[str, str]] = []
        self._log: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def deadline_s(self) -> float:
        """Total time allowed for one attempt of one request on one endpoint."""
        o = self.options
        return o["deadline_s"] + o["deadline_per_token_s"] * self.params.max_new_tokens

    def load(self) -> None:
        urls = list(self.options["api_server"])
        if not urls:
            raise HarnessError("backend 'openai' needs at least one server: --api-server http://HOST:PORT")
        # httpx logs every request at INFO; a run sends tens of thousands.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._loop = LoopThread()
        o = self.options
        self._pool = self._loop.run(self._make_pool(urls, o["timeout_s"], self.deadline_s, o["balance"],
                                                    o["failover"], o["concurrency"], self._api_key,
                                                    o["api_endpoint"], o["max_reply_bytes"]))
        try:
            for ep in self._pool.endpoints:
                self._check_models(ep)
            self._model = self._choose_model()
            self._learn_eos()
            for ep in self._pool.endpoints:
                try:
                    self._probe(ep)
                except HarnessError:
                    raise
                except Exception as e:
                    raise HarnessError(f"server {ep.url}: a one-token test completion failed: "
                                       f"{describe(e)}".splitlines()[0]) from e
            if any(not (ep.accepts_ids and ep.returns_ids) for ep in self._pool.endpoints):
                self._load_tokenizer()
        except BaseException:
            self.close()
            raise
        # Kept past close(): results.json says how each endpoint took prompts and gave outputs.
        self._endpoints = [{"url": ep.url, "prompt": "ids" if ep.accepts_ids else "text",
                            "output": "ids" if ep.returns_ids else "text"} for ep in self._pool.endpoints]
        log.info("openai backend: model '%s' on %s", self._model,
                 ", ".join(f"{e['url']} (prompt {e['prompt']}, output {e['output']})" for e in self._endpoints))

    @staticmethod
    async def _make_pool(*args) -> EndpointPool:
        return EndpointPool(*args)      # built on the loop thread, which owns its connections

    def close(self) -> None:
        if self._loop is not None:
            if self._pool is not None:
                self._loop.run(self._pool.aclose())
            self._loop.stop()
        self._loop, self._pool = None, None

    def running_dtype(self) -> str:
        return "server"  # the server decides

    def running_device(self) -> str:
        return "server"

    def info(self) -> dict[str, Any]:
        out = super().info()
        opts = dict(out["options"])
        opts["api_server"] = [redact(u) for u in opts["api_server"]]
        opts["api_key"] = HIDDEN if opts["api_key"] else ""
        out["options"] = opts
        out["api_model_name"] = self._model
        out["deadline_s"] = self.deadline_s
        out["reply_counts"] = dict(self.reply_counts)
        if self._endpoints:
            out["endpoints"] = self._endpoints
        return out

    def _check_models(self, ep: Endpoint) -> None:
        try:
            ep.served = self._loop.run(self._pool.models(ep))
        except Exception as e:
            raise HarnessError(redact(f"OpenAI-compatible server {ep.url} is not usable: GET /v1/models failed: "
                                      f"{type(e).__name__}: {e}").splitlines()[0]) from e

    def _choose_model(self) -> str:
        want = self.options["api_model_name"]
        eps = self._pool.endpoints
        if not want:
            served = {tuple(self._served_ids(ep)) for ep in eps}
            if len(served) != 1 or len(eps[0].served) != 1:
                raise HarnessError("the servers do not all serve exactly one model ("
                                   + "; ".join(f"{ep.url}: {self._served_ids(ep)}" for ep in eps)
                                   + "): name it with --api-model-name")
            return self._served_ids(eps[0])[0]
        for ep in eps:
            if want not in self._served_ids(ep):
                raise HarnessError(f"server {ep.url} does not serve model '{want}' (it serves: "
                                   f"{', '.join(self._served_ids(ep)) or 'nothing'})")
        return want

    @staticmethod
    def _served_ids(ep: Endpoint) -> list[str]:
        return [m["id"] for m in ep.served]

    def _learn_eos(self) -> None:
        """End-of-sequence ids of the served model, where a server names its model folder (vLLM's
        /v1/models `root`) and that folder is readable here: generation_config.json's eos_token_id,
        else config.json's. Streams then stop at them and failed queries end with one."""
        for ep in self._pool.endpoints:
            for m in ep.served:
                root = m.get("root") if m["id"] == self._model else None
                if isinstance(root, str) and os.path.isdir(root):
                    ids = eos_ids_in(root)
                    if ids:
                        self.eos_token_ids = frozenset(ids)
                        log.info("openai backend: end-of-sequence ids %s from %s", sorted(ids), root)
                        return

    def _probe(self, ep: Endpoint) -> None:
        """Find out whether the endpoint takes token-id prompts and returns token ids,
        with one-token requests."""
        mode = self.options["prompt_mode"]
        base = {"model": self._model, "max_tokens": 1, "temperature": 0.0, "return_token_ids": True,
                "return_tokens": True}
        if self._chat:
            r = self._loop.run(self._pool.post_once(ep, {**base, "messages": [{"role": "user", "content": "Hello"}]}))
            if r.status_code != 200:
                raise HarnessError(f"server {ep.url}: a test chat completion failed: HTTP {r.status_code}: "
                                   f"{_snippet(r.text)}")
            ep.returns_ids = ids_in(r.json()["choices"][0]) is not None
            return
        if mode != "text":
            r = self._loop.run(self._pool.post_once(ep, {**base, "prompt": [1]}))
            ep.accepts_ids = r.status_code == 200
            if ep.accepts_ids:
                ep.returns_ids = ids_in(r.json()["choices"][0]) is not None
                return
            # Refusals of a list prompt vary (422, 400, llama_cpp.server: 500); a text prompt
            # that works tells them apart from a broken server.
            refusal = f"HTTP {r.status_code}: {_snippet(r.text)}"
            if mode == "ids":
                raise HarnessError(f"server {ep.url} does not accept token-id prompts ({refusal}); "
                                   "use --backend-arg prompt_mode=text")
        r = self._loop.run(self._pool.post_once(ep, {**base, "prompt": "Hello"}))
        if r.status_code != 200:
            raise HarnessError(f"server {ep.url}: a test completion failed: HTTP {r.status_code}: "
                               f"{_snippet(r.text)}")
        ep.returns_ids = ids_in(r.json()["choices"][0]) is not None

    def _load_tokenizer(self) -> None:
        # For a .gguf this is llama.cpp's own vocabulary, so ids match a llama.cpp server's exactly.
        self._tokenizer = load_tokenizer(self.options["tokenizer"] or self.model_path)

    # -- requests ----------------------------------------------------------------------------
    def request_body(self, prompt: list[int], stream: bool, ep: Endpoint | None = None) -> dict[str, Any]:
        """The /v1/completions (or chat) body sent for a prompt (to `ep`, default the first endpoint)."""
        ep = ep or self._pool.endpoints[0]
        p = self.params
        body: dict[str, Any] = {
            "model": self._model,
            "max_tokens": p.max_new_tokens,
            "temperature": 0.0,
            # Servers that lack ignore_eos still stop at EOS only after min_tokens.
            "min_tokens": p.max_new_tokens if p.ignore_eos else p.min_new_tokens,
            "ignore_eos": p.ignore_eos,
            "repeat_penalty": 1.0,         # llama.cpp servers: plain greedy, no penalty
            "return_token_ids": True,      # vLLM
            "return_tokens": True,         # llama-server
            "stream": stream,
        }
        if self._chat:
            body["messages"] = [{"role": "user", "content": self._prompt_text(prompt)}]
        else:
            body["prompt"] = prompt if ep.accepts_ids else self._prompt_text(prompt)
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _prompt_text(self, ids: list[int]) -> str:
        # Servers add BOS to text prompts themselves.
        if ids and ids[0] == self._tokenizer.bos_token_id:
            ids = ids[1:]
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def _choice_ids(self, choice: dict[str, Any]) -> list[int]:
        """Token ids of one reply choice (or streamed piece): the server's, else the text's.
        A text reply does not say which end-of-sequence token stopped it, so text-mode outputs
        carry no EOS id (as the server's own token count)."""
        ids = ids_in(choice)
        if ids is None:
            text = choice_text(choice)
            # Generated text never spells special tokens, so their names are read as plain text.
            ids = self._tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] if text else []
        return ids

    def _record(self, entry: dict[str, Any]) -> None:
        with self._log_lock:
            self._log.append(entry)

    def request_log(self) -> list[dict[str, Any]]:
        """One dict per finished request, in completion order: kind (generate|stream), endpoint
        (that answered, or None), status, failed_attempts ([{endpoint, status, error}]), n_prompt,
        n_output (ids reported), server_tokens (the server's usage count, if sent), server_prompt_tokens (its
        prompt count: with a chat template's tokens in chat mode), shortened
        (the server stopped at its own lower limit), ttft_s, itl_s (list), e2e_s, error."""
        with self._log_lock:
            return list(self._log)

    def _entry(self, kind: str, prompt: list[int], e2e: float, reply: Reply | None,
               err: BaseException | None, n_output: int = 0) -> dict[str, Any]:
        failed = reply.failed if reply else getattr(err, "attempts", [])
        usage = (reply.usage or {}) if reply else {}
        return {"kind": kind, "endpoint": reply.endpoint if reply else None,
                "status": reply.status if reply else (failed[-1].status if failed else None),
                "failed_attempts": [vars(a) for a in failed], "n_prompt": len(prompt), "n_output": n_output,
                "server_tokens": usage.get("completion_tokens"),
                "server_prompt_tokens": usage.get("prompt_tokens"),    # chat: with the template's
                "shortened": self._judge(reply, usage.get("completion_tokens"), n_output) == "shortened",
                "ttft_s": None, "itl_s": [], "e2e_s": e2e, "error": None if err is None else str(err)}

    def _judge(self, reply: Reply | None, server_tokens: int | None, n_output: int) -> str | None:
        """How a finished reply departs from what was asked, counted and warned about once each:
        "shortened" (finish_reason "length" before max_tokens: the server lowered the limit itself,
        as vLLM does to fit its context) or "min_ignored" (finish_reason "stop" before min_tokens,
        or before max_tokens with ignore_eos: the server ignores those request fields)."""
        finish = reply.choice.get("finish_reason") if reply else None
        n = server_tokens if server_tokens is not None else n_output
        p = self.params
        if finish == "length" and n < p.max_new_tokens:
            kind, why = "shortened", "it shortened max_tokens, likely to fit its context"
        elif finish == "stop" and n < (p.max_new_tokens if p.ignore_eos else p.min_new_tokens):
            kind, why = "min_ignored", "it ignores min_tokens / ignore_eos (request fields it does not know)"
        else:
            return None
        with self._log_lock:
            self.reply_counts[kind] += 1
            first = self.reply_counts[kind] == 1
        if first:
            log.warning("server %s ended a request with finish_reason '%s' after %d tokens (asked: max %d, "
                        "min %d%s): %s; results.json counts such requests (backend.reply_counts)",
                        reply.endpoint, finish, n, p.max_new_tokens, p.min_new_tokens,
                        ", ignore_eos" if p.ignore_eos else "", why)
        return kind

    # Offline ----------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]]) -> list[list[int] | Exception]:
        outs: list[list[int] | Exception] = []
        for prompt, (e2e, reply) in zip(prompts, self._loop.run(self._complete_all(prompts))):
            if isinstance(reply, Exception):
                outs.append(reply)
                self._record(self._entry("generate", prompt, e2e, None, reply))
                continue
            server_ids = ids_in(reply.choice)
            try:
                check_usage(reply, None if server_ids is None else len(server_ids))
            except RequestError as e:
                outs.append(e)
                self._record(self._entry("generate", prompt, e2e, reply, e))
                continue
            ids = self.trim(self._choice_ids(reply.choice))
            self._record(self._entry("generate", prompt, e2e, reply, None, len(ids)))
            outs.append(ids)
        return outs

    async def _complete_all(self, prompts: list[list[int]]) -> list[tuple[float, Reply | Exception]]:
        """(seconds taken, reply or the exception) per prompt, at most `concurrency` in flight over
        all calls (the Offline SUT calls generate() from several workers at once)."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.options["concurrency"])
        # The SUT's batches have their own progress bar; a bar here is for long direct calls.
        bar = tqdm(total=len(prompts), desc="requests", unit="req", leave=False,
                   disable=len(prompts) <= 4 * self.default_batch_size or None)

        async def one(prompt: list[int]) -> tuple[float, Reply | Exception]:
            async with self._sem:
                t0 = time.perf_counter()
                try:
                    reply: Reply | Exception = await self._pool.complete(
                        lambda ep: self.request_body(prompt, False, ep))
                except Exception as e:     # one failed prompt must not fail the batch
                    reply = e
                bar.update()
                return time.perf_counter() - t0, reply

        try:
            return await asyncio.gather(*(one(p) for p in prompts))
        finally:
            bar.close()

    # Server -----------------------------------------------------------------------------------
    def stream(self, prompt: list[int]) -> Iterator[list[int]]:
        events: queue.Queue = queue.Queue()

        def emit(kind: str, payload: Any) -> None:
            events.put((kind, payload))

        enough = threading.Event()     # all wanted ids are in: the reply is not read further

        async def run() -> None:
            try:
                events.put(("reply", await self._pool.stream(lambda ep: self.request_body(prompt, True, ep), emit,
                                                             enough.is_set)))
            except BaseException as e:     # the consumer re-raises it in its own thread
                events.put(("error", e))
            finally:
                events.put((_DONE, None))

        t0 = time.perf_counter()
        fut = self._loop.submit(run())
        sent: list[int] = []          # ids yielded so far
        replay: list[int] = []        # after a restart: ids the new stream must repeat first
        times: list[float] = []
        reply, err, done = None, None, False
        end_by = None                 # once done: when to stop waiting for the end of the reply
        n_server_ids: int | None = 0  # ids the server sent in this stream (None: some pieces were text only)
        try:
            while True:
                try:
                    kind, payload = events.get(timeout=None if end_by is None else max(0.0, end_by - time.monotonic()))
                except queue.Empty:
                    break             # the server went quiet after the last id: closed below
                if kind is _DONE:
                    break
                if kind == "error":
                    err = None if done else payload    # every wanted id is in: nothing was lost
                    break
                if kind == "reply":
                    reply = payload
                    continue
                if kind == "restart":
                    replay, n_server_ids = list(sent), 0
                    continue
                server_ids = ids_in(payload)
                if server_ids is None and choice_text(payload):
                    n_server_ids = None
                elif n_server_ids is not None:
                    n_server_ids += len(server_ids or ())
                if done:
                    continue          # drain what the server sends past EOS / max tokens
                ids = self._choice_ids(payload)
                if replay:
                    head, ids = ids[: len(replay)], ids[len(replay):]
                    if head != replay[: len(head)]:
                        raise RequestError("stream restarted on another endpoint produced different "
                                           "tokens (decoding not deterministic)")
                    replay = replay[len(head):]
                ids, done = self._cut(ids, len(sent))
                if done:
                    enough.set()
                    end_by = time.monotonic() + END_GRACE_S
                if ids:
                    sent.extend(ids)
                    times.append(time.perf_counter())
                    yield ids
            if err is not None:
                raise err
            if reply is not None:
                check_usage(reply, n_server_ids)
        except BaseException as e:
            err = err or e
            raise
        finally:
            if not fut.done():
                fut.cancel()      # consumer stopped early or failed: abort the HTTP request
            entry = self._entry("stream", prompt, time.perf_counter() - t0, reply, err, len(sent))
            entry.update(ttft_s=times[0] - t0 if times else None, itl_s=[b - a for a, b in zip(times, times[1:])])
            self._record(entry)

    def _cut(self, ids: list[int], n_sent: int) -> tuple[list[int], bool]:
        """Apply max_new_tokens and stop-after-EOS to one streamed chunk; also say if we are done."""
        room = self.params.max_new_tokens - n_sent
        ids = ids[:room]
        if not self.params.ignore_eos:
            for i, t in enumerate(ids):
                if t in self.eos_token_ids:
                    return ids[: i + 1], True
        return ids, len(ids) >= room

