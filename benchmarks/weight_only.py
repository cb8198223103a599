"""Weight-only INT8 / INT4 (group 128) through torchao on one CUDA GPU, against bf16, at one
Llama-2-7B linear shape (4096 -> 11008, the MLP's gate/up): is there a library kernel that makes
weight-only integer quantization pay on this GPU?

For each config: quantize one bf16 nn.Linear with `torchao.quantization.quantize_`, then time it
eager and through torch.compile at M=256 rows (a decode step of 256 sequences) and M=8192 (a
prefill group): mean of 20 calls after 3 warm-ups, host clock around a device sync. A config whose
kernel is missing prints FAILED and why. Needs torchao (0.18 was measured; carry its abi3 wheel to
a GPU machine, see docs/gpu.md).

    python3 benchmarks/weight_only.py

Results and what they mean: docs/gpu.md, "Weight-only INT8 / INT4".
"""
from __future__ import annotations

import time

import torch


def mean_ms(fn, x, reps: int = 20) -> float:
    for _ in range(3):
        fn(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn(x)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def main():
    import torchao
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    print("torchao", torchao.__version__)
    configs = [("int8wo", Int8WeightOnlyConfig()),   # per output channel
               ("int4wo", Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")),  # tinygemm
               ("int4wo_plain", Int4WeightOnlyConfig(group_size=128))]   # torchao's default packing
    for name, cfg in configs:
        try:
            lin = torch.nn.Linear(4096, 11008, bias=False, dtype=torch.bfloat16, device="cuda")
            quantize_(lin, cfg)
            for m in (256, 8192):
                x = torch.randn(m, 4096, dtype=torch.bfloat16, device="cuda")
                for compiled in (False, True):
                    fn = torch.compile(lin) if compiled else lin
                    print(name, m, "compiled" if compiled else "eager", f"{mean_ms(fn, x):.3f} ms", flush=True)
        except Exception as e:   # a missing kernel package: say which, go on with the next config
            print(name, "FAILED", type(e).__name__, str(e)[:300])
    lin = torch.nn.Linear(4096, 11008, bias=False, dtype=torch.bfloat16, device="cuda")
    for m in (256, 8192):
        x = torch.randn(m, 4096, dtype=torch.bfloat16, device="cuda")
        print("bf16", m, f"{mean_ms(lin, x):.3f} ms")


if __name__ == "__main__":
    main()
