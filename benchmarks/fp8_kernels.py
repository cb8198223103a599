"""Kernel times of the real fp8 path at Llama-2-7B shapes on one GPU (CUDA events, medians):
FP8Linear (per-token activation quantization + torch._scaled_mm) against the fp16 nn.Linear, and
the Triton fp8 decode attention against fp16 SDPA over the same cache (bytes read / time), the
activation quantizer and the fp8 cache write against a plain copy of the same bytes, and RMSNorm /
SiLU*up with the activation quantization fused in against the compiled function followed by the
Triton quantizer (backends/hf_engine/fused.py).

    python3 benchmarks/fp8_kernels.py [--only fused] [--out fp8_kernels.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from backends.hf_engine import fused  # noqa: E402
from quantization.fp8 import FP8Linear, quantize_rows_fast  # noqa: E402
from quantization.fp8_kv import decode_attention_triton, kernel_configs, quantize_kv, write_kv  # noqa: E402


def timed(fn, reps: int = 20) -> float:
    """Median ms of `reps` calls after 3 warm-ups."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def fused_quantization(dev: str) -> list[dict]:
    """RMSNorm + quantization and SiLU*up + quantization at 7B shapes (hidden 4096, intermediate
    11008; gate and up as views of one merged matmul output), float16: separate (the compiled
    function as the engine runs it unfused, then quantize_rows_fast) against fused (the quantizing
    function compiled with fp8_numerics, as the engine runs it). GB/s: the fused kernel's bytes
    (the inputs read once, codes and scales written), over each time."""
    compiled = fused._compiled("inductor")
    rows = []
    for m in (256, 8192):
        x = torch.randn(m, 4096, device=dev, dtype=torch.float16)
        w = torch.rand(4096, device=dev, dtype=torch.float16) + 0.5
        gate, up = torch.randn(m, 2 * 11008, device=dev, dtype=torch.float16).split(11008, dim=-1)
        cases = (("rms_norm", (x, w, 1e-5), 4096, 2 * m * 4096 + 2 * 4096),
                 ("silu_mul", (gate, up), 11008, 2 * 2 * m * 11008))
        for name, args, k, read in cases:
            act, quantizing = compiled[f"_{name}"], compiled[f"_{name}_fp8"]
            with torch.inference_mode():
                separate = timed(lambda: quantize_rows_fast(act(*args).reshape(-1, k)))
                together = timed(lambda: quantizing(*args))
            gb = (read + m * k + 4 * m) / 1e9
            r = {"op": name, "M": m, "K": k, "separate_ms": separate, "fused_ms": together,
                 "speedup": separate / together, "separate_GBps": gb / separate * 1e3,
                 "fused_GBps": gb / together * 1e3}
            rows.append(r)
            print(f"{name} + fp8 quantization M={m} K={k}: separate {separate:.4f} ms, fused {together:.4f} ms "
                  f"({r['speedup']:.2f}x; fused {r['fused_GBps']:.0f} GB/s)", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    ap.add_argument("--only", choices=("all", "fused"), default="all",
                    help="fused: only the fused RMSNorm / SiLU*up quantization timings")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    dev = "cuda"
    res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "linear": [], "attention": [],
           "quantizer": [], "fused_quantization": []}
    if fused.fp8_numerics() is None:
        sys.exit("this torch's inductor lacks the switches the fused quantization needs (fused.fp8_numerics)")
    res["fused_quantization"] = fused_quantization(dev)
    if args.only == "fused":
        return write(res, args.out)
    # bytes moved: the fp16 input read, the fp8 codes and float32 scales written
    for m, k in ((256, 4096), (256, 11008), (8192, 4096), (8192, 11008)):
        x = torch.randn(m, k, device=dev, dtype=torch.float16)
        y = torch.empty(m, 2 * k, device=dev, dtype=torch.uint8)
        src = x.view(torch.uint8)
        gb = (3 * m * k + 4 * m) / 1e9
        r = {"M": m, "K": k, "quantize_ms": timed(lambda: quantize_rows_fast(x)),
             "copy_ms": timed(lambda: y.copy_(src))}
        r["quantize_GBps"], r["copy_GBps"] = gb / r["quantize_ms"] * 1e3, 2 * 2 * m * k / 1e9 / r["copy_ms"] * 1e3
        res["quantizer"].append(r)
        print(f"quantize_rows_fast {m}x{k}: {r['quantize_ms']:.4f} ms ({r['quantize_GBps']:.0f} GB/s; "
              f"copy {r['copy_GBps']:.0f} GB/s)", flush=True)
    for n, t in ((16, 512), (256, 1)):   # a prefill group's keys, one decode step's
        x = torch.randn(n, t, 32, 128, device=dev, dtype=torch.float16).transpose(1, 2)
        cache = torch.zeros(256, 32, 768, 128, dtype=torch.uint8, device=dev)
        scales = torch.ones(256, 32, 768, device=dev)
        rows, pos = torch.arange(n, device=dev), torch.arange(t, device=dev).expand(n, t)
        ms = timed(lambda: write_kv(x, cache, scales, rows, pos))
        gb = x.numel() * 3 / 1e9
        res["quantizer"].append({"cache_write": [n, t, 32, 128], "ms": ms, "GBps": gb / ms * 1e3})
        print(f"write_kv {n} x {t} tokens x 32 heads: {ms:.4f} ms ({gb / ms * 1e3:.0f} GB/s)", flush=True)
    shapes = [(12288, 4096), (22016, 4096), (4096, 4096), (4096, 11008)]  # qkv, gate+up, o, down (fused sizes)
    for m in (256, 8192):
        t16 = t8 = flops = 0.0
        for n, k in shapes:
            lin = torch.nn.Linear(k, n, bias=False, device=dev, dtype=torch.float16)
            x = torch.randn(m, k, device=dev, dtype=torch.float16)
            fp8 = FP8Linear(lin, "per_channel", "per_token")
            with torch.inference_mode():
                t16 += timed(lambda: lin(x))
                t8 += timed(lambda: fp8(x))
            flops += 2 * m * n * k
        r = {"M": m, "fp16_ms": t16, "fp8_ms": t8, "fp16_TFLOPs": flops / t16 / 1e9, "fp8_TFLOPs": flops / t8 / 1e9,
             "speedup": t16 / t8}
        res["linear"].append(r)
        print(f"linear M={m}: fp16 {t16:.3f} ms ({r['fp16_TFLOPs']:.0f} TFLOP/s), fp8 incl. activation "
              f"quantization {t8:.3f} ms ({r['fp8_TFLOPs']:.0f} TFLOP/s), {r['speedup']:.2f}x", flush=True)
    for b, h, hk, L, d in ((256, 32, 32, 768, 128), (128, 64, 8, 768, 128)):
        q = torch.randn(b, h, 1, d, device=dev, dtype=torch.float16)
        k = torch.randn(b, hk, L, d, device=dev, dtype=torch.float16)
        v = torch.randn(b, hk, L, d, device=dev, dtype=torch.float16)
        lengths = torch.full((b,), L, device=dev, dtype=torch.long)
        mask = torch.ones(b, 1, 1, L, device=dev, dtype=torch.bool)
        qg = q.view(b, hk, h // hk, d)  # the engine's grouped-query fold
        t16 = timed(lambda: torch.nn.functional.scaled_dot_product_attention(qg, k, v, attn_mask=mask))
        k8, ks = quantize_kv(k, None)
        v8, vs = quantize_kv(v, None)
        fp16_gb = 2 * k.numel() * 2 / 1e9
        fp8_gb = (2 * k.numel() + 2 * ks.numel() * 4) / 1e9
        row = {"shape": [b, h, hk, L, d], "sdpa_fp16_ms": t16, "sdpa_fp16_GBps": fp16_gb / t16 * 1e3, "triton": {}}
        line = f"decode attention b={b} h={h} kv={hk} L={L}: fp16 SDPA {t16:.3f} ms ({row['sdpa_fp16_GBps']:.0f} GB/s)"
        for cfg in kernel_configs(h // hk):
            t8 = timed(lambda: decode_attention_triton(q, k8, v8, ks, vs, lengths, d ** -0.5, config=cfg))
            row["triton"][str(cfg)] = {"ms": t8, "GBps": fp8_gb / t8 * 1e3}
            line += f"\n  fp8 triton (BLOCK_G, BLOCK_N, warps, stages) {cfg}: {t8:.3f} ms ({fp8_gb / t8 * 1e3:.0f} GB/s)"
        res["attention"].append(row)
        print(line, flush=True)
    write(res, args.out)


def write(res: dict, path: str) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
