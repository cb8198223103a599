#!/usr/bin/env bash
# Install what the tests need and run them (the command .ci/run calls).
#   bash run_tests.sh              # whole suite
#   bash run_tests.sh -k harness   # extra arguments go to pytest (and the container test is left out)
# The whole suite also builds and runs the CPU container (tests/container/run.sh, ~20 min on 2 cores,
# after build.sh so it reuses the llama.cpp wheel just built); CONTAINER_TEST=0 leaves it out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

EXTRAS=llamacpp,hf,openai,plots,test bash build.sh

# The tests lint the shell scripts with shellcheck and open the HTML report in Chromium. Both come
# from Debian's packages; install them when we may (root) and they are missing.
if [ "$(id -u)" = 0 ] && { ! command -v shellcheck >/dev/null || ! command -v chromium >/dev/null; }; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck chromium >/dev/null
fi

export HF_HUB_OFFLINE=1
container=0
if [ $# = 0 ] && [ "${CONTAINER_TEST:-1}" = 1 ]; then
    bash tests/container/run.sh || container=$?
fi
status=0
.venv/bin/python -m pytest -q -ra "$@" tests || status=$?
# the exit status covers both; 77 is the container test's skip (tools not installable), said loudly above
case $container in
    0) ;;
    77) echo "run_tests.sh: the container test was SKIPPED (tests/container/run.sh, see its message above)" >&2 ;;
    *) echo "run_tests.sh: the container test FAILED (exit $container, tests/container/run.sh)" >&2; status=1 ;;
esac
exit $status
