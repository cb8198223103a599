"""Continuous batching over a static, slot-based KV cache, for the `hf` backend.

Why: plain `model.generate` decodes one padded batch until its longest member ends, grows a
dynamic KV cache by concatenation, and pays Python overhead per layer per step. Here
- the KV cache is allocated once: `n_slots` rows of `cache_len` positions (sized to the real
  prompt + output lengths), each request owning one row ("slot") from prefill to its end;
- a finished request frees its slot at once and a waiting one is prefilled into it, so the batch
  stays full (the Offline queue and concurrent Server streams go through the same loop);
- attention reads the cache only up to the next multiple of `kv_bucket` past the longest
  sequence, not the whole allocation;
- on a GPU the decode step (model forward, greedy argmax, bookkeeping) is captured once per
  (active slots rounded up to a power of two, kv bucket) as a CUDA graph and replayed;
- optionally (`compile`) RMSNorm, RoPE and SiLU*up run as torch.compile'd fused kernels.

The model's own modules do all the maths (embedding, RoPE, MLP, norms, SDPA attention): this
module only supplies a cache object (`update()` writes into the slot rows) and explicit masks.
So it is limited to model types whose decoder takes a 4D mask as is (the Llama family).
One background thread owns the model; callers submit requests and wait on queues.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.attention

from backends.base import GenerationParams
from harness.errors import HarnessError

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("llama",)


ATTN_NAME = "slots_sdpa"

# Set by the engine thread around a prefill forward: each prompt then attends causally within
# itself (prompts are right-padded, so no real token sees a pad), and SDPA can take its causal
# kernels (flash / cuDNN), which need no mask. Thread-local: generate()/score() on other threads
# keep their padding masks.
_prefill = threading.local()


def _slots_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA, with two shortcuts for the slots engine:
    - prefill (engine thread, see `_prefill`): causal SDPA without a mask;
    - one-token decode steps of grouped-query models: the query heads that share a KV head are
      folded into the query-length axis, so the cache is read once instead of being copied per
      query head (what SDPA with a mask does otherwise)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, h, q_len, d = query.shape
    if q_len > 1 and getattr(_prefill, "causal", False):
        return sdpa_attention_forward(module, query, key, value, None, scaling=scaling, is_causal=True, **kwargs)
    n_kv = key.shape[1]
    if q_len != 1 or n_kv == h or attention_mask is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    q = query.view(b, n_kv, h // n_kv, d)  # query head i uses KV head i // groups
    out = torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(b, 1, h, d), None


def _register_attention(model):
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, _slots_attention)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)  # score()/generate() build masks as for sdpa
    model.config._attn_implementation = ATTN_NAME


def _sdpa_backends(name: str) -> list:
    """SDPA kernels allowed in decode steps: "auto" (PyTorch's choice) or one of
    efficient, cudnn, math (flash takes no mask, so it is not offered)."""
    from torch.nn.attention import SDPBackend

    choices = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
               "math": SDPBackend.MATH}
    if name == "auto":
        return [SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION,
                SDPBackend.MATH]
    if name not in choices:
        raise HarnessError(f"option decode_sdpa must be auto, {', '.join(choices)}; got '{name}'")
    return [choices[name]]


def _rms_norm(x, weight, eps: float):
    dtype = x.dtype
    x = x.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def _silu_mul(gate, up):
    return torch.nn.functional.silu(gate) * up


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


class _Fused:
    """A compiled element-wise function; the plain one after any compile/run error."""

    def __init__(self, fn, backend: str):
        self.fn = fn
        self.compiled = torch.compile(fn, backend=backend, dynamic=None)
        self.ok = True

    def __call__(self, *args):
        if self.ok:
            try:
                return self.compiled(*args)
            except Exception as e:
                if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
                    raise  # the capture falls back to eager decoding as a whole
                self.ok = False
                log.warning("torch.compile of %s failed (%s); running it eagerly", self.fn.__name__,
                            f"{type(e).__name__}: {e}"[:300])
        return self.fn(*args)


_FUSED: dict[str, dict[str, _Fused]] = {}  # backend -> function name -> compiled


def fuse_elementwise(model, backend: str) -> bool:
    """Route the decoder's RMSNorm, rotary embedding and SiLU*up through torch.compile'd
    functions (one kernel each instead of 2-12 un-fused ones per call; matmuls and attention stay
    as they are). Same maths, in the same dtypes. backend: an inductor / "eager" torch.compile
    backend. False when the model's modules are not the expected Llama ones."""
    import sys

    layers = model.model.layers
    mod = sys.modules[type(layers[0].self_attn).__module__]
    if not (hasattr(mod, "apply_rotary_pos_emb") and all(
            type(getattr(l, n)).__name__.endswith("RMSNorm") for l in layers
            for n in ("input_layernorm", "post_attention_layernorm"))):
        return False
    if backend not in _FUSED:
        _FUSED[backend] = {fn.__name__: _Fused(fn, backend) for fn in (_rms_norm, _silu_mul, _rope)}
    fused = _FUSED[backend]
    rms, silu_mul = fused["_rms_norm"], fused["_silu_mul"]

    def norm_forward(norm):
        def forward(h):
            return rms(h, norm.weight, float(norm.variance_epsilon))
        forward.fused = True
        return forward

    def mlp_forward(mlp):
        def forward(x):
            return mlp.down_proj(silu_mul(mlp.gate_proj(x), mlp.up_proj(x)))
        forward.fused = True
        return forward

    norms = [getattr(l, n) for l in layers for n in ("input_layernorm", "post_attention_layernorm")]
    if type(model.model.norm).__name__.endswith("RMSNorm"):
        norms.append(model.model.norm)
    for norm in norms:
        norm.forward = norm_forward(norm)
    for layer in layers:
        if getattr(layer.mlp.config, "hidden_act", "") == "silu" and hasattr(layer.mlp, "gate_proj"):
            layer.mlp.forward = mlp_forward(layer.mlp)
    if not isinstance(mod.apply_rotary_pos_emb, _Fused):
        _ORIGINAL_ROPE[mod] = mod.apply_rotary_pos_emb
    mod.apply_rotary_pos_emb = fused["_rope"]  # module-wide: the attention forward calls it by name
    return True


_ORIGINAL_ROPE: dict = {}  # modeling module -> its own apply_rotary_pos_emb


def unfuse_elementwise(model):
    """Undo fuse_elementwise."""
    import sys

    for m in model.model.modules():
        if getattr(vars(m).get("forward"), "fused", False):
            del m.forward
    mod = sys.modules[type(model.model.layers[0].self_attn).__module__]
    if mod in _ORIGINAL_ROPE:
        mod.apply_rotary_pos_emb = _ORIGINAL_ROPE.pop(mod)


def supports(model) -> bool:
    cfg = model.config
    return (cfg.model_type in SUPPORTED_MODEL_TYPES and hasattr(model, "model") and hasattr(model, "lm_head")
            and not getattr(cfg, "sliding_window", None))


@dataclass
class Request:
    prompt: list[int]
    chunks: queue.Queue = field(default_factory=queue.Queue)  # lists of ids, then None (or an Exception)
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # how many of `generated` went out as chunks
    slot: int = -1


class _SlotCache:
    """Duck-typed transformers Cache: the attention layers call update(k, v, layer_idx)."""

    def __init__(self, layers_kv: list[tuple[torch.Tensor, torch.Tensor]]):
        self.kv = layers_kv
        self.rows: torch.Tensor | None = None  # (n,) slot index of each batch row
        self.pos: torch.Tensor | None = None   # (n, T) cache position of each new token (decode)
        self.kv_len = 0                        # decode: attend to cache[:, :, :kv_len]; 0 = prefill

    def update(self, key, value, layer_idx, *args, **kwargs):
        k_cache, v_cache = self.kv[layer_idx]
        rows, pos = self.rows, self.pos
        if rows.device != k_cache.device:  # layers spread over GPUs (device_map=auto)
            rows, pos = rows.to(k_cache.device), pos.to(k_cache.device)
        if not self.kv_len:
            # Prefill fills positions 0..T-1 of each row: a plain copy along the slot axis (an
            # indexed scatter here cost ~6% of the prefill time on an H200).
            t = key.shape[2]
            k_cache[:, :, :t].index_copy_(0, rows, key.to(k_cache.dtype))
            v_cache[:, :, :t].index_copy_(0, rows, value.to(v_cache.dtype))
            return key, value  # a prompt attends within itself only
        # cache[row, :, pos] <- new key/value (advanced indices first: (n, T, heads, dim))
        k_cache[rows[:, None], :, pos] = key.transpose(1, 2).to(k_cache.dtype)
        v_cache[rows[:, None], :, pos] = value.transpose(1, 2).to(v_cache.dtype)
        n = rows.shape[0]  # decode uses slots 0..n-1 in order
        return k_cache[:n, :, :self.kv_len], v_cache[:n, :, :self.kv_len]


class SlotEngine:
    def __init__(self, model, n_slots: int, cache_len: int, params: GenerationParams,
                 eos_ids: frozenset[int], cuda_graphs: bool = True, kv_bucket: int = 128,
                 prefill_tokens: int = 8192, stream_interval: int = 1, decode_sdpa: str = "auto",
                 compile: str = "off"):
        self.model = model
        self.decoder = model.model
        if model.config._attn_implementation == "sdpa":
            _register_attention(model)
        self.params = params
        self.eos_ids = frozenset() if params.ignore_eos else frozenset(eos_ids)
        self.n_slots = n_slots
        self.cache_len = cache_len
        self.kv_bucket = max(1, kv_bucket)
        self.prefill_tokens = max(1, prefill_tokens)
        self.stream_interval = max(1, stream_interval)
        self.decode_sdpa = _sdpa_backends(decode_sdpa)
        self.device = model.get_input_embeddings().weight.device
        cfg = model.config
        n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        dtype = model.get_input_embeddings().weight.dtype
        kv = []
        shape = (n_slots, n_kv, cache_len, head_dim)
        try:
            for layer in self.decoder.layers:
                dev = layer.self_attn.k_proj.weight.device
                kv.append((torch.zeros(shape, dtype=dtype, device=dev), torch.zeros(shape, dtype=dtype, device=dev)))
        except torch.cuda.OutOfMemoryError:
            kv.clear()
            gib = 2 * len(self.decoder.layers) * n_slots * n_kv * cache_len * head_dim * dtype.itemsize / 2**30
            raise HarnessError(f"the KV cache ({n_slots} slots x {cache_len} positions = {gib:.0f} GiB) does not "
                               "fit in GPU memory: lower --backend-arg batch_size or max_seq_len") from None
        self.cache = _SlotCache(kv)
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
        self.fused = compile != "off" and fuse_elementwise(model, compile)
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
        # ends in a device-to-host copy, so the GPU work is inside these times).
        self.stats = {"prefill_s": 0.0, "prefill_tokens": 0, "prefill_groups": 0, "decode_s": 0.0,
                      "decode_steps": 0}
        self.wakeup = threading.Condition()
        self.closing = False
        self.failed: Exception | None = None
        self.thread = threading.Thread(target=self._loop, name="hf-slot-engine", daemon=True)
        self.thread.start()

    # ---- public API (any thread) --------------------------------------------------------
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
        with self.wakeup:
            while len(free) == self.n_slots and not self.pending and not self.closing:
                self.wakeup.wait()  # idle: wait for work
            if self.closing and len(free) == self.n_slots and not self.pending:
                return False  # closing finishes the work already submitted first
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
        _prefill.causal = True
        try:
            return self.decoder(input_ids=ids, position_ids=pos, attention_mask=causal.expand(n, 1, width, width),
                                past_key_values=self.cache, use_cache=True).last_hidden_state
        finally:
            _prefill.causal = False

    def _prefill(self, group: list[Request]):
        t0 = time.perf_counter()
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
        first = first.tolist()
        self.stats["prefill_s"] += time.perf_counter() - t0
        self.stats["prefill_tokens"] += sum(len(r.prompt) for r in group)
        self.stats["prefill_groups"] += 1
        for r, tok in zip(group, first):
            self.slot_req[r.slot] = r
            self.host_pos[r.slot] = len(r.prompt)
            self._emit(r, tok)

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
        t0 = time.perf_counter()
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
        toks = self.next[:nb].tolist()  # the one host sync per step
        self.stats["decode_s"] += time.perf_counter() - t0
        self.stats["decode_steps"] += 1
        for i in active:
            self.host_pos[i] += 1
            self._emit(self.slot_req[i], toks[i])

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
