#!/usr/bin/env bash
# Set up the Python environment: a virtual environment in .venv (or $VENV) with this project and
# the extras named in $EXTRAS installed, pinned by pyproject.toml. Idempotent: a second run with the
# same pyproject.toml and extras does nothing. Works on a host or inside the container.
#
#   bash build.sh                      # default extras: llamacpp (the embedded default model)
#   EXTRAS=llamacpp,hf,openai,plots,test bash build.sh
#   EXTRAS=gpu,hf,llamacpp CMAKE_ARGS="-DGGML_CUDA=on" bash build.sh   # CUDA build of llama.cpp
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-llamacpp}
PYTHON=${PYTHON:-python3}

stamp="$VENV/.build-stamp"
want="$(sha256sum pyproject.toml | cut -c1-16) $EXTRAS"
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
echo "$want" > "$stamp"
echo "build.sh: environment ready in $VENV"
