"""The slots engine's request record and its KV cache: `n_slots` rows of `cache_len` positions,
written by the attention layers through a duck-typed transformers Cache; optionally fp8 (e4m3)."""
from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field

import torch

from quantization.fp8 import FP8
from quantization.fp8_kv import fake_kv, quantize_kv, write_kv


@dataclass
class Request:
    prompt: list[int]
    chunks: queue.Queue = field(default_factory=queue.Queue)  # lists of ids, then None (or an Exception)
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # how many of `generated` went out as chunks
    slot: int = -1
    t_submit: float = field(default_factory=time.perf_counter)  # made at submit(): admission waits count from here


class SlotCache:
    """Duck-typed transformers Cache: the attention layers call update(k, v, layer_idx).

    fp8: None (model dtype), "fake" (model dtype holding values rounded through fp8: the
    simulation) or "real" (uint8 codes plus scales per layer: (k, v, k_scales, v_scales); decode
    returns float8 views and leaves this layer's scales in `scales` for the fp8 decode attention).
    Either way a prompt attends to its own fresh keys/values at prefill, as fp8-KV servers do:
    only what is read back from the cache is rounded.
    """

    def __init__(self, layers_kv: list[tuple[torch.Tensor, ...]], fp8: str | None = None,
                 static_scale: float | None = None):
        self.kv = layers_kv
        self.fp8 = fp8
        self.static_scale = static_scale       # fp8 per_tensor: the fixed scale; None: per token
        self.rows: torch.Tensor | None = None  # (n,) slot index of each batch row
        self.pos: torch.Tensor | None = None   # (n, T) cache position of each new token (decode)
        self.kv_len = 0                        # decode: attend to cache[:, :, :kv_len]; 0 = prefill
        self.lengths: torch.Tensor | None = None  # fp8 decode: positions attended per row (pos + 1)
        self.scales = None                     # fp8 decode: (k, v) scales of the layer just updated

    def update(self, key, value, layer_idx, *args, **kwargs):
        if self.fp8 == "real":
            return self._update_fp8(key, value, layer_idx)
        k_cache, v_cache = self.kv[layer_idx]
        rows, pos = self.rows, self.pos
        if rows.device != k_cache.device:  # layers spread over GPUs (device_map=auto)
            rows, pos = rows.to(k_cache.device), pos.to(k_cache.device)
        fresh = key, value
        if self.fp8 == "fake":
            key, value = fake_kv(key, self.static_scale), fake_kv(value, self.static_scale)
        if not self.kv_len:
            # Prefill fills positions 0..T-1 of each row: a plain copy along the slot axis (an
            # indexed scatter here cost ~6% of the prefill time on an H200).
            t = key.shape[2]
            k_cache[:, :, :t].index_copy_(0, rows, key.to(k_cache.dtype))
            v_cache[:, :, :t].index_copy_(0, rows, value.to(v_cache.dtype))
            return fresh  # a prompt attends within itself only
        # cache[row, :, pos] <- new key/value (advanced indices first: (n, T, heads, dim))
        k_cache[rows[:, None], :, pos] = key.transpose(1, 2).to(k_cache.dtype)
        v_cache[rows[:, None], :, pos] = value.transpose(1, 2).to(v_cache.dtype)
        n = rows.shape[0]  # decode uses slots 0..n-1 in order
        return k_cache[:n, :, :self.kv_len], v_cache[:n, :, :self.kv_len]

    def _update_fp8(self, key, value, layer_idx):
        k_cache, v_cache, k_scales, v_scales = self.kv[layer_idx]
        rows, pos = self.rows, self.pos
        if rows.device != k_cache.device:
            rows, pos = rows.to(k_cache.device), pos.to(k_cache.device)
        if self.static_scale is None and key.is_cuda:   # quantized by the kernel that writes the cache
            write_kv(key, k_cache, k_scales, rows, pos)
            write_kv(value, v_cache, v_scales, rows, pos)
            if not self.kv_len:
                return key, value
            n = rows.shape[0]
            self.scales = (k_scales[:n, :, :self.kv_len], v_scales[:n, :, :self.kv_len])
            return k_cache[:n, :, :self.kv_len].view(FP8), v_cache[:n, :, :self.kv_len].view(FP8)
        k8, ks = quantize_kv(key, self.static_scale)
        v8, vs = quantize_kv(value, self.static_scale)
        if not self.kv_len:
            t = key.shape[2]
            k_cache[:, :, :t].index_copy_(0, rows, k8)
            v_cache[:, :, :t].index_copy_(0, rows, v8)
            if ks is not None:
                k_scales[:, :, :t].index_copy_(0, rows, ks)
                v_scales[:, :, :t].index_copy_(0, rows, vs)
            return key, value
        k_cache[rows[:, None], :, pos] = k8.transpose(1, 2)
        v_cache[rows[:, None], :, pos] = v8.transpose(1, 2)
        n = rows.shape[0]
        if ks is None:
            self.scales = (self.static_scale, self.static_scale)
        else:
            k_scales[rows[:, None], :, pos] = ks.transpose(1, 2)
            v_scales[rows[:, None], :, pos] = vs.transpose(1, 2)
            self.scales = (k_scales[:n, :, :self.kv_len], v_scales[:n, :, :self.kv_len])
        return k_cache[:n, :, :self.kv_len].view(FP8), v_cache[:n, :, :self.kv_len].view(FP8)
