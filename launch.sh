#!/usr/bin/env bash
# Build the image and run it with the GPUs, shared memory for PyTorch (--ipc=host) and these
# mounts (host folder -> container folder), as the reference's launch.sh does:
#   MODELS_DIR  -> /models   checkpoints and GGUF files      (default ./models)
#   DATA_DIR    -> /data     processed OpenOrca pickles       (default ./data)
#   RESULTS_DIR -> /results  LoadGen logs and results.json    (default ./output-logs)
# The container user has the host user's ids, so results belong to you.
#   bash launch.sh                                   # the main job (run_accuracy.sh)
#   bash launch.sh python main.py --scenario Server --backend hf --model-path /models/llama2-7b \
#        --dtype float16 --device cuda --dataset-path /data/sampled.pkl --output-log-dir /results/s1
#   bash launch.sh python submission.py --submitter ORG --system-name NAME --division closed \
#        --output-dir /results/submission -- --backend hf --model-path /models/llama2-70b ...  (docs/submission.md)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

IMAGE=${IMAGE:-llm-loadgen-harness:0.1.0}
MODELS_DIR=$(realpath -m "${MODELS_DIR:-models}")
DATA_DIR=$(realpath -m "${DATA_DIR:-data}")
RESULTS_DIR=$(realpath -m "${RESULTS_DIR:-output-logs}")
mkdir -p "$MODELS_DIR" "$DATA_DIR" "$RESULTS_DIR"
MOUNTS=(-v "$MODELS_DIR:/models" -v "$DATA_DIR:/data" -v "$RESULTS_DIR:/results")

docker build --build-arg USER_ID="$(id -u)" --build-arg GROUP_ID="$(id -g)" -t "$IMAGE" .
tty_flags=()
[ -t 0 ] && tty_flags=(-it)
docker run --rm "${tty_flags[@]}" --gpus all --ipc=host -u "$(id -u):$(id -g)" "${MOUNTS[@]}" "$IMAGE" "$@"
