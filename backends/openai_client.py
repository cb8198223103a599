"""HTTP side of the OpenAI-compatible backend: one event loop thread, one httpx connection
pool, endpoint choice (round robin / least outstanding) and failover.

Everything here is about bytes on the wire; turning prompts into request bodies and replies
into token ids is backends/openai.py's job. Ordinary threads hand coroutines to the loop thread
(LoopThread.submit) and wait on the returned concurrent future.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx

from common.errors import HarnessError
from common.redact import redact

log = logging.getLogger(__name__)

# The request path of each API: completions take a prompt (text or token ids); chat takes
# messages (text), which the server renders with the model's chat template.
ROUTES = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}

# After a failure (refused connection, 5xx, timeout) new requests avoid the endpoint this long;
# it is tried again afterwards, so a restarted server rejoins on its own.
DOWN_COOLDOWN_S = 5.0
# A reply (all of a stream, so any one line of it too) is read up to this many bytes after
# decompression, so that a gzip bomb or a line without end cannot grow the process.
MAX_REPLY_BYTES = 16 * 2**20
# Content encodings decoded here, with the output bounded per step (httpx would inflate a whole
# network chunk at once: up to ~1000x its size).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class RequestError(RuntimeError):
    """A request failed on every endpoint it was tried on; the message names each one and why."""

    def __init__(self, message: str, attempts: list[Attempt] | None = None):
        super().__init__(message)
        self.attempts = attempts or []


def broken(endpoint: str, why: str) -> RequestError:
    """A reply that breaks the protocol (too large, not UTF-8, several choices, a wrong usage
    count): its query fails with the reason; other endpoints are not tried."""
    return RequestError(f"{endpoint}: reply breaks the protocol: {why}", [Attempt(endpoint, 200, why)])


class _Retryable(Exception):
    """One attempt failed in a way another endpoint might not (server down, 5xx, stall)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Attempt:
    """One try of one request on one endpoint that failed."""
    endpoint: str
    status: int | None      # HTTP status, None when no response arrived
    error: str


@dataclass
class Endpoint:
    url: str                         # base URL without the /v1 suffix and without credentials
    auth: httpx.BasicAuth | None = None    # from user:password@ in the given URL
    accepts_ids: bool = False        # `prompt` may be a list of token ids
    returns_ids: bool = False        # replies carry the generated token ids
    served: list[dict] = field(default_factory=list)   # /v1/models entries: id, root (vLLM), ...
    outstanding: int = 0             # requests in flight (for least_outstanding)
    down_until: float = 0.0          # time.monotonic() before which new requests skip it


@dataclass
class Body:
    """A whole (bounded) non-streaming reply."""
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class Reply:
    """What one successful request returned (non-streaming)."""
    endpoint: str
    status: int
    choice: dict[str, Any]
    usage: dict[str, Any] | None
    failed: list[Attempt]            # earlier attempts on other endpoints


def normalize_url(url: str) -> str:
    """'http://h:8000/v1/' -> 'http://h:8000' (the /v1 paths are added per call), 'h:8000' ->
    'http://h:8000'; anything but an http(s) URL with a host is a HarnessError."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0..65535
    except ValueError as e:
        raise HarnessError(f"--api-server {redact(url)} is not a valid URL ({e})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise HarnessError(f"--api-server {redact(url)}: expected http://HOST:PORT or https://HOST:PORT")
    return url


def make_endpoint(url: str) -> Endpoint:
    """An Endpoint for a given URL; credentials in it (http://user:pw@host) move to `auth`, so the
    URL the endpoint is shown, logged and stored under never holds them."""
    parts = urllib.parse.urlsplit(normalize_url(url))
    if parts.username is None and parts.password is None:
        return Endpoint(parts.geturl())
    host = parts.netloc.rpartition("@")[2]
    auth = httpx.BasicAuth(urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or ""))
    return Endpoint(parts._replace(netloc=host).geturl(), auth=auth)


def _snippet(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


def choice_text(choice: dict[str, Any]) -> str:
    """The generated text of a reply choice: `text` (completions), `message.content` (chat) or
    `delta.content` (a chat stream's piece; its first piece holds only the role)."""
    if "text" in choice:
        return choice.get("text") or ""
    part = choice.get("message") or choice.get("delta") or {}
    return part.get("content") or ""


def _well_formed(obj: Any) -> bool:
    """A reply or stream chunk of the shape read here: an object whose choices (if any) are a list
    of objects and whose usage (if any) is an object."""
    if not isinstance(obj, dict):
        return False
    choices, usage = obj.get("choices") or [], obj.get("usage") or {}
    return isinstance(choices, list) and all(isinstance(c, dict) for c in choices) and isinstance(usage, dict)


def ids_in(choice: dict[str, Any]) -> list[int] | None:
    """Generated token ids carried by a reply choice, if the server sent them."""
    for key in ("token_ids", "tokens"):      # vLLM return_token_ids; llama-server return_tokens
        ids = choice.get(key)
        if isinstance(ids, list) and all(isinstance(t, int) for t in ids):
            return ids
    return None


def check_usage(reply: Reply, n_ids: int | None) -> None:
    """A server that sends token ids (n_ids of them) must count them in its usage; its end token
    may be counted but not sent, with finish_reason "stop". A reply that says otherwise fails."""
    n = (reply.usage or {}).get("completion_tokens")
    if n_ids is None or not isinstance(n, int) or isinstance(n, bool):
        return
    if n != n_ids and not (n == n_ids + 1 and reply.choice.get("finish_reason") == "stop"):
        raise broken(reply.endpoint, f"usage.completion_tokens is {n} but {n_ids} token ids were sent")


def describe(e: BaseException) -> str:
    """One line saying why a request failed, for errors and logs (credentials redacted)."""
    if isinstance(e, httpx.TimeoutException):
        return f"timed out ({type(e).__name__})"
    if isinstance(e, httpx.ConnectError):
        return f"cannot connect ({e or type(e).__name__})"
    return redact(str(e)) or type(e).__name__


class LoopThread:
    """An asyncio event loop running on a daemon thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="openai-http", daemon=True)
        self._thread.start()

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro):
        return self.submit(coro).result()

    def stop(self) -> None:
        # Finalise httpx's stream generators on this loop, not at interpreter exit.
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class EndpointPool:
    """Sends /v1 requests to a set of endpoints. Use only from the loop thread's coroutines."""

    def __init__(self, urls: list[str], timeout_s: float, deadline_s: float, balance: str, failover: bool,
                 pool_size: int, api_key: str = "", api: str = "completions",
                 max_reply_bytes: int = MAX_REPLY_BYTES):
        # A bearer token, where given, replaces credentials written in the URLs.
        self.endpoints = [make_endpoint(u) for u in urls]
        if api_key:
            for ep in self.endpoints:
                ep.auth = None
        self.path = ROUTES[api]
        self.deadline_s = deadline_s
        self.balance = balance
        self.failover = failover
        self.max_reply_bytes = max_reply_bytes
        self._rr = itertools.count()
        # Connect and per-read timeout: a stalled server fails the request after timeout_s.
        # pool=None: waiting for a free connection is queueing, not a failure. A whole attempt is
        # bounded by deadline_s as well, since a server that trickles bytes never trips a read timeout.
        # Proxies from the environment apply to remote servers only: a loopback server is reached
        # directly (httpx would send it to HTTP_PROXY unless NO_PROXY names it).
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, pool=None),
            headers={"Accept-Encoding": "gzip, deflate", **({"Authorization": f"Bearer {api_key}"} if api_key else {})},
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=pool_size),
            mounts={f"all://{host}": None for host in ("127.0.0.1", "localhost", "[::1]")})
        # A non-streaming reply sends nothing until it is complete: its read timeout is the deadline.
        self._complete_timeout = httpx.Timeout(timeout_s, read=deadline_s, pool=None)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _within_deadline(self, coro):
        try:
            return await asyncio.wait_for(coro, self.deadline_s)
        except asyncio.TimeoutError:
            raise _Retryable(f"timed out: no complete reply within the {self.deadline_s:g} s deadline") from None

    # -- reading replies, bounded ------------------------------------------------------------
    async def _chunks(self, ep: Endpoint, r: httpx.Response):
        """The reply's bytes, decompressed, in pieces; past max_reply_bytes in all the request
        fails (httpx's own decoding is bypassed: it inflates a whole network chunk at once)."""
        encoding = r.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in (*_WBITS, "identity", ""):
            raise broken(ep.url, f"content-encoding '{_snippet(encoding, 40)}' (asked for gzip, deflate)")
        inflate = zlib.decompressobj(_WBITS[encoding]) if encoding in _WBITS else None
        total = 0
        async for raw in r.aiter_raw():
            while raw:
                if inflate is None:
                    piece, raw = raw, b""
                else:
                    try:
                        piece = inflate.decompress(raw, self.max_reply_bytes - total + 1)
                    except zlib.error as e:
                        raise broken(ep.url, f"bad {encoding} data ({e})") from None
                    raw = inflate.unconsumed_tail
                total += len(piece)
                if total > self.max_reply_bytes:
                    raise broken(ep.url, f"reply larger than {self.max_reply_bytes} bytes decompressed "
                                         "(--max-reply-bytes)")
                if piece:
                    yield piece
                if inflate is not None and inflate.eof:
                    break

    async def _read(self, ep: Endpoint, r: httpx.Response) -> Body:
        return Body(r.status_code, b"".join([c async for c in self._chunks(ep, r)]))

    async def _lines(self, ep: Endpoint, r: httpx.Response):
        """The reply's lines as text (UTF-8, strictly: a server that sends anything else is broken)."""
        buf = bytearray()

        def text(line: bytes) -> str:
            try:
                return line.rstrip(b"\r").decode("utf-8")
            except UnicodeDecodeError as e:
                raise broken(ep.url, f"a line of the stream is not UTF-8 ({e.reason} at byte {e.start})") from None

        async for chunk in self._chunks(ep, r):
            start = len(buf)
            buf += chunk
            while (i := buf.find(b"\n", start)) >= 0:
                yield text(bytes(buf[:i]))
                del buf[: i + 1]
                start = 0
        if buf:
            yield text(bytes(buf))

    async def _request(self, ep: Endpoint, method: str, url: str, **kw) -> Body:
        async with self.client.stream(method, url, auth=ep.auth, **kw) as r:
            return await self._read(ep, r)

    # -- start-up checks -------------------------------------------------------------------
    async def models(self, ep: Endpoint) -> list[dict]:
        r = await self._request(ep, "GET", ep.url + "/v1/models")
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {_snippet(r.text)}")
        return [m for m in r.json().get("data", []) if isinstance(m, dict) and "id" in m]

    async def post_once(self, ep: Endpoint, body: dict) -> Body:
        """One non-streaming request to one endpoint, no failover (capability probes)."""
        return await self._within_deadline(self._request(ep, "POST", ep.url + self.path, json=body))

    # -- choosing an endpoint --------------------------------------------------------------
    def _pick(self, tried: set[str]) -> Endpoint | None:
        left = [e for e in self.endpoints if e.url not in tried]
        if not left:
            return None
        now = time.monotonic()
        up = [e for e in left if e.down_until <= now] or left
        start = next(self._rr) % len(up)
        rotated = up[start:] + up[:start]
        if self.balance == "least_outstanding":
            return min(rotated, key=lambda e: e.outstanding)   # ties broken by the rotation
        return rotated[0]

    def _failed(self, ep: Endpoint, e: BaseException, failed: list[Attempt]) -> None:
        status = e.status if isinstance(e, _Retryable) else None
        failed.append(Attempt(ep.url, status, describe(e)))
        ep.down_until = time.monotonic() + DOWN_COOLDOWN_S
        log.warning("request to %s failed: %s", ep.url, failed[-1].error)

    def _give_up(self, failed: list[Attempt]) -> RequestError:
        msg = "; ".join(f"{a.endpoint}: {a.error}" for a in failed)
        return RequestError(f"request failed on {len(failed)} endpoint(s): {msg}", failed)

    async def _check_status(self, ep: Endpoint, r: httpx.Response) -> None:
        if r.status_code == 200:
            return
        body = _snippet((await self._read(ep, r)).text)
        if r.status_code >= 500:
            raise _Retryable(f"HTTP {r.status_code}: {body}", r.status_code)
        # 4xx: the request itself is wrong, so every endpoint would refuse it.
        raise RequestError(f"{ep.url}: HTTP {r.status_code}: {body}", [Attempt(ep.url, r.status_code, body)])

    # -- requests --------------------------------------------------------------------------
    async def complete(self, body_for: Callable[[Endpoint], dict]) -> Reply:
        """A non-streaming completion; on failure tries the other endpoints (if failover)."""
        failed: list[Attempt] = []
        while (ep := self._pick({a.endpoint for a in failed})) is not None:
            ep.outstanding += 1
            try:
                return await self._within_deadline(self._complete_once(ep, body_for(ep), failed))
            except (httpx.TransportError, _Retryable, json.JSONDecodeError) as e:
                self._failed(ep, e, failed)
                if not self.failover:
                    break
            finally:
                ep.outstanding -= 1
        raise self._give_up(failed)

    async def _complete_once(self, ep: Endpoint, body: dict, failed: list[Attempt]) -> Reply:
        async with self.client.stream("POST", ep.url + self.path, json=body, auth=ep.auth,
                                      timeout=self._complete_timeout) as r:
            await self._check_status(ep, r)
            reply = await self._read(ep, r)
        try:
            data = reply.json()
        except UnicodeDecodeError as e:
            raise broken(ep.url, f"the reply is not UTF-8 ({e.reason} at byte {e.start})") from None
        if not isinstance(data, dict) or "error" in data or not data.get("choices"):
            raise _Retryable(f"no choices in reply: {_snippet(reply.text)}", reply.status_code)
        if not _well_formed(data):
            raise broken(ep.url, f"not a completion: {_snippet(reply.text, 80)}")
        if len(data["choices"]) != 1:
            raise broken(ep.url, f"{len(data['choices'])} choices where one was asked for")
        return Reply(ep.url, reply.status_code, data["choices"][0], data.get("usage"), failed)

    async def stream(self, body_for: Callable[[Endpoint], dict], emit: Callable[[str, Any], None],
                     enough: Callable[[], bool] = lambda: False) -> Reply:
        """A streaming completion. emit("choice", choice_dict) for every streamed choice, in order;
        emit("restart", endpoint_url) when a failed stream is started over on another endpoint
        (greedy decoding repeats itself, so the consumer drops the part it already has).
        Once enough() is true (the consumer has all the tokens it wants) reading stops and the
        request is closed, whatever the server still sends. Returns a Reply whose choice is the
        last one seen."""
        failed: list[Attempt] = []
        emitted = False

        def emit_choice(choice: dict[str, Any]) -> None:
            nonlocal emitted
            emitted = True
            emit("choice", choice)

        while (ep := self._pick({a.endpoint for a in failed})) is not None:
            ep.outstanding += 1
            emitted = False
            try:
                return await self._within_deadline(self._stream_once(ep, body_for(ep), emit_choice, enough, failed))
            except (httpx.TransportError, _Retryable, json.JSONDecodeError) as e:
                self._failed(ep, e, failed)
                if not self.failover:
                    break
                if emitted and self._pick({a.endpoint for a in failed}) is not None:
                    emit("restart", ep.url)
            finally:
                ep.outstanding -= 1
        raise self._give_up(failed)

    async def _stream_once(self, ep: Endpoint, body: dict, emit_choice: Callable[[dict], None],
                           enough: Callable[[], bool], failed: list[Attempt]) -> Reply:
        async with self.client.stream("POST", ep.url + self.path, json=body, auth=ep.auth) as r:
            await self._check_status(ep, r)
            last, usage = None, None
            async for line in self._lines(ep, r):
                if enough():
                    return Reply(ep.url, r.status_code, last or {}, usage, failed)
                if not line.startswith("data:"):
                    continue        # SSE comments, keep-alives, blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                obj = json.loads(data)
                if not _well_formed(obj):
                    raise broken(ep.url, f"a stream event is not a completion chunk: {_snippet(data, 80)}")
                if "error" in obj:
                    raise _Retryable(f"error in stream: {_snippet(json.dumps(obj['error']))}", 200)
                usage = obj.get("usage") or usage
                for choice in obj.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        raise broken(ep.url, f"a choice with index {_snippet(str(choice.get('index')), 20)} "
                                             "in the stream where one choice was asked for")
                    last = choice
                    emit_choice(choice)
            if enough():
                return Reply(ep.url, r.status_code, last or {}, usage, failed)
            if last is None or not last.get("finish_reason"):
                # llama_cpp.server ends a stream early this way when another request
                # arrives, unless started with --interrupt_requests False.
                raise _Retryable("stream ended without a finish_reason", 200)
            return Reply(ep.url, r.status_code, last, usage, failed)
