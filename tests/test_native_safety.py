"""llama.cpp built safely for this CPU (backends/llamacpp_cpu.py, build.sh) and a native crash
reported in one line (harness/supervisor.py).

The AMX crash itself needs an AMX CPU: its guards are tested with Sapphire Rapids' /proc/cpuinfo
flags (the CMake flags chosen) and a stand-in for llama.cpp's feature line (the model parameters
chosen); the decode that would crash runs for real, on this CPU, in a child process."""
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from backends import llamacpp_cpu
from common.cpu import cpu_flags, describe_cpu
from harness.supervisor import crash_line

ROOT = Path(__file__).resolve().parent.parent

# /proc/cpuinfo flags of an Intel Xeon Platinum 8480+ (Sapphire Rapids), shortened to the SIMD ones.
SAPPHIRE_RAPIDS = ("flags\t\t: fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 popcnt avx f16c bmi1 avx2 bmi2 avx512f "
                   "avx512dq avx512ifma avx512cd avx512bw avx512vl avx_vnni avx512_bf16 avx512vbmi "
                   "avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq amx_bf16 avx512_fp16 amx_tile amx_int8")
HASWELL = "flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 popcnt avx f16c bmi1 avx2 bmi2"
SANDY_BRIDGE = "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt avx"


def _flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("-D").split("=") for a in args)


def test_host_build_on_an_amx_cpu_keeps_avx512_and_vnni_and_leaves_amx_out():
    args = _flags(llamacpp_cpu.cmake_args("host", cpu_flags(SAPPHIRE_RAPIDS)))
    assert args["GGML_NATIVE"] == "OFF"   # -march=native would compile AMX in
    assert {k: args[k] for k in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")} == dict.fromkeys(
        ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"), "OFF")
    for on in ("GGML_AVX2", "GGML_FMA", "GGML_AVX512", "GGML_AVX512_VNNI", "GGML_AVX512_BF16",
               "GGML_AVX512_VBMI", "GGML_AVX_VNNI"):
        assert args[on] == "ON", on


def test_portable_build_is_avx2_only_and_never_asks_for_what_the_cpu_lacks():
    portable = _flags(llamacpp_cpu.cmake_args("portable", cpu_flags(SAPPHIRE_RAPIDS)))
    assert portable["GGML_AVX2"] == "ON" and portable["GGML_AVX512"] == "OFF" and portable["GGML_AVX_VNNI"] == "OFF"
    haswell = _flags(llamacpp_cpu.cmake_args("host", cpu_flags(HASWELL)))
    assert haswell["GGML_AVX2"] == "ON" and haswell["GGML_AVX512"] == "OFF"
    old = _flags(llamacpp_cpu.cmake_args("portable", cpu_flags(SANDY_BRIDGE)))
    assert old["GGML_AVX"] == "ON" and old["GGML_AVX2"] == old["GGML_FMA"] == "OFF"
    with pytest.raises(ValueError, match="LLAMA_CPU must be one of host, portable"):
        llamacpp_cpu.cmake_args("native", cpu_flags(HASWELL))


def test_system_info_line_is_parsed_into_the_features_that_are_on():
    line = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | REPACK = 1 | "
    assert llamacpp_cpu.parse_system_info(line) == {"SSE3", "AVX", "AVX2", "AVX512", "AMX_INT8", "LLAMAFILE", "REPACK"}


def test_a_build_with_amx_loads_models_without_the_repacking_buffers():
    llama_cpp = pytest.importorskip("llama_cpp")
    warnings = []
    log = types.SimpleNamespace(warning=lambda *a: warnings.append(a[0] % a[1:]))

    def fake(info: bytes):   # llama.cpp's real default parameters, its feature line replaced
        return types.SimpleNamespace(llama_print_system_info=lambda: info,
                                     llama_model_default_params=llama_cpp.llama_model_default_params)

    assert llamacpp_cpu.model_params(fake(b"CPU : AVX2 = 1 | AMX_INT8 = 1 | "), log).use_extra_bufts is False
    assert "AMX" in warnings[0]
    assert llamacpp_cpu.model_params(fake(b"CPU : AVX2 = 1 | AVX512 = 1 | "), log).use_extra_bufts is True
    assert len(warnings) == 1


def test_the_installed_llama_cpp_decodes_the_embedded_model_in_a_child_process():
    pytest.importorskip("llama_cpp")
    rc, out = llamacpp_cpu.probe(decode=True, timeout=120)
    assert rc == 0, (f"llama.cpp {llamacpp_cpu.status_text(rc)} decoding 4 tokens of the embedded model on "
                     f"{describe_cpu()}; rebuild it with bash build.sh. Output:\n{out[-2000:]}")
    assert "AMX_INT8 = 1" not in out
    assert "generated 4" in out.splitlines()


def test_the_installed_build_is_the_one_build_sh_wants_for_this_cpu():
    pytest.importorskip("llama_cpp")
    if not llamacpp_cpu.is_x86():
        pytest.skip("feature flags are chosen for x86 CPUs only")
    assert llamacpp_cpu.check("host") is None
    if "avx512f" in cpu_flags():   # the same build is not the portable one: build.sh would rebuild
        assert "has AVX512" in llamacpp_cpu.check("portable")


def test_build_sh_passes_the_chosen_flags_and_checks_the_install():
    text = (ROOT / "build.sh").read_text()
    assert "-m backends.llamacpp_cpu cmake-args" in text and "-m backends.llamacpp_cpu check" in text
    out = subprocess.run([sys.executable, "-m", "backends.llamacpp_cpu", "cmake-args", "bogus"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr


CRASHING_MAIN = """
import faulthandler, runpy, sys
import backends.null
backends.null.NullBackend.generate = lambda self, prompts: faulthandler._sigsegv()
sys.argv = ["main.py"] + sys.argv[1:]
runpy.run_path("main.py", run_name="__main__")
"""


def test_a_native_crash_in_main_py_ends_in_one_line_and_the_output_stays_partial(tmp_path):
    """A stand-in for a native crash: the null backend's generate() raises SIGSEGV in the child."""
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", CRASHING_MAIN, "--backend", "null", "--accuracy", "--no-progress",
                        "--total-sample-count", "4", "--output-log-dir", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 128 + 11, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the null backend crashed (SIGSEGV) on ") and "partial output, not published" in last
    assert "Segmentation fault" not in p.stderr and "Traceback" not in p.stderr
    [partial] = [d for d in tmp_path.iterdir() if ".partial-" in d.name]
    assert not out.exists() and str(partial) in last
    trace = (partial / "native_crash.txt").read_text()
    assert "Segmentation fault" in trace and "<lambda>" in trace   # Python's stack at the crash


def test_crash_line_names_engine_build_cpu_and_advice():
    line = crash_line(11, {"engine": "llama.cpp (llama-cpp-python 0.3.36; CPU : AMX_INT8 = 1)",
                           "advice": llamacpp_cpu.CRASH_ADVICE, "partial": "/r/x.partial-1"}, "Xeon (amx_int8)",
                      "/r/x.partial-1/native_crash.txt")
    assert line.startswith("error: llama.cpp (llama-cpp-python 0.3.36; CPU : AMX_INT8 = 1) crashed (SIGSEGV) on "
                           "Xeon (amx_int8); rebuild it for this CPU with bash build.sh")
    assert "\n" not in line and line.endswith("native traceback: /r/x.partial-1/native_crash.txt")
    assert "out of memory" in crash_line(9, {}, "cpu", None)


def test_supervised_child_sees_the_same_command_line_and_exit_status(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text("import os, sys\nsys.path.insert(0, sys.argv[1])\nfrom harness.supervisor import supervised\n"
                      "sys.exit(supervised(lambda: print(sys.argv[2:], bool(os.environ.get('HARNESS_CRASH_NOTE')))"
                      " or 3))\n")
    p = subprocess.run([sys.executable, str(script), str(ROOT), "a", "--b=c"], capture_output=True, text=True,
                       timeout=60, env={**os.environ})
    assert p.returncode == 3 and p.stdout.strip() == "['a', '--b=c'] True"
