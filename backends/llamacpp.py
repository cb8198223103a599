"""llama.cpp backend: GGUF models in-process through llama-cpp-python (the embedded default).

A llama.cpp context is not thread-safe, so one engine thread owns it. generate() and stream()
hand requests to that thread and read the new ids from a per-request queue. The engine decodes
up to `n_parallel` sequences together in one llama_batch (continuous batching: a finished
sequence's slot takes the next waiting prompt at once), so concurrent Server streams share
decode steps; with n_parallel=1 requests simply run one after another.
Decoding is greedy (argmax of the logits). End-of-generation (EOG) tokens are every token that
llama.cpp's vocabulary marks as EOG (Gemma 3: <eos> and <end_of_turn>). They are banned (logit
set to -inf) before min_new_tokens ids exist, and always with ignore_eos, so that a forced-length
run really produces max_new_tokens ids instead of running on past an end marker.
Every request starts from an empty KV cache for its sequence (no prefix reuse between requests).
With `speculative=ngram` or `draft_model=PATH` (backends/speculative.py: prompt lookup, or a
second llama.cpp model) each generating sequence adds up to `num_draft_tokens` drafted ids after
its next id in the same llama_batch; the ids the target's own argmax confirms are kept, the KV
cache past them is dropped, and a stream gets them together.
"""
from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import llama_cpp
import numpy as np

from backends import llamacpp_cpu, speculative
from backends.base import Backend
from common.errors import HarnessError
from common.native import native_output_silenced
from inputs.models import resolve_model_path

log = logging.getLogger(__name__)

_DONE = object()           # end-of-request marker on a request's queue
_SCORE_CHUNK = 64          # positions per decode in score(): bounds the all-logits buffer
_backend_init_lock = threading.Lock()
_backend_initialised = False


def _ftype_name(ftype: int) -> str:
    """LLAMA_FTYPE_MOSTLY_Q4_K_M -> 'Q4_K_M' (the quantization type of the file)."""
    for name in dir(llama_cpp):
        if name.startswith("LLAMA_FTYPE_") and getattr(llama_cpp, name) == ftype:
            return name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").removeprefix("ALL_")
    return str(ftype)


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    # Streamed requests get each new id on `out` as it exists; others only the end marker, which
    # spares the waiting thread a wake-up per token. The end marker is _DONE, or an Exception.
    streamed: bool
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False   # set by an abandoned stream(); the engine frees its slot


@dataclass(eq=False)
class _Slot:
    seq_id: int
    req: _Request | None = None
    n_past: int = 0           # tokens of this sequence already in the KV cache
    next_token: int = -1      # last generated id, fed at the next step

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.req.prompt)


class LlamaCppBackend(Backend):
    name = "llamacpp"
    # The engine queues whatever arrives and keeps n_parallel sequences busy, so an Offline batch
    # only needs to be large enough to refill slots, and Server workers (concurrent streams) need
    # to be at least n_parallel; extra ones simply wait in the engine's queue.
    default_batch_size = 32
    default_num_workers = 8
    defaults = {
        "n_threads": 0,        # 0: all cores this process may use
        "n_ctx": 2048,         # tokens per sequence; must hold prompt + max_new_tokens
        "n_gpu_layers": 0,     # layers offloaded to a GPU build of llama.cpp; -1 = all
        "n_batch": 512,        # most tokens (prompt chunks + decode steps) per llama_decode call
        "n_parallel": 1,       # sequences decoded together (continuous batching)
        "seed": 0,             # recorded only: greedy decoding draws no random numbers
        "flash_attn": False,   # llama.cpp flash attention kernels
        "verbose": False,      # llama.cpp's own log on stderr
        # Extra ids that end generation, e.g. for a GGUF whose turn-end marker is not flagged EOG.
        "eos_ids": [],
        **speculative.OPTIONS,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        if o["n_threads"] < 0:
            raise HarnessError(f"llamacpp: n_threads must be >= 0 (0 = all cores), got {o['n_threads']}")
        if o["n_ctx"] < 8 or o["n_batch"] < 1:
            raise HarnessError(f"llamacpp: need n_ctx >= 8 and n_batch >= 1, got n_ctx={o['n_ctx']} "
                               f"n_batch={o['n_batch']}")
        if not 1 <= o["n_parallel"] <= o["n_batch"]:
            raise HarnessError(f"llamacpp: need 1 <= n_parallel <= n_batch, got n_parallel={o['n_parallel']} "
                               f"n_batch={o['n_batch']}")
        if self.params.max_new_tokens >= o["n_ctx"]:
            raise HarnessError(f"llamacpp: max_new_tokens={self.params.max_new_tokens} leaves no room for a "
                               f"prompt in n_ctx={o['n_ctx']}; raise it with --backend-arg n_ctx=N")
        try:
            self._extra_eos = {int(v) for v in o["eos_ids"]}
        except ValueError:
            raise HarnessError(f"llamacpp: eos_ids must be token ids separated by commas, got {o['eos_ids']}") from None
        self.n_threads = o["n_threads"] or len(os.sched_getaffinity(0))
        self.spec_kind = speculative.check_options(o, self.name)
        self.spec = speculative.SpecStats(self.spec_kind, o["num_draft_tokens"]) if self.spec_kind else None
        self._model = self._ctx = self._batch = self._drafter = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def load(self) -> None:
        if self.device != "cpu" and self.running_device() == "cpu":
            log.warning("--device %s: llama.cpp runs on the CPU here (n_gpu_layers=%d; a GPU build of llama.cpp "
                        "offloads layers by --backend-arg n_gpu_layers)", self.device, self.options["n_gpu_layers"])
        self.model_path = path = resolve_model_path(self.model_path)
        self._model = open_model(path, self.options)
        try:
            self._start(path)
        except BaseException:   # free the model, context and draft made so far
            self.close()
            raise

    def _start(self, path: str) -> None:
        o = self.options
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
        if o["n_ctx"] > n_ctx_train:
            log.warning("n_ctx=%d exceeds the model's training context %d", o["n_ctx"], n_ctx_train)

        self._ctx = open_context(self._model, o, self.n_threads)
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(o["n_batch"], 0, 1)

        # Every EOG id of the vocabulary (a few hundred thousand cheap calls, once).
        is_eog = llama_cpp.llama_vocab_is_eog
        if any(not 0 <= t < self.n_vocab for t in self._extra_eos):
            raise HarnessError(f"llamacpp: eos_ids {sorted(self._extra_eos)} outside the vocabulary (0..{self.n_vocab - 1})")
        eog = sorted({t for t in range(self.n_vocab) if is_eog(self._vocab, t)} | self._extra_eos)
        self.eos_token_ids = frozenset(eog)
        self._eog = np.array(eog, dtype=np.intp)
        self._drafter = speculative.llamacpp_drafter(self)

        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self._model, desc, len(desc))
        self._model_info = {"model_desc": desc.value.decode(errors="replace"),
                            "quantization": _ftype_name(llama_cpp.llama_model_ftype(self._model)),
                            "n_ctx_train": n_ctx_train, "n_vocab": self.n_vocab}

        self._slots = [_Slot(seq_id=i) for i in range(o["n_parallel"])]
        self._pending: deque[_Request] = deque()
        self._jobs: deque[tuple[Callable[[], Any], Future]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._dead: BaseException | None = None
        self._thread = threading.Thread(target=self._engine, name="llamacpp-engine", daemon=True)
        self._thread.start()
        log.info("llama.cpp: %s (%s), n_ctx=%d, n_parallel=%d, threads=%d, EOG ids %s",
                 self._model_info["model_desc"], path, o["n_ctx"], o["n_parallel"], self.n_threads, eog)

    def close(self) -> None:
        if self._thread is not None:
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            self._thread.join()
            self._thread = None
        if self._drafter is not None:
            self._drafter.close()
            self._drafter = None
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        with native_output_silenced(not self.options["verbose"]):
            if self._ctx is not None:
                llama_cpp.llama_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                llama_cpp.llama_model_free(self._model)
                self._model = None

    def running_dtype(self) -> str:
        return getattr(self, "_model_info", {}).get("quantization") or "gguf"

    def running_device(self) -> str:
        """llama.cpp places layers by n_gpu_layers, not --device: "cpu" unless a GPU build offloads some."""
        n = self.options["n_gpu_layers"]
        return "cpu" if n == 0 or not llama_cpp.llama_supports_gpu_offload() else f"gpu (n_gpu_layers={n})"

    def native_engine(self) -> tuple[str, str]:
        return llamacpp_cpu.describe_build(llama_cpp), llamacpp_cpu.CRASH_ADVICE

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update({"model_file": os.path.basename(self.model_path or ""), "n_ctx": self.options["n_ctx"],
                    "n_threads": self.n_threads, "llama_cpp_python": llama_cpp.__version__,
                    "llama_cpp_system_info": llamacpp_cpu.system_info(llama_cpp),
                    "eos_token_ids": sorted(self.eos_token_ids)})
        if self.spec is not None:
            out["speculative"] = self.spec.to_dict()
        out.update(getattr(self, "_model_info", {}))
        return out

    # ---- public calls ----------------------------------------------------------------------

    def generate(self, prompts: list[list[int]]) -> list[list[int]]:
        results: list[Any] = [None] * len(prompts)
        requests = []
        for i, prompt in enumerate(prompts):
            problem = self._check_prompt(prompt, self.params.max_new_tokens)
            if problem:
                results[i] = HarnessError(problem)
            else:
                requests.append((i, self._submit(prompt, streamed=False)))
        for i, req in requests:
            end = req.out.get()
            results[i] = end if isinstance(end, BaseException) else self.trim(req.generated)
        return results

    def stream(self, prompt: list[int]) -> Iterator[list[int]]:
        problem = self._check_prompt(prompt, self.params.max_new_tokens)
        if problem:
            raise HarnessError(problem)
        req = self._submit(prompt, streamed=True)
        try:
            while True:
                item, chunk = req.out.get(), []
                # Ids of one step (several with speculation), and any that arrived while the
                # consumer was busy, go out together.
                while isinstance(item, list):
                    chunk.extend(item)
                    item = None if req.out.empty() else req.out.get()
                if chunk:
                    yield chunk
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
        finally:
            req.cancelled = True  # no effect once finished; frees the slot if the consumer stopped early

    def score(self, ids: list[int]) -> list[float]:
        problem = self._check_prompt(ids, 0)
        if problem:
            raise HarnessError(problem)
        return self._run_job(lambda: self._score_now(ids))

    # ---- request plumbing ------------------------------------------------------------------

    def _check_prompt(self, prompt: list[int], n_new: int) -> str | None:
        if self._thread is None:
            raise HarnessError("llamacpp backend used before load() or after close()")
        if len(prompt) == 0:
            return "llamacpp: empty prompt (need at least one token id)"
        n_ctx = self.options["n_ctx"]
        if len(prompt) + n_new > n_ctx:
            return (f"llamacpp: prompt of {len(prompt)} tokens + max_new_tokens {n_new} exceeds n_ctx={n_ctx}; "
                    "raise it with --backend-arg n_ctx=N")
        lo, hi = min(prompt), max(prompt)
        if lo < 0 or hi >= self.n_vocab:  # llama.cpp would abort the whole process on these
            return f"llamacpp: token id {lo if lo < 0 else hi} outside the vocabulary (0..{self.n_vocab - 1})"
        return None

    def _submit(self, prompt: list[int], streamed: bool) -> _Request:
        req = _Request(list(prompt), streamed)
        with self._cond:
            if self._dead is not None:
                raise HarnessError(f"llamacpp engine stopped after an error: {self._dead}")
            self._pending.append(req)
            self._cond.notify()
        return req

    def _run_job(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the engine thread once no sequence is active; return its result."""
        fut: Future = Future()
        with self._cond:
            if self._dead is not None:
                raise HarnessError(f"llamacpp engine stopped after an error: {self._dead}")
            self._jobs.append((fn, fut))
            self._cond.notify()
        return fut.result()

    # ---- engine thread ---------------------------------------------------------------------

    def _engine(self) -> None:
        try:
            while True:
                job = None
                with self._cond:
                    while not (self._stopping or self._pending or self._jobs or self._active()):
                        self._cond.wait()
                    if self._stopping:
                        break
                    if self._jobs and not self._active():
                        job = self._jobs.popleft()
                    elif not self._jobs:  # a waiting job holds back new requests until it ran
                        for slot in self._slots:
                            if slot.req is None and self._pending:
                                slot.req, slot.n_past = self._pending.popleft(), 0
                if job is not None:
                    fn, fut = job
                    try:
                        fut.set_result(fn())
                    except BaseException as e:  # noqa: BLE001 - handed to the caller
                        fut.set_exception(e)
                elif self._active():
                    self._step()
        except BaseException as e:  # a bug or a llama.cpp failure: fail everything, never hang callers
            log.exception("llama.cpp engine failed")
            with self._cond:
                self._dead = e
        # Answer whatever is still waiting so no caller blocks forever.
        err = self._dead or HarnessError("llamacpp backend closed")
        with self._cond:
            for slot in self._slots:
                if slot.req is not None:
                    slot.req.out.put(err)
                    slot.req = None
            while self._pending:
                self._pending.popleft().out.put(err)
            while self._jobs:
                self._jobs.popleft()[1].set_exception(err)

    def _active(self) -> list[_Slot]:
        return [s for s in self._slots if s.req is not None]

    def _release(self, slot: _Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        if self._drafter is not None:
            self._drafter.release(slot.seq_id)
        slot.req, slot.n_past, slot.next_token = None, 0, -1

    def _step(self) -> None:
        """One llama_decode: a token (plus drafts) for every generating sequence, then prompt chunks."""
        for slot in self._active():
            if slot.req.cancelled:
                self._release(slot)
        batch, n, n_batch = self._batch, 0, self.options["n_batch"]
        # (slot, batch row whose logits pick its next id, drafted ids verified in the rows after it)
        outputs: list[tuple[_Slot, int, list[int]]] = []

        def add(token: int, pos: int, seq: int, want_logits: bool) -> None:
            nonlocal n
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
            batch.seq_id[n][0], batch.logits[n] = seq, want_logits
            n += 1

        active = self._active()
        generating = [s for s in active if not s.prefilling]
        drafts = {} if self._drafter is None else self._drafter.drafts(
            [(s.seq_id, s.req.prompt, s.req.generated) for s in generating])
        for slot in generating:
            # Room for every other generating sequence's next id stays in the batch.
            draft = drafts.get(slot.seq_id, [])[: max(0, n_batch - len(generating) - n + len(outputs))]
            outputs.append((slot, n, draft))
            for j, token in enumerate([slot.next_token, *draft]):
                add(token, slot.n_past + j, slot.seq_id, True)
        for slot in active:
            if slot.prefilling and n < n_batch:
                prompt = slot.req.prompt
                take = min(n_batch - n, len(prompt) - slot.n_past)
                for j in range(slot.n_past, slot.n_past + take):
                    add(prompt[j], j, slot.seq_id, j == len(prompt) - 1)
                slot.n_past += take
                if not slot.prefilling:
                    outputs.append((slot, n - 1, []))
        if n == 0:
            return
        batch.n_tokens = n
        t0 = time.perf_counter()
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if drafts:
            self.spec.verify_s += time.perf_counter() - t0
        if rc != 0:
            err = RuntimeError(f"llama_decode returned {rc} ({n} tokens, {len(active)} sequences)")
            for slot in active:
                slot.req.out.put(err)
                self._release(slot)
            return

        p = self.params
        done: list[_Request] = []
        for slot, row, draft in outputs:
            req = slot.req

            def pick(i: int) -> tuple[int, bool]:
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, row + i),
                                               shape=(self.n_vocab,))
                if p.ignore_eos or len(req.generated) < p.min_new_tokens:
                    logits[self._eog] = -np.inf   # llama.cpp's output buffer; rewritten by the next decode
                token = int(np.argmax(logits))
                req.generated.append(token)
                ended = token in self.eos_token_ids and not p.ignore_eos
                return token, ended or len(req.generated) >= p.max_new_tokens

            decoding = slot.next_token >= 0   # else the prompt's last row: the first id
            kept, n_accepted = speculative.accept(draft, pick)
            if self.spec is not None and decoding:
                self.spec.add(len(draft), n_accepted)
            if req.streamed:
                req.out.put(kept)
            if (kept[-1] in self.eos_token_ids and not p.ignore_eos) or len(req.generated) >= p.max_new_tokens:
                done.append(req)
                self._release(slot)
                continue
            if decoding:   # the next id and the accepted drafts are in the cache now; drop the rejected
                slot.n_past += 1 + n_accepted
                if draft:
                    llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, slot.n_past, -1)
            slot.next_token = kept[-1]
        for req in done:
            req.out.put(_DONE)

    def _score_now(self, ids: list[int]) -> list[float]:
        """Log-probabilities of ids[1:] from one causal pass (in chunks) on sequence 0."""
        batch, seq = self._batch, self._slots[0].seq_id
        chunk = min(_SCORE_CHUNK, self.options["n_batch"])
        out = [0.0]
        try:
            for start in range(0, len(ids) - 1, chunk):
                stop = min(start + chunk, len(ids) - 1)   # the last id's logits are never needed
                for k, j in enumerate(range(start, stop)):
                    batch.token[k], batch.pos[k], batch.n_seq_id[k] = ids[j], j, 1
                    batch.seq_id[k][0], batch.logits[k] = seq, True
                batch.n_tokens = stop - start
                rc = llama_cpp.llama_decode(self._ctx, batch)
                if rc != 0:
                    raise RuntimeError(f"llama_decode returned {rc} while scoring {len(ids)} tokens")
                rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx),
                                             shape=(stop - start, self.n_vocab)).astype(np.float64)
                top = rows.max(axis=1, keepdims=True)
                lse = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
                targets = np.asarray(ids[start + 1: stop + 1])
                out.extend((rows[np.arange(len(targets)), targets] - lse).tolist())
        finally:
            llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)
        return out


def open_model(path: str, o: dict[str, Any]):
    """A llama.cpp model from a GGUF file (options n_gpu_layers, verbose); HarnessError when it is
    not one llama.cpp can load (a folder or a non-GGUF file is named before llama.cpp sees it)."""
    global _backend_initialised
    if os.path.isdir(path):
        raise HarnessError(f"the llamacpp backend needs a .gguf file, got the folder {path}")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise HarnessError(f"cannot read model file {path}: {e.strerror}") from None
    if magic != b"GGUF":
        raise HarnessError(f"{path} is not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    with _backend_init_lock:
        if not _backend_initialised:
            llama_cpp.llama_backend_init()
            _backend_initialised = True
            log.info("%s", llamacpp_cpu.describe_build(llama_cpp))
    mparams = llamacpp_cpu.model_params(llama_cpp, log)
    mparams.n_gpu_layers = 0x7FFFFFFF if o["n_gpu_layers"] < 0 else o["n_gpu_layers"]
    with native_output_silenced(not o["verbose"]):
        model = llama_cpp.llama_model_load_from_file(path.encode(), mparams)
    if not model:
        raise HarnessError(f"llama.cpp cannot load {path}: not a valid GGUF model (corrupt, truncated "
                           "or an unsupported architecture); run with --backend-arg verbose=1 for details")
    return model


def open_context(model, o: dict[str, Any], n_threads: int):
    """A context of n_parallel sequences with separate KV streams (kv_unified off), each of n_ctx."""
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = o["n_ctx"] * o["n_parallel"]
    cparams.n_seq_max = o["n_parallel"]
    cparams.kv_unified = False
    cparams.n_batch = cparams.n_ubatch = o["n_batch"]
    cparams.n_threads = cparams.n_threads_batch = n_threads
    cparams.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if o["flash_attn"]
                               else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    cparams.no_perf = True
    with native_output_silenced(not o["verbose"]):
        ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        raise HarnessError(f"llama.cpp cannot create a context with n_ctx={o['n_ctx']} x n_parallel="
                           f"{o['n_parallel']} (out of memory?); lower n_ctx or n_parallel")
    return ctx

