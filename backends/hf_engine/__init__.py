"""Continuous batching over a static, slot-based KV cache, for the `hf` backend.

Why: plain `model.generate` decodes one padded batch until its longest member ends, grows a
dynamic KV cache by concatenation, and pays Python overhead per layer per step. Here
- the KV cache is allocated once: `n_slots` rows of `cache_len` positions (sized to the real
  prompt + output lengths), each request owning one row ("slot") from prefill to its end;
- a finished request frees its slot at once and a waiting one is prefilled into it, so the batch
  stays full (the Offline queue and concurrent Server streams go through the same loop);
  optionally (`prefill_wait_ms`) Server arrivals wait a little, while the others decode, to be
  prefilled together;
- attention reads the cache only up to the next multiple of `kv_bucket` past the longest
  sequence, not the whole allocation;
- on a GPU the decode step (model forward, greedy argmax, bookkeeping) is captured once per
  (active slots rounded up to a power of two, kv bucket) as a CUDA graph and replayed;
- optionally (`compile`) RMSNorm, RoPE and SiLU*up run as torch.compile'd fused kernels (with
  the fp8 activation quantization inside where per-token fp8 linears read their output).

The model's own modules do all the maths (embedding, RoPE, MLP, norms, SDPA attention): this
module only supplies a cache object (`update()` writes into the slot rows) and explicit masks.
So it is limited to model types whose decoder takes a 4D mask as is (the Llama family).
One background thread owns the model; callers submit requests and wait on queues.

Modules: `attention` (SDPA for prefill and decode), `cache` (requests and the slot KV cache),
`fused` (optional compiled element-wise kernels), `engine` (the scheduling loop and CUDA graphs),
`stats` (where the engine thread's time goes: prefill, decode, emit, idle, on and off the CPU).
With a quant config's kv_cache section the cache holds fp8 (quantization.fp8_kv): simulated
(values rounded through fp8, fakequant) or real (fp8 codes read by an fp8 decode attention).
Imports torch; may import backends.base, common and quantization, nothing above.
"""
from backends.hf_engine.cache import Request
from backends.hf_engine.engine import SlotEngine, supports

__all__ = ["Request", "SlotEngine", "supports"]
