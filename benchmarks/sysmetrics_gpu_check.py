"""Check SystemMonitor against a real NVIDIA GPU (the unit tests fake NVML) and print numbers.

    python benchmarks/sysmetrics_gpu_check.py [--seconds 5] [--interval 0.2]

Runs an idle phase and a busy phase (fp16 matmuls with torch when it sees CUDA), each under
its own SystemMonitor, and prints utilisation, memory, power, energy and J per "token" (one
token per matmul here, a stand-in count). Also prints the sampling overhead: how long one
sample takes. Needs nvidia-ml-py; torch with CUDA for the busy phase.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.sysmetrics import SystemMonitor, gpu_names  # noqa: E402


def busy(seconds: float) -> int:
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    n = 0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        for _ in range(10):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
        n += 10
    return n


def main() -> int:
    p = argparse.ArgumentParser(allow_abbrev=False)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--interval", type=float, default=0.2)
    args = p.parse_args()
    print("load average:", os.getloadavg())
    print("GPUs seen by NVML:", gpu_names())

    mon = SystemMonitor(args.interval).start()
    time.sleep(args.seconds)
    idle = mon.stop(output_tokens=1)
    print("idle:", json.dumps(idle["aggregates"], indent=1))

    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        mon = SystemMonitor(args.interval).start()
        n = busy(args.seconds)
        m = mon.stop(output_tokens=n)
        print(f"busy ({n} fp16 8192^3 matmuls):", json.dumps(m["aggregates"], indent=1))
        print("gpu0 util samples:", m["samples"].get("gpu0_util_pct"))
    else:
        print("no torch with CUDA: busy phase skipped")

    # Cost of one sample (what the daemon thread spends every interval).
    mon = SystemMonitor(10.0).start()
    t0 = time.perf_counter()
    for _ in range(50):
        mon._sample()
    per = (time.perf_counter() - t0) / 50
    mon.stop()
    print(f"one sample takes {per * 1e3:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
