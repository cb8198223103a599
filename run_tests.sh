#!/usr/bin/env bash
# Install what the tests need and run them (the command .ci/run calls).
#   bash run_tests.sh              # whole suite
#   bash run_tests.sh -k harness   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

EXTRAS=llamacpp,hf,openai,plots,test bash build.sh

# The tests lint the shell scripts with shellcheck and open the HTML report in Chromium. Both come
# from Debian's packages; install them when we may (root) and they are missing.
if [ "$(id -u)" = 0 ] && { ! command -v shellcheck >/dev/null || ! command -v chromium >/dev/null; }; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck chromium >/dev/null
fi

export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q -ra "$@" tests
