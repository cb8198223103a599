#!/usr/bin/env bash
# Build the image and run it with these mounts (host folder -> container folder), as the
# reference's launch.sh does:
#   MODELS_DIR  -> /models   checkpoints and GGUF files      (default ./models)
#   DATA_DIR    -> /data     processed OpenOrca pickles       (default ./data)
#   RESULTS_DIR -> /results  LoadGen logs and results.json    (default ./output-logs)
# The container runs with your user and group ids, so results belong to you.
#   bash launch.sh                                   # the main job (run_accuracy.sh)
#   bash launch.sh python main.py --scenario Server --backend hf --model-path /models/llama2-7b \
#        --dtype float16 --device cuda --dataset-path /data/sampled.pkl --output-log-dir /results/s1
#   bash launch.sh python submission.py --submitter ORG --system-name NAME --division closed \
#        --output-dir /results/submission -- --backend hf --model-path /models/llama2-70b ...  (docs/submission.md)
# Settings (environment variables):
#   CONTAINER_ENGINE  docker | podman   (default: the first of them that answers)
#   VARIANT           gpu | cpu         (default gpu where GPUs and the NVIDIA container toolkit are found)
#   BASE_IMAGE        the CPU variant's base (default docker.io/library/debian:bookworm; README "Container"
#                     makes one locally without a registry)
#   IMAGE             image tag (default llm-loadgen-harness:0.1.0, with -cpu for the CPU variant)
#   PIP_CONF_FILE PIP_CERT_FILE   a pip.conf and a CA bundle for the build, passed as build secrets
#   SKIP_BUILD=1      run the image as it is
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

die() { echo "launch.sh: error: $*" >&2; exit 2; }

engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
    for e in docker podman; do
        # a docker CLI without a reachable daemon does not count
        if command -v "$e" >/dev/null && "$e" info >/dev/null 2>&1; then engine=$e; break; fi
    done
    [ -n "$engine" ] || die "no working container engine: install docker or podman (README \"Container\"), or set CONTAINER_ENGINE"
fi
command -v "$engine" >/dev/null || die "CONTAINER_ENGINE=$engine is not installed"

has_gpu() {
    command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU' \
        && { command -v nvidia-container-cli >/dev/null || command -v nvidia-ctk >/dev/null; }
}
if [ -z "${VARIANT:-}" ]; then
    if has_gpu; then VARIANT=gpu; else VARIANT=cpu; fi
fi
build_args=()
run_args=(--ipc=host)
case "$VARIANT" in
    gpu)
        IMAGE=${IMAGE:-llm-loadgen-harness:0.1.0}
        [ -n "${BASE_IMAGE:-}" ] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
        # podman reaches the GPUs through CDI (nvidia-ctk cdi generate), docker through its toolkit hook
        if [ "$(basename "$engine")" = podman ]; then run_args+=(--device nvidia.com/gpu=all); else run_args+=(--gpus all); fi ;;
    cpu)
        IMAGE=${IMAGE:-llm-loadgen-harness:0.1.0-cpu}
        build_args+=(--build-arg "BASE_IMAGE=${BASE_IMAGE:-docker.io/library/debian:bookworm}" --build-arg GGML_CUDA=off) ;;
    *) die "VARIANT must be gpu or cpu, got '$VARIANT'" ;;
esac
[ -n "${PIP_CONF_FILE:-}" ] && build_args+=(--secret "id=pip-conf,src=$PIP_CONF_FILE")
[ -n "${PIP_CERT_FILE:-}" ] && build_args+=(--secret "id=pip-cert,src=$PIP_CERT_FILE")

MODELS_DIR=$(realpath -m "${MODELS_DIR:-models}")
DATA_DIR=$(realpath -m "${DATA_DIR:-data}")
RESULTS_DIR=$(realpath -m "${RESULTS_DIR:-output-logs}")
mkdir -p "$MODELS_DIR" "$DATA_DIR" "$RESULTS_DIR"
run_args+=(-v "$MODELS_DIR:/models" -v "$DATA_DIR:/data" -v "$RESULTS_DIR:/results" -u "$(id -u):$(id -g)")
# rootless podman maps ids into a user namespace; keep-id makes the container's ids the caller's
if [ "$(basename "$engine")" = podman ] && [ "$(id -u)" != 0 ]; then run_args+=(--userns=keep-id); fi
[ -t 0 ] && run_args+=(-it)

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "launch.sh: building $IMAGE ($VARIANT) with $engine"
    "$engine" build "${build_args[@]}" -t "$IMAGE" .
fi
exec "$engine" run --rm "${run_args[@]}" "$IMAGE" "$@"
