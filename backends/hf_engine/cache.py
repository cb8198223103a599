"""The slots engine's request record and its KV cache: `n_slots` rows of `cache_len` positions,
written by the attention layers through a duck-typed transformers Cache."""
from __future__ import annotations

import queue
from dataclasses import dataclass, field

import torch


@dataclass
class Request:
    prompt: list[int]
    chunks: queue.Queue = field(default_factory=queue.Queue)  # lists of ids, then None (or an Exception)
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # how many of `generated` went out as chunks
    slot: int = -1


class SlotCache:
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
