#!/usr/bin/env bash
# Set up the Python environment: a virtual environment in .venv (or $VENV) with this project and
# the extras named in $EXTRAS installed, pinned by pyproject.toml. Idempotent: a second run with the
# same pyproject.toml and extras does nothing. Works on a host or inside the container.
#
#   bash build.sh                      # default extras: llamacpp (the embedded default model)
#   EXTRAS=llamacpp,hf,openai,plots,test bash build.sh
#   EXTRAS=gpu,hf,llamacpp CMAKE_ARGS="-DGGML_CUDA=on" bash build.sh   # CUDA build of llama.cpp
#   LLAMA_CPU=portable bash build.sh   # llama.cpp for any x86-64-v3 CPU (AVX2), e.g. for an image
#
# llama.cpp is built with explicit CPU features, never -march=native: LLAMA_CPU=host (default) takes
# every feature of this CPU that llama.cpp uses except AMX, whose kernels segfault on Q4_K_M models
# (backends/llamacpp_cpu.py). The installed build is checked after every install (its features, and
# 4 tokens decoded in a child process): a wheel from pip's cache built for another CPU is rebuilt.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-llamacpp}
PYTHON=${PYTHON:-python3}

LLAMA_CPU=${LLAMA_CPU:-host}
llamacpp=0
case ",$EXTRAS," in *,llamacpp,*|*,all,*) llamacpp=1 ;; esac
if [ "$llamacpp" = 1 ]; then
    cpu_args=$("$PYTHON" -m backends.llamacpp_cpu cmake-args "$LLAMA_CPU") || exit 2
    export CMAKE_ARGS="$cpu_args ${CMAKE_ARGS:-}"   # the caller's flags come last and win
fi

stamp="$VENV/.build-stamp"
want="$(sha256sum pyproject.toml | cut -c1-16) $EXTRAS ${CMAKE_ARGS:-}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "build.sh: creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip

# torch is pinned to the CPU build when the hf extra is asked for on a machine without CUDA; a
# bare 'torch' would pull several GB of CUDA packages.
# llama-cpp-python compiles llama.cpp (about 11 minutes on 2 cores the first time; pip caches the wheel).
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
echo "build.sh: installing the project with extras [$EXTRAS] (the first llama.cpp build takes ~11 min)"
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"

# A CUDA build cannot be loaded where no GPU driver is (an image build): its check waits for a GPU.
check=$llamacpp
case " ${CMAKE_ARGS:-} " in *-DGGML_CUDA=[oO][nN]*|*-DGGML_CUDA=1*)
    if ! nvidia-smi -L >/dev/null 2>&1; then
        check=0
        echo "build.sh: llama.cpp built with CUDA and no GPU here: its check (python -m backends.llamacpp_cpu check) is left for a machine with one"
    fi ;;
esac
if [ "$check" = 1 ] && ! problem=$("$VENV/bin/python" -m backends.llamacpp_cpu check "$LLAMA_CPU"); then
    # pip's cache is keyed by the source, not by CMAKE_ARGS: build this one afresh.
    echo "build.sh: $problem; rebuilding llama-cpp-python (LLAMA_CPU=$LLAMA_CPU, ~11 min)"
    pin=$(grep -o 'llama-cpp-python\[server\]==[0-9.]*' pyproject.toml | sed 's/\[server\]//')
    "$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps --no-cache-dir "$pin"
    if ! problem=$("$VENV/bin/python" -m backends.llamacpp_cpu check "$LLAMA_CPU"); then
        echo "build.sh: error: $problem, also after a rebuild; try LLAMA_CPU=portable bash build.sh," \
             "or run another backend (--backend hf)" >&2
        exit 1
    fi
fi
echo "$want" > "$stamp"
echo "build.sh: environment ready in $VENV"
