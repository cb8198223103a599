"""Which x86 features llama.cpp is built with, and a build that is safe on this CPU.

llama.cpp built with -march=native (llama-cpp-python's default) compiles in every feature of the
building CPU, AMX included; on AMX CPUs (Sapphire Rapids and later) it then repacks Q4_K_M
weights into an "AMX buffer" whose matmul segfaults (ggml-org/llama.cpp issue 20824). A wheel
taken from pip's cache, built on another CPU, can also carry instructions this CPU lacks
(SIGILL). So build.sh asks this module for explicit CMake flags instead of GGML_NATIVE:

    LLAMA_CPU=host      every feature of this CPU that llama.cpp uses, AMX left out (default)
    LLAMA_CPU=portable  AVX2/FMA/F16C/BMI2 only (x86-64-v3), for images that move between machines

and checks an installed build against them (`check`): the features llama.cpp reports must be the
wanted ones, and a short decode of the embedded model in a child process must not crash.
Stdlib only at import time: build.sh runs it before llama-cpp-python is installed.

    python -m backends.llamacpp_cpu cmake-args [host|portable]
    python -m backends.llamacpp_cpu check [host|portable]       # exit 0 ok, 1 mismatch or crash
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from common.cpu import cpu_flags, describe_cpu, is_x86

# (name in llama.cpp's system info, its CMake option, the /proc/cpuinfo flags it needs)
FEATURES = (
    ("SSE42", "GGML_SSE42", ("sse4_2",)),     # not printed in the system info
    ("AVX", "GGML_AVX", ("avx",)),
    ("AVX2", "GGML_AVX2", ("avx2",)),
    ("FMA", "GGML_FMA", ("fma",)),
    ("F16C", "GGML_F16C", ("f16c",)),
    ("BMI2", "GGML_BMI2", ("bmi2",)),
    ("AVX_VNNI", "GGML_AVX_VNNI", ("avx_vnni",)),
    ("AVX512", "GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("AVX512_VBMI", "GGML_AVX512_VBMI", ("avx512vbmi",)),
    ("AVX512_VNNI", "GGML_AVX512_VNNI", ("avx512_vnni",)),
    ("AVX512_BF16", "GGML_AVX512_BF16", ("avx512_bf16",)),
)
PORTABLE = {"SSE42", "AVX", "AVX2", "FMA", "F16C", "BMI2"}
# Never compiled in: the AMX kernels crash (see the module docstring).
ALWAYS_OFF = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
NOT_REPORTED = {"SSE42"}
TARGETS = ("host", "portable")
SMOKE_PROMPT = "The capital of France is"


def wanted_features(target: str, flags: set[str]) -> set[str]:
    """The llama.cpp features a build for `target` uses on a CPU with `flags`."""
    if target not in TARGETS:
        raise ValueError(f"LLAMA_CPU must be one of {', '.join(TARGETS)}, got {target!r}")
    have = {name for name, _, need in FEATURES if all(f in flags for f in need)}
    return have & PORTABLE if target == "portable" else have


def cmake_args(target: str, flags: set[str]) -> list[str]:
    """CMake flags for llama.cpp: GGML_NATIVE off, each feature on or off explicitly, AMX off."""
    want = wanted_features(target, flags)
    args = ["-DGGML_NATIVE=OFF"]
    args += [f"-D{opt}={'ON' if name in want else 'OFF'}" for name, opt, _ in FEATURES]
    args += [f"-D{opt}=OFF" for opt in ALWAYS_OFF]
    return args


def parse_system_info(info: str) -> set[str]:
    """Features llama.cpp reports as on: 'CPU : AVX = 1 | AVX2 = 1 | ...' -> {'AVX', 'AVX2', ...}."""
    on = set()
    for part in info.replace("CPU :", "|").split("|"):
        name, _, value = part.partition("=")
        if value.strip() == "1":
            on.add(name.strip())
    return on


def system_info(llama_cpp) -> str:
    """The loaded llama.cpp's feature line ('CPU : SSE3 = 1 | AVX = 1 | ...')."""
    return llama_cpp.llama_print_system_info().decode().strip()


CRASH_ADVICE = "rebuild it for this CPU with bash build.sh (LLAMA_CPU=portable: AVX2 only), or use --backend hf"


def describe_build(llama_cpp) -> str:
    """'llama.cpp (llama-cpp-python 0.3.36; CPU : SSE3 = 1 | ...)': what main.py logs and a crash line names."""
    return f"llama.cpp (llama-cpp-python {llama_cpp.__version__}; {system_info(llama_cpp).rstrip(' |')})"


def model_params(llama_cpp, log):
    """llama.cpp's default model parameters, with the extra buffer types (weight repacking) off if
    this build has AMX compiled in: one not made by build.sh would put weights in AMX buffers."""
    mparams = llama_cpp.llama_model_default_params()
    if "AMX_INT8" in parse_system_info(system_info(llama_cpp)):
        log.warning("llama.cpp is built with AMX, whose kernels crash on Q4_K_M models: weight repacking "
                    "turned off (slower); rebuild it with bash build.sh")
        mparams.use_extra_bufts = False
    return mparams


_SMOKE = f"""
import llama_cpp, sys
from inputs.models import default_model_path
print(llama_cpp.llama_print_system_info().decode(), flush=True)
if len(sys.argv) > 1:
    llm = llama_cpp.Llama(default_model_path(), n_ctx=128, n_threads=1, n_threads_batch=1, verbose=False)
    out = llm({SMOKE_PROMPT!r}, max_tokens=4, temperature=0.0)
    print("generated", out["usage"]["completion_tokens"], flush=True)
"""


def probe(python: str = sys.executable, decode: bool = True, timeout: float = 300) -> tuple[int, str]:
    """Run llama.cpp in a child process: its system info line and, with `decode`, 4 tokens of the
    embedded model. Returns (exit status, output); a crash is a negative status (-signal)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([python, "-c", _SMOKE, *(["decode"] if decode else [])], cwd=root,
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def status_text(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


def check(target: str, flags: set[str] | None = None, python: str = sys.executable) -> str | None:
    """None when the installed llama.cpp is the build `target` wants and decodes without crashing;
    else what is wrong, in one line."""
    flags = cpu_flags() if flags is None else flags
    rc, out = probe(python)
    info = next((line for line in out.splitlines() if line.startswith("CPU :")), "")
    if not info:
        return f"llama.cpp did not start ({status_text(rc)}): {out.strip()[-300:]}"
    built = parse_system_info(info)
    if not is_x86():  # other CPUs: llama.cpp's own defaults; only a crash is wrong
        return None if rc == 0 else f"llama.cpp crashed decoding the embedded model ({status_text(rc)})"
    if "AMX_INT8" in built:
        return "llama.cpp is built with AMX, whose kernels crash on Q4_K_M models"
    want = wanted_features(target, flags) - NOT_REPORTED
    got = built & {name for name, _, _ in FEATURES}
    if got != want:
        extra, missing = sorted(got - want), sorted(want - got)
        return (f"llama.cpp is built for other CPU features than LLAMA_CPU={target} wants here"
                f"{' (has ' + ' '.join(extra) + ')' if extra else ''}"
                f"{' (lacks ' + ' '.join(missing) + ')' if missing else ''}")
    if rc != 0:
        return f"llama.cpp crashed decoding the embedded model ({status_text(rc)}) on {describe_cpu(flags)}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or argv[0] not in ("cmake-args", "check") or (argv[1:] and argv[1] not in TARGETS):
        print("usage: python -m backends.llamacpp_cpu cmake-args|check [host|portable]", file=sys.stderr)
        return 2
    target = argv[1] if len(argv) > 1 else "host"
    if argv[0] == "cmake-args":
        if is_x86():  # other CPUs: llama.cpp's own defaults
            print(" ".join(cmake_args(target, cpu_flags())))
        return 0
    problem = check(target)
    if problem:
        print(problem)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
