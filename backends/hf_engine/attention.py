"""Attention for the slots engine: SDPA registered under its own name, with a causal prefill
shortcut and a grouped-query decode path; the SDPA kernels allowed in decode steps."""
from __future__ import annotations

import threading

import torch

from common.errors import HarnessError

ATTN_NAME = "slots_sdpa"

# Set by the engine thread around a prefill forward: each prompt then attends causally within
# itself (prompts are right-padded, so no real token sees a pad), and SDPA can take its causal
# kernels (flash / cuDNN), which need no mask. Thread-local: generate()/score() on other threads
# keep their padding masks.
prefill_mode = threading.local()

# Set by the engine around a decode step with an fp8 cache: the SlotCache whose update() leaves
# each layer's scales and the rows' lengths for the fp8 decode attention.
fp8_decode = threading.local()


def slots_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA, with two shortcuts for the slots engine:
    - prefill (engine thread, see `prefill_mode`): causal SDPA without a mask;
    - one-token decode steps of grouped-query models: the query heads that share a KV head are
      folded into the query-length axis, so the cache is read once instead of being copied per
      query head (what SDPA with a mask does otherwise)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, h, q_len, d = query.shape
    if key.dtype == torch.float8_e4m3fn:   # decode over the real fp8 cache
        from quantization.fp8_kv import decode_attention

        cache = fp8_decode.cache
        k_scale, v_scale = cache.scales
        scaling = d ** -0.5 if scaling is None else scaling
        return decode_attention(query, key, value, k_scale, v_scale, cache.lengths, scaling), None
    if q_len > 1 and getattr(prefill_mode, "causal", False):
        return sdpa_attention_forward(module, query, key, value, None, scaling=scaling, is_causal=True, **kwargs)
    n_kv = key.shape[1]
    if q_len != 1 or n_kv == h or attention_mask is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    q = query.view(b, n_kv, h // n_kv, d)  # query head i uses KV head i // groups
    out = torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(b, 1, h, d), None


def register_attention(model):
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_NAME, slots_attention)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)  # score()/generate() build masks as for sdpa
    model.config._attn_implementation = ATTN_NAME


def sdpa_backends(name: str) -> list:
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
