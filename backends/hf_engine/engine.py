"""SlotEngine: the continuous-batching loop (admission, prefill groups, decode steps, CUDA graph
capture) over the slot cache; one background thread owns the model.

Admission: an idle engine prefills what arrives at once. While slots decode, waiting requests
are prefilled before the next step, in groups of up to `prefill_tokens` prompt tokens; with
`prefill_wait_ms` they are left for later steps until the oldest has waited that long, or until
they fill a prefill group or the free slots. Server arrivals (about one per decode step) then
share one eager prefill forward, whose host cost is paid per forward, not per prompt; the
decode steps go on meanwhile, so the wait delays only the new requests' first token.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Iterator

import torch
import torch.nn.attention

from backends.base import GenerationParams
from backends.hf_engine.attention import fp8_decode, prefill_mode, register_attention, sdpa_backends
from backends.hf_engine.cache import Request, SlotCache
from backends.hf_engine.fused import fuse_elementwise, unfuse_elementwise
from backends.hf_engine.stats import add, new_stats, tick
from common.errors import HarnessError

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("llama",)


def supports(model) -> bool:
    cfg = model.config
    return (cfg.model_type in SUPPORTED_MODEL_TYPES and hasattr(model, "model") and hasattr(model, "lm_head")
            and not getattr(cfg, "sliding_window", None))


class SlotEngine:
    def __init__(self, model, n_slots: int, cache_len: int, params: GenerationParams,
                 eos_ids: frozenset[int], cuda_graphs: bool = True, kv_bucket: int = 128,
                 prefill_tokens: int = 8192, stream_interval: int = 1, decode_sdpa: str = "auto",
                 compile: str = "off", kv_fp8: str | None = None, kv_static_scale: float | None = None,
                 prefill_wait_ms: float = 0.0, fuse_fp8: bool = False):
        """kv_fp8: None | "fake" | "real" (see SlotCache); kv_static_scale: the per_tensor fp8
        scale (None: one scale per token and KV head). prefill_wait_ms: while slots decode, a new
        request waits up to this long for others to share its prefill (see _defer); 0: none.
        fuse_fp8: with compile, RMSNorm and SiLU*up feeding fp8 linears quantize their output in
        the compiled kernel (backends/hf_engine/fused.py); False: the linears quantize it."""
        self.model = model
        self.decoder = model.model
        if model.config._attn_implementation == "sdpa":
            register_attention(model)
        self.params = params
        self.eos_ids = frozenset() if params.ignore_eos else frozenset(eos_ids)
        self.n_slots = n_slots
        self.cache_len = cache_len
        self.kv_bucket = max(1, kv_bucket)
        self.reschedule(prefill_tokens, stream_interval, prefill_wait_ms)
        self.decode_sdpa = sdpa_backends(decode_sdpa)
        self.device = model.get_input_embeddings().weight.device
        cfg = model.config
        n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        dtype = model.get_input_embeddings().weight.dtype
        real_fp8 = kv_fp8 == "real"
        store = torch.uint8 if real_fp8 else dtype   # fp8 codes live in uint8 (see quantization.fp8_kv)
        kv = []
        shape = (n_slots, n_kv, cache_len, head_dim)
        try:
            for layer in self.decoder.layers:
                dev = layer.self_attn.k_proj.weight.device
                entry = (torch.zeros(shape, dtype=store, device=dev), torch.zeros(shape, dtype=store, device=dev))
                if real_fp8:   # scales: one per token and KV head, or the static one (None here)
                    entry += tuple(torch.ones(shape[:3], dtype=torch.float32, device=dev)
                                   if kv_static_scale is None else None for _ in range(2))
                kv.append(entry)
        except torch.cuda.OutOfMemoryError:
            kv.clear()
            gib = 2 * len(self.decoder.layers) * n_slots * n_kv * cache_len * head_dim * store.itemsize / 2**30
            raise HarnessError(f"the KV cache ({n_slots} slots x {cache_len} positions = {gib:.0f} GiB) does not "
                               "fit in GPU memory: lower --backend-arg batch_size or max_seq_len") from None
        self.cache = SlotCache(kv, fp8=kv_fp8, static_scale=kv_static_scale)
        # Decode-step state, static so CUDA graphs can read and update it in place.
        dev = self.device
        self.ids = torch.zeros((n_slots, 1), dtype=torch.long, device=dev)      # next input token
        self.pos = torch.zeros((n_slots, 1), dtype=torch.long, device=dev)      # its cache position
        self.count = torch.zeros((n_slots,), dtype=torch.long, device=dev)      # tokens generated
        self.next = torch.zeros((n_slots,), dtype=torch.long, device=dev)       # step output
        self.rows = torch.arange(n_slots, device=dev)
        self.arange_kv = torch.arange(cache_len, device=dev)
        vocab = model.get_output_embeddings().weight.shape[0]
        out_dev = model.get_output_embeddings().weight.device
        self.eos_mask = torch.zeros(vocab, dtype=torch.bool, device=out_dev)
        for e in self.eos_ids:
            if e < vocab:
                self.eos_mask[e] = True
        multi_device = len({kv_[0].device for kv_ in kv}) > 1
        if compile == "auto":
            compile = "inductor" if self.device.type == "cuda" and not multi_device else "off"
        self.fused = compile != "off" and fuse_elementwise(model, compile, quantize=fuse_fp8)
        if compile != "off" and not self.fused:
            log.warning("option compile: not a Llama-style decoder; running eagerly")
        self.use_graphs = cuda_graphs and self.device.type == "cuda" and not multi_device
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.graph_pool = None
        # Host mirror of the slots.
        self.slot_req: list[Request | None] = [None] * n_slots
        self.host_pos = [0] * n_slots
        self.pending: collections.deque[Request] = collections.deque()
        # Where the engine thread's time goes (host wall clock; each prefill and each decode step
        # ends in a device-to-host copy, so the GPU work is inside these times); see stats.py.
        self.stats = new_stats()
        self.idle_since: float | None = None  # perf_counter when the current idle wait began
        self.wakeup = threading.Condition()
        self.closing = False
        self.failed: Exception | None = None
        self.thread = threading.Thread(target=self._loop, name="hf-slot-engine", daemon=True)
        self.thread.start()

    # ---- public API (any thread) --------------------------------------------------------
    SCHEDULE = ("prefill_tokens", "stream_interval", "prefill_wait_ms")

    def reschedule(self, prefill_tokens: int, stream_interval: int, prefill_wait_ms: float):
        """Set the options in SCHEDULE; the engine reads them at every step, so a benchmark may
        change them between runs without rebuilding the cache or recapturing graphs."""
        self.prefill_tokens = max(1, prefill_tokens)
        self.stream_interval = max(1, stream_interval)
        self.prefill_wait_ms = max(0.0, prefill_wait_ms)

    def submit(self, prompts: list[list[int]]) -> list[Request]:
        """Queue requests (all at once, so the engine can prefill them together)."""
        for prompt in prompts:
            if not prompt:
                raise HarnessError("empty prompt (no tokens)")
            if len(prompt) + self.params.max_new_tokens > self.cache_len:
                raise HarnessError(f"prompt of {len(prompt)} tokens + max_new_tokens "
                                   f"{self.params.max_new_tokens} exceeds the KV cache length "
                                   f"{self.cache_len} (option max_seq_len)")
        if self.failed is not None:
            raise self.failed
        if self.closing:
            raise HarnessError("the hf slot engine is closed")
        reqs = [Request(prompt=list(p)) for p in prompts]
        with self.wakeup:
            self.pending.extend(reqs)
            self.wakeup.notify()
        return reqs

    def snapshot(self) -> dict:
        """A copy of `stats` that counts an idle wait in progress up to now (a run that starts
        while the engine waits counts only its own part of that wait)."""
        with self.wakeup:
            out = dict(self.stats)
            if self.idle_since is not None:
                out["idle_s"] += time.perf_counter() - self.idle_since
        return out

    def stream(self, prompt: list[int]) -> Iterator[list[int]]:
        yield from self.chunks(self.submit([prompt])[0])

    def collect(self, reqs: list[Request]) -> list[list[int]]:
        """Wait for submitted requests; their generated ids in order."""
        outs = []
        for r in reqs:
            outs.append([t for chunk in self.chunks(r) for t in chunk])
        return outs

    @staticmethod
    def chunks(req: Request) -> Iterator[list[int]]:
        """A submitted request's ids as they are produced."""
        while (chunk := req.chunks.get()) is not None:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk

    def close(self):
        """Stop after the requests already submitted are done, then free the cache."""
        with self.wakeup:
            self.closing = True
            self.wakeup.notify()
        self.thread.join()
        if self.fused:
            unfuse_elementwise(self.model)
        self.graphs.clear()
        self.cache.kv = []

    # ---- engine thread ------------------------------------------------------------------
    def _loop(self):
        try:
            with torch.inference_mode():
                while True:
                    if not self._admit():
                        return
                    if any(r is not None for r in self.slot_req):
                        self._decode_step()
        except Exception as e:  # fail every waiting caller rather than hang them
            log.exception("hf slot engine failed")
            self.failed = e
            for r in self.slot_req:
                if r is not None:
                    r.chunks.put(e)
            with self.wakeup:
                while self.pending:
                    self.pending.popleft().chunks.put(e)

    def _admit(self) -> bool:
        """Move waiting requests into free slots (prefilling them). False: engine closing."""
        free = [i for i, r in enumerate(self.slot_req) if r is None]
        if not free:
            return True
        idle = len(free) == self.n_slots
        with self.wakeup:
            if idle and not self.pending and not self.closing:
                self.idle_since = time.perf_counter()
                while not self.pending and not self.closing:
                    self.wakeup.wait()  # idle: wait for work
                self.stats["idle_s"] += time.perf_counter() - self.idle_since
                self.idle_since = None
            if self.closing and idle and not self.pending:
                return False  # closing finishes the work already submitted first
            if not self.pending:
                return True
            if not idle and self._defer(len(free)):
                self.stats["admit_deferred"] += 1
                return True
            new = [self.pending.popleft() for _ in range(min(len(free), len(self.pending)))]
        # Similar prompt lengths together so prefill padding is small.
        new.sort(key=lambda r: len(r.prompt), reverse=True)
        group: list[Request] = []
        for req in new:
            req.slot = free.pop(0)
            group.append(req)
            width = max(len(r.prompt) for r in group)
            if len(group) * width >= self.prefill_tokens:
                self._prefill(group)
                group = []
        if group:
            self._prefill(group)
        return True

    def _defer(self, n_free: int) -> bool:
        """Whether the waiting requests wait for more (the active slots decode meanwhile, so
        nothing stalls): only with prefill_wait_ms, while the oldest has waited less than that and
        they fill neither a prefill group nor the free slots. Server arrivals then share one
        prefill forward instead of paying its fixed host cost each. Caller holds `wakeup`."""
        if self.prefill_wait_ms <= 0 or self.closing or len(self.pending) >= n_free:
            return False
        if len(self.pending) * max(len(r.prompt) for r in self.pending) >= self.prefill_tokens:
            return False
        return 1000 * (time.perf_counter() - self.pending[0].t_submit) < self.prefill_wait_ms

    def _logits_to_token(self, logits: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """Greedy choice; EOS is forbidden while fewer than min_new_tokens exist."""
        if self.eos_ids and self.params.min_new_tokens > 0:
            block = (count < self.params.min_new_tokens).to(logits.device)
            logits = logits.masked_fill(block[:, None] & self.eos_mask[None, :], float("-inf"))
        return logits.argmax(-1)

    def prefill_forward(self, ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The decoder over right-padded prompts `ids` (n, width), writing their keys/values into
        cache rows `rows`; each prompt attends causally within itself. Returns the hidden states."""
        n, width = ids.shape
        pos = torch.arange(width, device=ids.device).expand(n, width)
        causal = torch.ones((width, width), dtype=torch.bool, device=ids.device).tril()
        self.cache.rows, self.cache.pos, self.cache.kv_len = rows, pos, 0
        prefill_mode.causal = True
        try:
            return self.decoder(input_ids=ids, position_ids=pos, attention_mask=causal.expand(n, 1, width, width),
                                past_key_values=self.cache, use_cache=True).last_hidden_state
        finally:
            prefill_mode.causal = False

    def _prefill(self, group: list[Request]):
        start = tick()
        n, width = len(group), max(len(r.prompt) for r in group)
        ids = torch.zeros((n, width), dtype=torch.long)
        lens = torch.tensor([len(r.prompt) for r in group])
        for i, r in enumerate(group):
            ids[i, :len(r.prompt)] = torch.tensor(r.prompt)  # right padding: pads come after
        dev = self.device
        ids, lens = ids.to(dev), lens.to(dev)
        rows = torch.tensor([r.slot for r in group], device=dev)
        hidden = self.prefill_forward(ids, rows)
        last = hidden[torch.arange(n, device=hidden.device), (lens - 1).to(hidden.device)]
        logits = self.model.lm_head(last).float()
        first = self._logits_to_token(logits, torch.zeros(n, dtype=torch.long))
        first = first.to(dev)
        self.ids[rows, 0] = first
        self.pos[rows, 0] = lens
        self.count[rows] = 1
        t_sync = time.perf_counter()
        first = first.tolist()
        self.stats["prefill_launch_s"] += t_sync - start[0]
        add(self.stats, "prefill", start)
        self.stats["prefill_tokens"] += sum(len(r.prompt) for r in group)
        self.stats["prefill_groups"] += 1
        self.stats["prefill_prompts"] += n
        self.stats["admit_wait_s"] += sum(start[0] - r.t_submit for r in group)
        start = tick()
        for r, tok in zip(group, first):
            self.slot_req[r.slot] = r
            self.host_pos[r.slot] = len(r.prompt)
            self._emit(r, tok)
        add(self.stats, "emit", start)

    def _emit(self, req: Request, tok: int):
        """Record one token; hand out a chunk for the first token, then every stream_interval
        tokens and at the end (each chunk wakes a consumer thread: with hundreds of streams,
        per-token wake-ups cost more CPU than the decode step leaves)."""
        req.generated.append(tok)
        n = len(req.generated)
        done = n >= self.params.max_new_tokens or tok in self.eos_ids
        if n == 1 or done or n - req.sent >= self.stream_interval:
            req.chunks.put(req.generated[req.sent:])
            req.sent = n
        if done:
            req.chunks.put(None)
            self.slot_req[req.slot] = None
            self.host_pos[req.slot] = 0

    def _step_body(self, nb: int, kv_len: int):
        """One decode step for slots 0..nb-1 attending to kv_len positions (graph-capturable)."""
        pos = self.pos[:nb]
        self.cache.rows, self.cache.pos, self.cache.kv_len = self.rows[:nb], pos, kv_len
        if self.cache.fp8 == "real":
            fp8_decode.cache = self.cache
            self.cache.lengths = pos[:, 0] + 1
        mask = (self.arange_kv[:kv_len][None, :] <= pos)[:, None, None, :]  # (nb, 1, 1, kv_len)
        with torch.nn.attention.sdpa_kernel(self.decode_sdpa):
            hidden = self.decoder(input_ids=self.ids[:nb], position_ids=pos, attention_mask=mask,
                                  past_key_values=self.cache, use_cache=True).last_hidden_state
        logits = self.model.lm_head(hidden[:, -1]).float()
        tok = self._logits_to_token(logits, self.count[:nb]).to(self.device)
        self.next[:nb].copy_(tok)
        self.ids[:nb, 0].copy_(tok)
        # Idle slots keep stepping; clamp so their (ignored) writes stay inside the cache.
        self.pos[:nb].add_(1).clamp_(max=self.cache_len - 1)
        self.count[:nb].add_(1)

    def _decode_step(self):
        start = tick()
        active = [i for i, r in enumerate(self.slot_req) if r is not None]
        nb = 1
        while nb <= active[-1]:
            nb *= 2
        nb = min(nb, self.n_slots)
        longest = max(self.host_pos[i] for i in active) + 1
        kv_len = min(-(-longest // self.kv_bucket) * self.kv_bucket, self.cache_len)
        if self.use_graphs:
            graph = self.graphs.get((nb, kv_len)) or self._capture(nb, kv_len)
            if graph is not None:
                graph.replay()
            else:
                self._step_body(nb, kv_len)
        else:
            self._step_body(nb, kv_len)
        t_sync = time.perf_counter()
        toks = self.next[:nb].tolist()  # the one host sync per step
        self.stats["decode_launch_s"] += t_sync - start[0]
        add(self.stats, "decode", start)
        self.stats["decode_steps"] += 1
        start = tick()
        for i in active:
            self.host_pos[i] += 1
            self._emit(self.slot_req[i], toks[i])
        add(self.stats, "emit", start)

    def _capture(self, nb: int, kv_len: int):
        """Capture the step as a CUDA graph (after one eager warm-up); None if capture fails."""
        state = [t.clone() for t in (self.ids, self.pos, self.count, self.next)]
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self._step_body(nb, kv_len)  # warm-up: kernels, cuBLAS workspaces, allocator
            torch.cuda.current_stream().wait_stream(stream)
            for t, saved in zip((self.ids, self.pos, self.count, self.next), state):
                t.copy_(saved)
            if self.graph_pool is None:
                self.graph_pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.graph_pool):
                self._step_body(nb, kv_len)
        except Exception as e:  # run eagerly rather than fail the benchmark
            log.warning("CUDA graph capture failed (%s); decoding eagerly", f"{type(e).__name__}: {e}"[:300])
            self.use_graphs = False
            for t, saved in zip((self.ids, self.pos, self.count, self.next), state):
                t.copy_(saved)
            return None
        for t, saved in zip((self.ids, self.pos, self.count, self.next), state):
            t.copy_(saved)  # capture does not run kernels, but keep state exact anyway
        self.graphs[(nb, kv_len)] = graph
        log.debug("captured decode graph slots=%d kv_len=%d", nb, kv_len)
        return graph
