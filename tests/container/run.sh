#!/usr/bin/env bash
# The container, end to end: build the CPU image from scratch with podman, run in it the main job
# (run_accuracy.sh) and a small submission with its --check, results mounted from the host, then
# check on the host that the files are there, complete and owned by the user who ran them.
#
# Exit status: 0 passed, 1 failed, 77 skipped (only when podman or mmdebstrap cannot be installed).
#
#   bash tests/container/run.sh
# Settings (environment variables):
#   BASE_IMAGE   the base to build on (default: docker.io/library/debian:bookworm when a registry
#                answers, else a bookworm made here with mmdebstrap and imported)
#   DEBIAN_MIRROR  for mmdebstrap (default http://deb.debian.org/debian)
#   TEST_UID     the non-root user ids the main job runs with (default 4242)
#   MAIN_SAMPLES demo samples the main job runs in the container (default 16; "" for the whole set)
#   WORK         scratch folder, removed at the end (default: a new one under /var/tmp)
#   KEEP=1       keep the images and WORK
#   REUSE_IMAGE  test this image, already built, instead of building one (to iterate on the checks)
# Pip settings for the build: PIP_CONFIG_FILE is passed as the pip-conf build secret and the CA bundle
# (PIP_CERT, else SSL_CERT_FILE, else Debian's) as pip-cert; torch and a llama-cpp-python wheel
# this machine already built (pip's cache) are mounted at /wheels, so nothing is compiled twice in one
# CI run: build.sh in the image checks that wheel's CPU features and rebuilds it when they differ.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
start=$(date +%s)
say() { echo "container test: $*"; }
skip() { echo "container test: SKIPPED: $* (the container is NOT tested)" >&2; exit 77; }
fail() { echo "container test: FAILED: $*" >&2; exit 1; }
step_time() { say "$1 took $(( $(date +%s) - $2 )) s"; }

# -- tools: podman (runc: crun refuses hybrid cgroups) and mmdebstrap, from Debian where missing
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        skip "needs ${need[*]} and cannot install them (not root on Debian)"
    fi
    say "installing ${need[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >/dev/null 2>&1 \
        || skip "apt-get could not install ${need[*]}"
fi
[ "$(id -u)" = 0 ] || skip "the test runs rootful podman (to run as another user id) and needs root"

WORK=${WORK:-$(mktemp -d /var/tmp/container-test.XXXXXX)}
TAG=$(basename "$WORK" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9\n' '-')
IMAGE=${REUSE_IMAGE:-localhost/llm-loadgen-harness:test-$TAG}
BASE_TAG=localhost/harness-base:$TAG
TEST_UID=${TEST_UID:-4242}
MAIN_SAMPLES=${MAIN_SAMPLES-16}
# podman's default rlimits (nofile 1048576...) may exceed what a sandboxed machine lets it set (here
# even our own hard limits were refused): ask for half of ours, at most 16384
lim() { local h=$1; [ "$h" = unlimited ] && h=32768; echo $(( h / 2 < 16384 ? h / 2 : 16384 )); }
printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n[engine]\nruntime = "runc"\n' \
    "$(lim "$(ulimit -Hn)")" "$(lim "$(ulimit -Hn)")" "$(lim "$(ulimit -Hu)")" "$(lim "$(ulimit -Hu)")" \
    > "$WORK/containers.conf"
export CONTAINERS_CONF=$WORK/containers.conf
cleanup() {
    [ "${KEEP:-0}" = 1 ] && { say "kept $WORK, $IMAGE"; return; }
    [ -n "${REUSE_IMAGE:-}" ] || podman rmi -f "$IMAGE" "$BASE_TAG" >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

build_image() {
    # -- base image: a registry's, else one made here
    if [ -z "${BASE_IMAGE:-}" ]; then
        t=$(date +%s)
        if timeout 60 podman pull -q docker.io/library/debian:bookworm >/dev/null 2>&1; then
            BASE_IMAGE=docker.io/library/debian:bookworm
        else
            say "no registry answers: making a bookworm base with mmdebstrap"
            mmdebstrap --variant=minbase --include=ca-certificates,python3,python3-venv,python3-dev,build-essential,cmake,git \
                bookworm "$WORK/base.tar" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$WORK/mmdebstrap.log" 2>&1 \
                || { tail -20 "$WORK/mmdebstrap.log"; fail "mmdebstrap"; }
            podman import -q "$WORK/base.tar" "$BASE_TAG" >/dev/null || fail "podman import"
            rm -f "$WORK/base.tar"
            BASE_IMAGE=$BASE_TAG
        fi
        step_time "base image $BASE_IMAGE" "$t"
    fi

    # -- wheels this machine has: torch (through the host's pip settings) and llama-cpp-python from pip's cache
    mkdir -p "$WORK/wheels"
    py=.venv/bin/python
    [ -x "$py" ] || py=python3
    torch_pin=$(grep -o '"torch==[0-9.]*"' pyproject.toml | tr -d '"')
    llama_ver=$(grep -o 'llama-cpp-python\[server\]==[0-9.]*' pyproject.toml | sed 's/.*==//')
    $py -m pip download -q --no-deps --only-binary=:all: -d "$WORK/wheels" "$torch_pin" >/dev/null 2>&1 \
        || say "torch not pre-fetched: the build downloads it"
    cached=$(find "$($py -m pip cache dir 2>/dev/null || echo /nonexistent)/wheels" -name "llama_cpp_python-$llama_ver-*.whl" \
             -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -1 | cut -d' ' -f2-)
    if [ -n "$cached" ]; then cp "$cached" "$WORK/wheels/"; else say "no cached llama-cpp-python wheel: the build compiles it (~11 min)"; fi
    say "wheels given to the build: $(cd "$WORK/wheels" && echo ./*.whl)"

    # -- the image, built from scratch (no layer cache); LLAMA_CPU=host is what the host's wheel was built for
    secrets=()
    [ -n "${PIP_CONFIG_FILE:-}" ] && secrets+=(--secret "id=pip-conf,src=$PIP_CONFIG_FILE")
    ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
    [ -s "$ca" ] && secrets+=(--secret "id=pip-cert,src=$ca")
    t=$(date +%s)
    say "building $IMAGE on $BASE_IMAGE"
    podman build --no-cache --network=host -v "$WORK/wheels:/wheels:ro" "${secrets[@]}" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg GGML_CUDA=off --build-arg LLAMA_CPU=host \
        -t "$IMAGE" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "podman build (log above)"; }
    grep -E "build.sh:" "$WORK/build.log"
    step_time "image build" "$t"
}
if [ -n "${REUSE_IMAGE:-}" ]; then say "testing $IMAGE as it is (REUSE_IMAGE)"; else build_image; fi

# pip's build-time settings must not be in the image
leak=$(podman run --rm --network=none "$IMAGE" sh -c 'env | grep -E "^PIP_(CERT|CONFIG_FILE|INDEX_URL|EXTRA_INDEX_URL|FIND_LINKS)="; ls /run/secrets/pip-* 2>/dev/null; find /wheels -mindepth 1 2>/dev/null; echo end') \
    || fail "the image does not start: $leak"
[ "$leak" = end ] || fail "build-time pip settings are in the image: $leak"

# -- the main job, as a non-root user with no network: nothing may be installed at start
RES=$WORK/results
mkdir -p "$RES"
chown "$TEST_UID:$TEST_UID" "$RES"
t=$(date +%s)
# SAMPLES: the image's own command on the first MAIN_SAMPLES demo samples (the whole set takes ~20 min
# on 2 cores; the container adds nothing a smaller run does not exercise); the verdict may be exit 1
podman run --rm --network=none -u "$TEST_UID:$TEST_UID" -v "$RES:/results" -e "SAMPLES=$MAIN_SAMPLES" "$IMAGE" \
    >"$WORK/main.log" 2>&1
rc=$?
tail -15 "$WORK/main.log"
[ "$rc" -le 1 ] || fail "the main job exited $rc (0 or 1 expected)"
grep -q "build.sh: installing" "$WORK/main.log" && fail "the main job installed packages at start"
step_time "main job (exit $rc)" "$t"
job=$(find "$RES" -maxdepth 1 -name 'accuracy-llamacpp-*' | head -1)
[ -n "$job" ] || fail "no accuracy-llamacpp-* folder in the mounted results"
for f in mlperf_log_summary.txt mlperf_log_detail.txt mlperf_log_accuracy.json results.json accuracy.txt \
         TEST06/verify_accuracy.txt; do
    [ -s "$job/$f" ] || fail "$job/$f missing or empty"
done
python3 -m json.tool "$job/results.json" >/dev/null || fail "$job/results.json is not complete JSON"
python3 -m json.tool "$job/mlperf_log_accuracy.json" >/dev/null || fail "mlperf_log_accuracy.json is not complete JSON"
grep -q "No errors encountered during test" "$job/mlperf_log_summary.txt" || fail "LoadGen reported errors: $job"

# -- a small submission (the embedded model, 8 samples, short runs) and its check, through launch.sh
printf '*.Offline.min_duration = 200\n*.Offline.min_query_count = 8\n' > "$RES/tiny.conf"
chown "$TEST_UID:$TEST_UID" "$RES/tiny.conf"
t=$(date +%s)
export CONTAINER_ENGINE=podman VARIANT=cpu SKIP_BUILD=1 IMAGE RESULTS_DIR=$RES MODELS_DIR=$WORK/models DATA_DIR=$WORK/data
bash launch.sh python submission.py --submitter Org --system-name sys1 --division open --scenarios Offline \
    --output-dir /results/submission -- --backend llamacpp --total-sample-count 8 --max-new-tokens 16 \
    --user-conf /results/tiny.conf --no-progress </dev/null >"$WORK/sub.log" 2>&1 \
    || { tail -30 "$WORK/sub.log"; fail "the submission run"; }
bash launch.sh python submission.py --check /results/submission </dev/null >"$WORK/check.log" 2>&1
rc=$?
tail -5 "$WORK/check.log"
# tiny runs break the duration and sample-count rules (exit 1); a broken tree would show "missing"
if [ "$rc" != 1 ] || ! tail -1 "$WORK/check.log" | grep -q "problem(s)$"; then
    fail "submission.py --check exited $rc"
fi
grep -q "missing" "$WORK/check.log" && fail "the submission tree lacks files"
step_time "submission and check" "$t"
scen=$(find "$RES/submission/open/Org/results/sys1" -mindepth 2 -maxdepth 2 -type d -name Offline | head -1)
[ -n "$scen" ] || fail "no open/Org/results/sys1/BENCHMARK/Offline folder in the submission"
for f in performance/run_1/mlperf_log_summary.txt accuracy/accuracy.txt accuracy/mlperf_log_accuracy.json \
         TEST06/verify_accuracy.txt measurements.json; do
    [ -s "$scen/$f" ] || fail "$scen/$f missing or empty"
done
[ -s "$RES/submission/open/Org/systems/sys1.json" ] || fail "the system description is missing"

# -- ownership: the main job's files are the test user's, the submission's the caller's (launch.sh -u)
bad=$(find "$job" \( ! -uid "$TEST_UID" -o ! -gid "$TEST_UID" \) -print | head -3)
[ -z "$bad" ] || fail "not owned by $TEST_UID:$TEST_UID: $bad"
bad=$(find "$RES/submission" \( ! -uid "$(id -u)" -o ! -gid "$(id -g)" \) -print | head -3)
[ -z "$bad" ] || fail "not owned by the caller $(id -u):$(id -g): $bad"

say "PASSED in $(( $(date +%s) - start )) s"
