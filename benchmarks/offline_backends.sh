#!/usr/bin/env bash
# Offline throughput of the backends on the embedded Gemma 3 270M and the demo set (64 prompts,
# every output forced to 128 tokens with --ignore-eos), in interleaved rounds so that a busy
# minute hits every configuration alike. Prints one line per run: LoadGen's output tokens/s,
# the total output tokens, wall time and the 1-minute load average before and after.
#
#   bash benchmarks/offline_backends.sh [ROUNDS] [OUT_DIR] [CONFIG ...]
#
# CONFIG: npN (llamacpp, n_parallel=N, n_threads=2; npN:DIR takes llama-cpp-python from DIR, another
# build installed with pip install --target DIR), hf32 hfbf16 (hf float32 / bfloat16, batches of 64),
# vllm (in-process, bfloat16, from .venv-vllm; skipped if that venv is missing).
# Default: all of them, 2 rounds. One vLLM engine at a time: run nothing else with vLLM meanwhile.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-2}
OUT=${2:-$(mktemp -d /tmp/offline-backends-XXXX)}
shift 2 2>/dev/null || shift $#
CONFIGS=("$@")
[ ${#CONFIGS[@]} -eq 0 ] && CONFIGS=(np1 np2 np4 np8 hf32 hfbf16 vllm)
PY=${PY:-$ROOT/.venv/bin/python}
VLLM_PY=${VLLM_PY:-$ROOT/.venv-vllm/bin/python}
export HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-4}
export VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-1} VLLM_CPU_NUM_OF_RESERVED_CPU=${VLLM_CPU_NUM_OF_RESERVED_CPU:-0}
mkdir -p "$OUT"
printf '*.Offline.target_qps = 1\n*.Offline.min_duration = 1000\n*.Offline.min_query_count = 64\n' > "$OUT/perf.conf"
common=(--scenario Offline --no-progress --user-conf "$OUT/perf.conf" --max-new-tokens 128 --ignore-eos)
cd "$ROOT" || exit 2
for r in $(seq 1 "$ROUNDS"); do
  i=0
  for cfg in "${CONFIGS[@]}"; do
    i=$((i + 1)); run="${cfg//[^a-zA-Z0-9]/_}-$r-$i"      # a config may be listed twice in a round
    case $cfg in
      np*) n=${cfg#np}; site=
           case $n in *:*) site=${n#*:}; n=${n%%:*} ;; esac
           cmd=("$PY" main.py "${common[@]}" --backend llamacpp --backend-arg n_threads=2
                --backend-arg "n_parallel=$n" --batch-size 64)
           [ -n "$site" ] && cmd=(env "PYTHONPATH=$site" "${cmd[@]}") ;;
      hf32) cmd=("$PY" main.py "${common[@]}" --backend hf --dtype float32 --batch-size 64) ;;
      hfbf16) cmd=("$PY" main.py "${common[@]}" --backend hf --dtype bfloat16 --batch-size 64) ;;
      vllm) [ -x "$VLLM_PY" ] || continue
            cmd=("$VLLM_PY" main.py "${common[@]}" --backend vllm --dtype bfloat16 --backend-arg max_model_len=2048) ;;
      *) echo "unknown config $cfg" >&2; exit 2 ;;
    esac
    t0=$(date +%s); l0=$(cut -d' ' -f1 /proc/loadavg)
    "${cmd[@]}" --output-log-dir "$OUT/$run" > "$OUT/$run.log" 2>&1; rc=$?
    figures=$("$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); print(r['loadgen']['tokens_per_s'], r['requests']['output_tokens']['total'])" "$OUT/$run/results.json" 2>/dev/null)
    echo "$(date -u +%H:%M:%S) round $r $cfg rc=$rc tok/s,total=${figures:-none} wall=$(( $(date +%s) - t0 ))s load=$l0->$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT/summary.txt"
  done
done
