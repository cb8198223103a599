"""Real HTTP servers on 127.0.0.1 for tests and benchmarks; each is a context manager that
stops its server on exit.

- LlamaServer: llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) in a
  subprocess, serving a GGUF model (default: the embedded Gemma 3 270M). It takes text prompts
  and returns text, one request at a time.
- VLLMServer: vLLM's OpenAI-compatible API server (`python -m vllm.entrypoints.openai.api_server`)
  in a subprocess of the venv that has vLLM, serving a Hugging Face folder; token-id prompts,
  token ids in replies, and chat with the tokenizer of gemma_chat_tokenizer.
- FakeServer: a small stdlib HTTP server in a thread that speaks the vLLM flavour of
  /v1/completions (token-id prompts; replies with `token_ids` and `prompt_token_ids`, a stream's
  usage in a final chunk without choices, the end token included in the ids when it stops with
  finish_reason "stop") with a deterministic answer (fake_answer), and whose behaviour can be
  switched to a fault: "error500", "stall" (no reply until stopped), "drop" (connection closed
  mid-reply), "empty" (a reply without tokens, as a model that ends at once), "endless" (streams
  tokens past max_tokens until stopped), "keepalive" (sends only keep-alive bytes until stopped),
  and replies that break the protocol: "two_choices" (choices 0 and 1 interleaved, as n=2),
  "bad_utf8" (a byte that is not UTF-8 in the reply), "bad_usage" (usage counts 5 tokens more
  than sent), "bad_shape" (choices that are not objects), "endless_line" (flood_bytes of one
  line without a newline, then the connection closes), "gzip_bomb" (flood_bytes of zeros
  gzip-compressed about 1000x). `mode_for` maps a prompt's first id to a mode, so that one run
  can mix faults.
  It also answers /v1/chat/completions: one user message (text), read as its UTF-8 bytes in place
  of token ids; replies carry `message` / `delta` content, and `token_ids` unless chat_ids=False
  (a server that returns only text).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from inputs.models import resolve_model_path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port free now (another process may take it before it is used: see refused_port)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def refused_port():
    """A loopback port that refuses connections for the block: it is held, bound but not
    listening, so no other process can take it meanwhile."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        yield s.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` on a free loopback port."""

    def __init__(self, model_path: str | None = None, alias: str = "gemma3-270m", n_ctx: int = 2048,
                 threads: int = 1, start_timeout_s: float = 120.0):
        self.model_path = resolve_model_path(model_path)
        self.alias = alias
        self.n_ctx = n_ctx
        self.threads = threads
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    name = "llama_cpp.server"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", self.model_path, "--host", LOOPBACK,
                "--port", str(self.port), "--model_alias", self.alias, "--n_ctx", str(self.n_ctx),
                "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
                # Without this a new request cuts the running stream short.
                "--interrupt_requests", "False"]

    def start(self) -> "LlamaServer":
        # The port is free when chosen but only bound by the server later: should another process
        # take it meanwhile, the server exits at once and starts again on another port.
        for attempt in range(3):
            try:
                return self._start_once()
            except _PortTaken:
                if attempt == 2:
                    raise RuntimeError(f"{self.name}: three ports taken before it could bind them") from None

    def _start_once(self) -> "LlamaServer":
        self.port = free_port()
        self._log = tempfile.NamedTemporaryFile("w+", prefix="openai-server-", suffix=".log")
        # A session of its own: kill() ends the server's child processes too (vLLM's engine core).
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                if "address already in use" in tail.lower():
                    raise _PortTaken()
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"{self.name} not up after {self.start_timeout_s} s:\n{tail}")

    def log_tail(self, n: int = 2000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        with open(self._log.name) as f:
            return f.read()[-n:]

    def requests_answered(self) -> int:
        """Requests to /v1 answered so far: the lines of uvicorn's access log, written as a reply
        starts (for a non-streaming completion: once it is complete)."""
        if self._log is None:
            return 0
        with open(self._log.name, errors="replace") as f:
            return sum('"POST /v1/' in line for line in f)

    def kill(self) -> None:
        """Die at once, as a crashed server does (SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _PortTaken(Exception):
    """The server could not bind its port: another process took it first."""


# Gemma 3's chat format (the GGUF carries no chat template); BOS comes from the template, as
# vLLM tokenizes a rendered chat without adding special tokens.
GEMMA_CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>"
                       "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
                       "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def gemma_chat_tokenizer(out_dir: str, gguf: str | None = None) -> str:
    """A Hugging Face tokenizer folder (with GEMMA_CHAT_TEMPLATE) for a Gemma 3 GGUF, so that a
    server can render chats for the converted model. transformers' own rebuild from a GGUF splits
    Gemma 3 words into single characters; this one goes through a SentencePiece BPE model made
    from the GGUF's pieces, scores and types, and tokenizes as llama.cpp does (the demo prompts,
    whitespace runs, special tokens)."""
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as spm
    from tokenizers import AddedToken
    from tokenizers.processors import TemplateProcessing
    from transformers import GemmaTokenizer
    from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor

    fields = GGUFReader(resolve_model_path(gguf)).fields
    piece = spm.ModelProto.SentencePiece
    kinds = {1: piece.NORMAL, 2: piece.UNKNOWN, 3: piece.CONTROL, 4: piece.USER_DEFINED, 5: piece.UNUSED,
             6: piece.BYTE}     # GGUF token types
    model = spm.ModelProto()
    model.trainer_spec.model_type = spm.TrainerSpec.BPE
    model.trainer_spec.byte_fallback = True
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = False
    model.normalizer_spec.remove_extra_whitespaces = False
    special: dict[int, list[str]] = {piece.CONTROL: [], piece.USER_DEFINED: []}
    for text, score, kind in zip(*(fields[f"tokenizer.ggml.{k}"].contents() for k in ("tokens", "scores", "token_type"))):
        model.pieces.add(piece=text, score=score, type=kinds[kind])
        special.get(kinds[kind], []).append(text)
    with tempfile.NamedTemporaryFile(suffix=".model") as f:
        f.write(model.SerializeToString())
        f.flush()
        vocab, _, merges = SentencePieceExtractor(f.name).extract()
    tok = GemmaTokenizer(vocab=vocab, merges=merges)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in special[piece.CONTROL]], special_tokens=True)
    tok.add_tokens([AddedToken(t, normalized=False) for t in special[piece.USER_DEFINED]])
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                              special_tokens=[("<bos>", tok.bos_token_id)])
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    tok.save_pretrained(out_dir)
    return out_dir


class VLLMServer(LlamaServer):
    """`python -m vllm.entrypoints.openai.api_server` on a free loopback port, run by `python` (a
    venv's interpreter that has vLLM), serving the Hugging Face folder `model_dir` (float32, eager:
    it starts in about 40 s on 2 cores). With `tokenizer` it renders chats too; without, it takes
    token-id prompts only (--skip-tokenizer-init). Its KV cache is $VLLM_CPU_KVCACHE_SPACE GiB."""

    name = "vLLM's API server"

    def __init__(self, model_dir: str, python: str = sys.executable, tokenizer: str | None = None,
                 dtype: str = "float32", max_model_len: int = 2048, start_timeout_s: float = 300.0):
        super().__init__(start_timeout_s=start_timeout_s)
        self.model_path, self.python, self.tokenizer = model_dir, python, tokenizer
        self.dtype, self.max_model_len = dtype, max_model_len

    def command(self) -> list[str]:
        return [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_path,
                "--host", LOOPBACK, "--port", str(self.port), "--dtype", self.dtype,
                "--max-model-len", str(self.max_model_len), "--enforce-eager",
                *(["--tokenizer", self.tokenizer] if self.tokenizer else ["--skip-tokenizer-init"])]

    def stop(self) -> None:
        # vLLM's engine core runs in a child process: SIGTERM lets the server end it; whatever
        # of the server's session is left after that is killed.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        super().stop()


class _Listening(ThreadingHTTPServer):
    """The stdlib server with a listen backlog as a real server's (uvicorn: 2048), not 5: a burst
    of connections (64 requests at once) is accepted instead of SYNs dropped and resent 1 s later
    when the accepting thread is slow (a loaded machine)."""
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # A client that closes a connection (as on a reply too large) is not a server fault.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def fake_answer(prompt: list[int], n: int) -> list[int]:
    """The fake server's deterministic 'greedy' output for a prompt (ids 2..1001, never EOS)."""
    seed = sum(prompt) * 31 + len(prompt)
    return [(seed + 7 * i) % 1000 + 2 for i in range(n)]


FAKE_EOS = 1      # the fake model's end token


class FakeServer:
    """vLLM-like /v1/models and /v1/completions with switchable faults (attribute `mode`).
    stop_after=N: answers end with FAKE_EOS after N ids (finish_reason "stop"; not before
    min_tokens nor with ignore_eos unless honours_min_tokens is False); context=N: the server
    lowers max_tokens to N, as vLLM does to fit its context (finish_reason "length"); root: the
    model folder /v1/models names (vLLM's `root`)."""

    MODES = ("ok", "error500", "stall", "drop", "empty", "endless", "keepalive", "two_choices", "bad_utf8",
             "bad_usage", "bad_shape", "endless_line", "gzip_bomb")

    def __init__(self, model: str = "fake-model", token_delay_s: float = 0.0, stop_after: int | None = None,
                 context: int | None = None, honours_min_tokens: bool = True, root: str = "fake-model",
                 chat_ids: bool = True):
        self.model = model
        self.mode = "ok"
        self.token_delay_s = token_delay_s     # pause between streamed tokens
        self.stop_after = stop_after
        self.context = context
        self.honours_min_tokens = honours_min_tokens
        self.root = root
        self.chat_ids = chat_ids               # chat replies carry token_ids
        self.mode_for: dict[int, str] = {}     # first prompt id -> mode, over `mode`
        self.flood_bytes = 256 * 2**20         # endless_line / gzip_bomb: bytes of the (decompressed) reply
        self.bodies: list[dict] = []           # every completion (or chat) body received
        self.headers: list[dict] = []          # the headers of every request received
        self.in_flight = 0                     # completions being answered now
        self.max_in_flight = 0                 # the most at once so far
        self._count_lock = threading.Lock()
        self._release = threading.Event()      # ends stalls when the server stops
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def start(self) -> "FakeServer":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):      # keep test output quiet
                pass

            def do_GET(self):
                fake.headers.append(dict(self.headers))
                if self.path.rstrip("/") == "/v1/models":
                    self._json(200, {"object": "list", "data": [
                        {"id": fake.model, "object": "model", "root": fake.root, "max_model_len": 2048}]})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                path = self.path.rstrip("/")
                if path not in ("/v1/completions", "/v1/chat/completions"):
                    return self._json(404, {"error": "not found"})
                self.chat = path == "/v1/chat/completions"
                fake.bodies.append(body)
                fake.headers.append(dict(self.headers))
                with fake._count_lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    self._complete(body)
                finally:
                    with fake._count_lock:
                        fake.in_flight -= 1

            def _prompt(self, body) -> list[int] | None:
                if not self.chat:
                    prompt = body.get("prompt")
                    return prompt if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt) else None
                msgs = body.get("messages")
                if "prompt" in body or not (isinstance(msgs, list) and len(msgs) == 1
                                            and msgs[0].get("role") == "user" and isinstance(msgs[0].get("content"), str)):
                    return None
                return list(msgs[0]["content"].encode())

            def _choice(self, ids: list[int], finish, stream: bool) -> dict:
                text = "".join(f" t{t}" for t in ids)
                if not self.chat:
                    return {"index": 0, "text": text, "token_ids": ids, "finish_reason": finish}
                out = {"index": 0, ("delta" if stream else "message"): {"role": "assistant", "content": text},
                       "finish_reason": finish}
                if fake.chat_ids:
                    out["token_ids"] = ids
                return out

            def _complete(self, body):
                prompt = self._prompt(body)
                if prompt is None:
                    return self._json(400, {"error": "this server takes token-id prompts only" if not self.chat
                                            else "chat: one user message with text content"})
                mode = fake.mode_for.get(prompt[0], fake.mode) if prompt else fake.mode
                if mode in ("endless_line", "gzip_bomb"):
                    return self._flood(mode, bool(body.get("stream")))
                if fake.mode == "error500":
                    return self._json(500, {"error": "injected internal error"})
                if fake.mode == "stall":
                    fake._release.wait(600)
                    self.close_connection = True
                    return
                if fake.mode in ("endless", "keepalive"):
                    return self._forever(body)
                ids, finish = ([], "stop") if fake.mode == "empty" else self._answer(prompt, body)
                n_usage = len(ids) + 5 * (mode == "bad_usage")
                usage = {"prompt_tokens": len(prompt), "completion_tokens": n_usage,
                         "total_tokens": len(prompt) + n_usage}
                if not body.get("stream"):
                    time.sleep(fake.token_delay_s * len(ids))
                    if fake.mode == "drop":
                        self.close_connection = True
                        return
                    choice = self._choice(ids, finish, False)
                    if not self.chat:
                        choice["prompt_token_ids"] = prompt
                    choices = [choice, {**choice, "index": 1}] if mode == "two_choices" else [choice]
                    choices = [5] if mode == "bad_shape" else choices
                    return self._json(200, {"object": "chat.completion" if self.chat else "text_completion",
                                            "model": fake.model, "choices": choices, "usage": usage},
                                      bad_utf8=mode == "bad_utf8")
                self._start_chunked("text/event-stream")
                if self.chat:   # as vLLM: a first piece with the role and no tokens
                    self._event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                              "finish_reason": None}]})
                if not ids:  # only the closing event
                    self._event({"choices": [self._choice([], "stop", True)]})
                for i, t in enumerate(ids):
                    last = i == len(ids) - 1
                    choice = self._choice([t], finish if last else None, True)
                    if i == 0 and not self.chat:
                        choice["prompt_token_ids"] = prompt
                    self._event({"choices": [5] if mode == "bad_shape" else [choice]},
                                bad_utf8=mode == "bad_utf8" and i == 0)
                    if mode == "two_choices":
                        self._event({"choices": [{**self._choice([t + 1], finish if last else None, True),
                                                  "index": 1}]})
                    if fake.mode == "drop" and i == 0:
                        self.close_connection = True
                        return
                    if fake.token_delay_s:
                        time.sleep(fake.token_delay_s)
                if (body.get("stream_options") or {}).get("include_usage"):
                    self._event({"choices": [], "usage": usage})
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")

            def _answer(self, prompt: list[int], body: dict) -> tuple[list[int], str]:
                n = int(body.get("max_tokens", 16))
                if fake.context is not None and fake.context < n:
                    return fake_answer(prompt, fake.context), "length"
                stop = fake.stop_after
                if stop is not None and stop < n and not (fake.honours_min_tokens and (
                        body.get("ignore_eos") or stop < int(body.get("min_tokens") or 0))):
                    return fake_answer(prompt, stop) + [FAKE_EOS], "stop"
                return fake_answer(prompt, n), "length"

            def _forever(self, body: dict):
                """"endless": one more token every 10 ms, past max_tokens; "keepalive": keep-alive
                bytes only (SSE comments, or whitespace before a JSON reply). Until the client
                closes the request or the server stops."""
                stream = bool(body.get("stream"))
                self._start_chunked("text/event-stream" if stream else "application/json")
                ids = itertools.count(2)
                try:
                    while not fake._release.wait(0.01):
                        if fake.mode == "endless" and stream:
                            t = next(ids)
                            self._event({"choices": [{"index": 0, "text": f" t{t}", "token_ids": [t],
                                                      "finish_reason": None}]})
                        else:
                            self._chunk(b": keep-alive\n\n" if stream else b" ")
                except OSError:          # the client closed the request
                    pass
                self.close_connection = True

            def _flood(self, mode: str, stream: bool):
                """flood_bytes of one line without end: plain, or as gzip (about 1000x smaller)."""
                self._start_chunked("text/event-stream" if stream else "application/json",
                                    gzip=mode == "gzip_bomb")
                try:
                    if mode == "gzip_bomb":
                        for part in gzip_bomb(fake.flood_bytes):
                            self._chunk(part)
                    else:
                        self._chunk(b'data: {"choices": [{"index": 0, "text": "' if stream else b'{"choices": "')
                        block = b"a" * 2**16
                        for _ in range(fake.flood_bytes // len(block)):
                            if fake._release.is_set():
                                break
                            self._chunk(block)
                    self._chunk(b"")
                except OSError:          # the client closed the request
                    pass
                self.close_connection = True

            def _start_chunked(self, content_type: str, gzip: bool = False):
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                if gzip:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

            def _event(self, obj, bad_utf8: bool = False):
                data = f"data: {json.dumps(obj)}\n\n".encode()
                self._chunk(data.replace(b" t", b" \xff", 1) if bad_utf8 else data)

            def _chunk(self, data: bytes):
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _json(self, status: int, obj, bad_utf8: bool = False):
                data = json.dumps(obj).encode()
                if bad_utf8:
                    data = data.replace(b" t", b" \xff", 1)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = _Listening((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._release.set()
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@functools.lru_cache(maxsize=2)
def gzip_bomb(n_bytes: int) -> tuple[bytes, ...]:
    """n_bytes of zeros as gzip pieces (about 1000x smaller), made once per size."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(2**20)
    parts = [z.compress(block) for _ in range(n_bytes // len(block))] + [z.flush()]
    return tuple(p for p in parts if p)


def wait_for(predicate, timeout_s: float = 30.0, poll_s: float = 0.05) -> bool:
    """Poll until predicate() is true or the time is up; returns the last value."""
    deadline = time.monotonic() + timeout_s
    while not (ok := predicate()) and time.monotonic() < deadline:
        time.sleep(poll_s)
    return ok


if __name__ == "__main__":      # manual use: serve the embedded model until Ctrl-C
    with LlamaServer(threads=int(os.environ.get("THREADS", "2"))) as srv:
        print(srv.url, flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
