#!/usr/bin/env bash
# Offline performance run (the reference's run_offline.sh, with flags our main.py accepts).
#   bash run_offline.sh                                   # llama.cpp + embedded Gemma, demo data
#   bash run_offline.sh --backend hf --model-path /models/Llama-2-70b-chat-hf --dtype float16 \
#        --device cuda --dataset-path /data/open_orca_gpt4_tokenized_llama.sampled_24576.pkl
# Extra arguments go to main.py. Logs: output-logs/offline-<time> unless --output-log-dir is given.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
EXTRAS=${EXTRAS:-llamacpp,hf,openai} bash build.sh
exec .venv/bin/python main.py --scenario Offline --output-log-dir "output-logs/offline-$(date +%Y%m%d-%H%M%S)" "$@"
