"""What CPU this is: its feature flags and a short description for error lines (stdlib only)."""
from __future__ import annotations

import platform


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where there is none)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def describe_cpu(flags: set[str] | None = None) -> str:
    """'AMD EPYC (avx avx2 avx512f ... fma)': the model name and the SIMD features native engines use."""
    flags = cpu_flags() if flags is None else flags
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    simd = sorted(f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c", "bmi2"))
    return f"{model} ({' '.join(simd) or 'no AVX'})"
