"""FP8 (e4m3) KV cache: quantizing keys/values as they are written, and one-token decode
attention that reads the fp8 cache directly.

Layout (the hf slots engine's): codes (slots, kv_heads, positions, head_dim) stored as uint8
(index_copy_ and indexed writes do not take float8 tensors) and viewed as float8_e4m3fn to read;
scales per_token: float32 (slots, kv_heads, positions), one per written head vector, computed
from that vector (dynamic, so no calibration and no dependence on the batch); per_tensor: one
fixed float.

Decode attention: SDPA refuses fp8 inputs and dequantizing the cache first reads it twice, so on
CUDA a Triton kernel reads the codes and folds the scales into the maths (score = q.k8 * k_scale,
out = sum(p * v_scale * v8)), one program per (sequence, KV head) reading only that sequence's
real length. On the CPU `decode_attention_reference` computes the same in float32.
"""
from __future__ import annotations

import torch

from quantization.fp8 import FP8, fp8_scale, quantize_rows_fast, to_fp8


def quantize_kv(x: torch.Tensor, static_scale: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (n, heads, T, head_dim) -> (uint8 codes of the same shape, float32 scales (n, heads, T)
    or None for a static per-tensor scale). A static scale stays a Python float: no tensor is
    made from it inside a CUDA graph capture."""
    if static_scale is not None:
        return to_fp8(x, static_scale).view(torch.uint8), None
    if x.is_cuda:   # one Triton kernel instead of five passes (prefill writes 2 x 8192 x 4096 per layer)
        codes, scale = quantize_rows_fast(x.reshape(-1, x.shape[-1]))
        return codes.view(torch.uint8).view(x.shape), scale.view(x.shape[:-1])
    scale = fp8_scale(x.abs().amax(dim=-1))
    return to_fp8(x, scale[..., None]).view(torch.uint8), scale


_WRITE_KERNEL = None


def _write_kernel():
    """Triton kernel: per-token quantization of one (sequence, position)'s key or value heads,
    stored straight into the cache at (row, head, position): one pass over the strided input,
    instead of a contiguous copy, a quantization pass and an indexed cache write."""
    global _WRITE_KERNEL
    if _WRITE_KERNEL is None:
        import triton
        import triton.language as tl

        @triton.jit
        def kv_write_kernel(X, ROWS, POS, C, S, stride_xn, stride_xh, stride_xt, stride_pn, stride_pt,
                            stride_cs, stride_ch, stride_cp, stride_ss, stride_sh,
                            H: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr):
            i = tl.program_id(0).to(tl.int64)
            t = tl.program_id(1).to(tl.int64)
            h = tl.arange(0, BLOCK_H)
            d = tl.arange(0, D)
            hmask = h < H
            x = tl.load(X + i * stride_xn + t * stride_xt + h[:, None] * stride_xh + d[None, :],
                        mask=hmask[:, None], other=0.0).to(tl.float32)
            amax = tl.max(tl.abs(x), axis=1)
            scale = tl.where(amax > 0, amax * (1.0 / 448.0), 1.0)   # as quantize_rows_fast
            q = tl.clamp(tl.math.div_rn(x, scale[:, None]), -448.0, 448.0)
            row = tl.load(ROWS + i).to(tl.int64)
            p = tl.load(POS + i * stride_pn + t * stride_pt).to(tl.int64)
            tl.store(C + row * stride_cs + h[:, None] * stride_ch + p * stride_cp + d[None, :],
                     q.to(tl.float8e4nv).to(tl.uint8, bitcast=True), mask=hmask[:, None])
            tl.store(S + row * stride_ss + h * stride_sh + p, scale, mask=hmask)

        _WRITE_KERNEL = kv_write_kernel
    return _WRITE_KERNEL


def write_kv(x: torch.Tensor, cache: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor,
             pos: torch.Tensor) -> None:
    """cache[rows[i], :, pos[i, t]] <- fp8 codes of x[i, :, t] (one scale per token and head into
    scales[rows[i], :, pos[i, t]]). x (n, heads, T, d), any strides with a unit last one; cache
    (slots, heads, positions, d) uint8, scales (slots, heads, positions) float32, both with unit
    position stride for the scales; pos (n, T). The Triton kernel on CUDA, eager torch elsewhere."""
    if not x.is_cuda:
        codes, s = quantize_kv(x, None)
        cache[rows[:, None], :, pos] = codes.transpose(1, 2)
        scales[rows[:, None], :, pos] = s.transpose(1, 2)
        return
    import triton

    n, heads, t, d = x.shape
    assert x.stride(-1) == 1 and cache.stride(-1) == 1 and scales.stride(-1) == 1 and d & (d - 1) == 0
    _write_kernel()[(n, t)](x, rows, pos, cache, scales, x.stride(0), x.stride(1), x.stride(2),
                            pos.stride(0), pos.stride(1), cache.stride(0), cache.stride(1), cache.stride(2),
                            scales.stride(0), scales.stride(1), H=heads, D=d,
                            BLOCK_H=triton.next_power_of_2(heads), num_warps=4)


def fake_kv(x: torch.Tensor, static_scale: float | None) -> torch.Tensor:
    """What the model sees of x after a round trip through the fp8 cache, in x.dtype."""
    codes, scale = quantize_kv(x, static_scale)
    scale = static_scale if scale is None else scale[..., None]
    return (codes.view(FP8).float() * scale).to(x.dtype)


def decode_attention_reference(q, k8, v8, k_scale, v_scale, lengths, scaling: float) -> torch.Tensor:
    """q (b, heads, 1, d); k8/v8 (b, kv_heads, L, d) float8; scales (b, kv_heads, L) or floats;
    lengths (b,): positions 0..length-1 are attended. Returns (b, 1, heads, d) in q.dtype."""
    b, h, _, d = q.shape
    hk, L = k8.shape[1], k8.shape[2]
    qf = q.float().reshape(b, hk, h // hk, d)   # query head i uses KV head i // group
    ks = k_scale.float()[:, :, None, :] if torch.is_tensor(k_scale) else k_scale
    vs = v_scale.float()[:, :, None, :] if torch.is_tensor(v_scale) else v_scale
    s = torch.einsum("bkgd,bknd->bkgn", qf, k8.float()) * ks * scaling
    valid = torch.arange(L, device=q.device)[None, :] < lengths[:, None]
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    p = torch.softmax(s, dim=-1) * vs
    out = torch.einsum("bkgn,bknd->bkgd", p, v8.float())
    return out.reshape(b, 1, h, d).to(q.dtype)


_KERNEL = None


def _kernel():
    """The Triton kernel, defined on first use (Triton is needed only on the GPU path)."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    @triton.jit
    def fp8_decode_kernel(Q, K, V, KS, VS, LEN, O, scaling, k_static, v_static,
                          stride_qb, stride_qh, stride_kb, stride_kh, stride_kn, stride_sb, stride_sh,
                          stride_ob, stride_oh,
                          GROUP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
                          D: tl.constexpr, PER_TOKEN: tl.constexpr, FP32: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)   # int64: a large cache overflows 32-bit offsets
        hk = tl.program_id(1).to(tl.int64)
        n = tl.load(LEN + b).to(tl.int32)
        g = tl.arange(0, BLOCK_G)
        d = tl.arange(0, D)
        gmask = g < GROUP
        q = tl.load(Q + b * stride_qb + (hk * GROUP + g)[:, None] * stride_qh + d[None, :],
                    mask=gmask[:, None], other=0.0)
        m_i = tl.full((BLOCK_G,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_G,), tl.float32)
        acc = tl.zeros((BLOCK_G, D), tl.float32)
        k_base = K + b * stride_kb + hk * stride_kh
        v_base = V + b * stride_kb + hk * stride_kh
        for start in range(0, n, BLOCK_N):
            offs = start + tl.arange(0, BLOCK_N)
            nmask = offs < n
            kv_off = offs[:, None] * stride_kn + d[None, :]
            k = tl.load(k_base + kv_off, mask=nmask[:, None], other=0).to(tl.float8e4nv, bitcast=True)
            if BLOCK_G == 1:   # one query head per KV head: a dot per position, no tensor cores
                s = tl.sum(q.to(tl.float32) * k.to(tl.float32), axis=1)[None, :]
            elif FP32:   # a float32 model keeps float32 maths (no tf32): same as its SDPA
                s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
            else:
                s = tl.dot(q.to(tl.float16), tl.trans(k.to(tl.float16)))
            if PER_TOKEN:
                ks = tl.load(KS + b * stride_sb + hk * stride_sh + offs, mask=nmask, other=0.0)
                s = s * (ks * scaling)[None, :]
            else:
                s = s * (k_static * scaling)
            s = tl.where(nmask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if PER_TOKEN:
                vs = tl.load(VS + b * stride_sb + hk * stride_sh + offs, mask=nmask, other=0.0)
                p = p * vs[None, :]
            else:
                p = p * v_static
            v = tl.load(v_base + kv_off, mask=nmask[:, None], other=0).to(tl.float8e4nv, bitcast=True)
            if BLOCK_G == 1:
                pv = tl.sum(tl.trans(p) * v.to(tl.float32), axis=0)[None, :]
            elif FP32:
                pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
            else:
                pv = tl.dot(p.to(tl.float16), v.to(tl.float16))
            acc = acc * alpha[:, None] + pv
            m_i = m_new
        out = acc / l_i[:, None]
        tl.store(O + b * stride_ob + (hk * GROUP + g)[:, None] * stride_oh + d[None, :],
                 out.to(O.dtype.element_ty), mask=gmask[:, None])

    _KERNEL = fp8_decode_kernel
    return _KERNEL


# (BLOCK_G, BLOCK_N, num_warps, num_stages) tried once per (group, head_dim, scale kind) on the
# first CUDA call; BLOCK_G 16 pads the query heads of one KV head to a tensor-core tile (tl.dot),
# BLOCK_G 1 (one query head per KV head only) reduces with plain multiply-adds.
def kernel_configs(group: int) -> list[tuple[int, int, int, int]]:
    if group == 1:
        return [(16, 32, 2, 4), (16, 64, 4, 3), (16, 32, 4, 3), (16, 16, 2, 4), (16, 32, 1, 4), (16, 64, 2, 4),
                (16, 32, 2, 6), (16, 16, 1, 6), (1, 64, 4, 3)]
    g = max(16, triton_next_pow2(group))
    return [(g, 32, 2, 4), (g, 32, 4, 3), (g, 64, 4, 3), (g, 64, 2, 4), (g, 16, 1, 4)]


tuned: dict[tuple, dict] = {}   # (group, head_dim, per_token) -> chosen config and the times tried


def _time_ms(fn) -> float:
    for _ in range(2):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 5


def decode_attention_triton(q, k8, v8, k_scale, v_scale, lengths, scaling: float,
                            config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """The Triton kernel over the same arguments as decode_attention_reference (k8/v8 may be the
    uint8 storage or its float8 view). config: (BLOCK_G, BLOCK_N, num_warps, num_stages); None:
    the fastest of kernel_configs, timed on the first call outside a CUDA graph capture."""
    b, h, _, d = q.shape
    hk = k8.shape[1]
    group = h // hk
    assert k8.stride(-1) == 1 and q.stride(-1) == 1 and d & (d - 1) == 0
    out = torch.empty((b, 1, h, d), dtype=q.dtype, device=q.device)
    per_token = torch.is_tensor(k_scale)
    ks = k_scale if per_token else out   # unused pointer when the scale is static
    vs = v_scale if per_token else out

    def launch(cfg):
        block_g, block_n, warps, stages = cfg
        _kernel()[(b, hk)](
            q, k8.view(torch.uint8), v8.view(torch.uint8), ks, vs, lengths, out, float(scaling),
            1.0 if per_token else float(k_scale), 1.0 if per_token else float(v_scale),
            q.stride(0), q.stride(1), k8.stride(0), k8.stride(1), k8.stride(2),
            ks.stride(0) if per_token else 0, ks.stride(1) if per_token else 0,
            out.stride(0), out.stride(2),
            GROUP=group, BLOCK_G=block_g, BLOCK_N=block_n, D=d, PER_TOKEN=per_token, FP32=q.dtype == torch.float32,
            num_warps=warps, num_stages=stages)

    if config is None:
        key = (group, d, per_token)
        if key not in tuned:
            if not q.is_cuda or torch.cuda.is_current_stream_capturing():
                launch(kernel_configs(group)[0])
                return out
            times = {cfg: _time_ms(lambda: launch(cfg)) for cfg in kernel_configs(group)}
            best = min(times, key=times.get)
            tuned[key] = {"config": best, "ms": {str(c): round(t, 4) for c, t in times.items()}}
        config = tuned[key]["config"]
    launch(config)
    return out


def triton_next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def decode_attention(q, k8, v8, k_scale, v_scale, lengths, scaling: float) -> torch.Tensor:
    """Decode attention over an fp8 cache: the Triton kernel on CUDA, the reference elsewhere."""
    if q.is_cuda:
        return decode_attention_triton(q, k8, v8, k_scale, v_scale, lengths, scaling)
    return decode_attention_reference(q, k8.view(FP8), v8.view(FP8), k_scale, v_scale, lengths, scaling)
