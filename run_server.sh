#!/usr/bin/env bash
# Server performance run (the reference's run_server.sh, with flags our main.py accepts).
# The target QPS and durations come from user.conf (*.Server.target_qps); TTFT/TPOT limits from
# LoadGen's mlperf.conf for --lg-model-name (llama2-70b: 2000 ms / 200 ms).
#   bash run_server.sh
#   bash run_server.sh --backend openai --api-server http://127.0.0.1:8000 --api-model-name m
# Extra arguments go to main.py. Logs: output-logs/server-<time> unless --output-log-dir is given.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
EXTRAS=${EXTRAS:-llamacpp,hf,openai} bash build.sh
exec .venv/bin/python main.py --scenario Server --output-log-dir "output-logs/server-$(date +%Y%m%d-%H%M%S)" "$@"
