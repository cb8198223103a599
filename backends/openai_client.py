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


class RequestError(RuntimeError):
    """A request failed on every endpoint it was tried on; the message names each one and why."""

    def __init__(self, message: str, attempts: list[Attempt] | None = None):
        super().__init__(message)
        self.attempts = attempts or []


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
                 pool_size: int, api_key: str = "", api: str = "completions"):
        # A bearer token, where given, replaces credentials written in the URLs.
        self.endpoints = [make_endpoint(u) for u in urls]
        if api_key:
            for ep in self.endpoints:
                ep.auth = None
        self.path = ROUTES[api]
        self.deadline_s = deadline_s
        self.balance = balance
        self.failover = failover
        self._rr = itertools.count()
        # Connect and per-read timeout: a stalled server fails the request after timeout_s.
        # pool=None: waiting for a free connection is queueing, not a failure. A whole attempt is
        # bounded by deadline_s as well, since a server that trickles bytes never trips a read timeout.
        # Proxies from the environment apply to remote servers only: a loopback server is reached
        # directly (httpx would send it to HTTP_PROXY unless NO_PROXY names it).
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, pool=None),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
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

    # -- start-up checks -------------------------------------------------------------------
    async def models(self, ep: Endpoint) -> list[dict]:
        r = await self.client.get(ep.url + "/v1/models", auth=ep.auth)
        r.raise_for_status()
        return [m for m in r.json().get("data", []) if isinstance(m, dict) and "id" in m]

    async def post_once(self, ep: Endpoint, body: dict) -> httpx.Response:
        """One non-streaming request to one endpoint, no failover (capability probes)."""
        return await self._within_deadline(self.client.post(ep.url + self.path, json=body, auth=ep.auth))

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

    @staticmethod
    async def _check_status(ep: Endpoint, r: httpx.Response) -> None:
        if r.status_code == 200:
            return
        body = _snippet((await r.aread()).decode(errors="replace"))
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
        r = await self.client.post(ep.url + self.path, json=body, auth=ep.auth,
                                   timeout=self._complete_timeout)
        await self._check_status(ep, r)
        data = r.json()
        if "error" in data or not data.get("choices"):
            raise _Retryable(f"no choices in reply: {_snippet(r.text)}", r.status_code)
        return Reply(ep.url, r.status_code, data["choices"][0], data.get("usage"), failed)

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
            async for line in r.aiter_lines():
                if enough():
                    return Reply(ep.url, r.status_code, last or {}, usage, failed)
                if not line.startswith("data:"):
                    continue        # SSE comments, keep-alives, blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                obj = json.loads(data)
                if "error" in obj:
                    raise _Retryable(f"error in stream: {_snippet(json.dumps(obj['error']))}", 200)
                usage = obj.get("usage") or usage
                for choice in obj.get("choices") or []:
                    last = choice
                    emit_choice(choice)
            if enough():
                return Reply(ep.url, r.status_code, last or {}, usage, failed)
            if last is None or not last.get("finish_reason"):
                # llama_cpp.server ends a stream early this way when another request
                # arrives, unless started with --interrupt_requests False.
                raise _Retryable("stream ended without a finish_reason", 200)
            return Reply(ep.url, r.status_code, last, usage, failed)
