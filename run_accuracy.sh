#!/usr/bin/env bash
# The main job: an Offline accuracy run through LoadGen, then TEST06 checks and ROUGE evaluation.
# With no settings it runs llama.cpp on the embedded Gemma 3 270M over the demo OpenOrca set,
# setting up the environment first (build.sh). Exits non-zero when a step or the accuracy fails.
#
# Settings (environment variables, or the same names as --flags: --backend hf --samples 16 ...):
#   BACKEND       llamacpp | hf | fakequant | openai | null         (default llamacpp)
#   MODEL_PATH    checkpoint folder or GGUF                          (default: embedded Gemma GGUF)
#   DATASET_PATH  processed pickle (default: the demo set, built with processorca.py)
#   DTYPE DEVICE  for hf/fakequant                                   (default float32 cpu)
#   QUANT_CONFIG  fake-quant YAML for BACKEND=fakequant
#   SAMPLES       --total-sample-count                               (default 24576: the whole set)
#   MODEL_NAME    whose accuracy targets apply (accuracy_targets.yaml; default: chosen by evaluation.py)
#   ACCURACY_LEVEL 99 | 99.9                                         (default 99)
#   OUTPUT_DIR    where logs go (default output-logs/accuracy-<backend>-<time>; must not exist)
#   EXTRA_ARGS    more main.py flags, e.g. "--backend-arg n_threads=2 --max-new-tokens 256"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

while [ $# -gt 0 ]; do
    case "$1" in
        --backend) BACKEND=$2 ;; --model-path) MODEL_PATH=$2 ;; --dataset-path) DATASET_PATH=$2 ;;
        --dtype) DTYPE=$2 ;; --device) DEVICE=$2 ;; --quant-config) QUANT_CONFIG=$2 ;;
        --samples) SAMPLES=$2 ;; --model-name) MODEL_NAME=$2 ;; --accuracy-level) ACCURACY_LEVEL=$2 ;;
        --output-dir) OUTPUT_DIR=$2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "run_accuracy.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done
BACKEND=${BACKEND:-llamacpp}
DTYPE=${DTYPE:-float32}
DEVICE=${DEVICE:-cpu}
SAMPLES=${SAMPLES:-24576}
ACCURACY_LEVEL=${ACCURACY_LEVEL:-99}
OUTPUT_DIR=${OUTPUT_DIR:-output-logs/accuracy-$BACKEND-$(date +%Y%m%d-%H%M%S)}
PY=.venv/bin/python

start=$(date +%s)
echo "== 1/4 environment (build.sh)"
EXTRAS=${EXTRAS:-llamacpp,hf,openai} bash build.sh

model_args=()
[ -n "${MODEL_PATH:-}" ] && model_args=(--model-path "$MODEL_PATH")
run_args=(--scenario Offline --accuracy --backend "$BACKEND" --dtype "$DTYPE" --device "$DEVICE"
          --total-sample-count "$SAMPLES" --output-log-dir "$OUTPUT_DIR")
if [ -z "${DATASET_PATH:-}" ]; then
    # main.py finds the same demo pickle itself (and applies the demo's settings, see inputs/demo.py).
    echo "== 2/4 demo data set (processorca.py on assets/openorca_demo)"
    DATASET_PATH=$($PY -m inputs.demo "${model_args[@]}")
else
    echo "== 2/4 data set: $DATASET_PATH"
    run_args+=(--dataset-path "$DATASET_PATH")
fi

echo "== 3/4 Offline accuracy run ($BACKEND) -> $OUTPUT_DIR"
[ -n "${QUANT_CONFIG:-}" ] && run_args+=(--quant-config "$QUANT_CONFIG")
# shellcheck disable=SC2086  # EXTRA_ARGS is a list of flags
$PY main.py "${run_args[@]}" "${model_args[@]}" ${EXTRA_ARGS:-}

echo "== 4/4 TEST06 checks and accuracy"
$PY compliance.py --accuracy-log "$OUTPUT_DIR/mlperf_log_accuracy.json" --scenario Offline \
    --output-dir "$OUTPUT_DIR/TEST06"
eval_args=(--mlperf-accuracy-file "$OUTPUT_DIR/mlperf_log_accuracy.json" --dataset-file "$DATASET_PATH"
           --accuracy-level "$ACCURACY_LEVEL")
[ -n "${MODEL_PATH:-}" ] && eval_args+=(--checkpoint-path "$MODEL_PATH")
[ -n "${MODEL_NAME:-}" ] && eval_args+=(--model-name "$MODEL_NAME")
status=0
$PY evaluation.py "${eval_args[@]}" || status=$?
echo "Logs, results.json and accuracy.txt: $OUTPUT_DIR   ($(( $(date +%s) - start )) s in all)"
exit $status
