"""The demo data sets that the default run uses when no --dataset-path is given.

assets/openorca_demo/open_orca_demo.parquet (llama2-70b) and assets/cnndm_demo/
cnn_dailymail_demo.jsonl (llama3.1-8b) are small files in the benchmarks' source formats, written
for this project. On first use one goes through its preparation tool (processorca.py,
processcnndm.py) with the model's tokenizer (tokens depend on the model) and the result is kept
under data/, keyed by model. The reasoning benchmarks' demo sets (assets/reasoning_demo/*.jsonl)
are read as they are: their prompts are tokenized at load (inputs/reasoning.py). Which benchmark
uses which: mlsubmit/registry.py.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys

from common.errors import HarnessError
from inputs.models import DEFAULT_MODEL_NAME, file_fingerprint

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPENORCA_DEMO = "assets/openorca_demo"
CNNDM_DEMO = "assets/cnndm_demo"
DEMO_PARQUET = os.path.join(ROOT, OPENORCA_DEMO, "open_orca_demo.parquet")
DEMO_SAMPLES = 64  # 16 per origin
CNNDM_DEMO_FILE = os.path.join(ROOT, CNNDM_DEMO, "cnn_dailymail_demo.jsonl")
REASONING_DEMOS = ("assets/reasoning_demo/deepseek-r1.jsonl", "assets/reasoning_demo/gpt-oss-120b.jsonl")
# The embedded Gemma 3 270M is a base model: on these prompts it practically never emits an end
# token, so every answer would run to the reference's 1024 tokens (~15 s each on 2 CPU cores).
# The demo caps answers at 128 tokens (the demo references average ~25); its accuracy targets in
# accuracy_targets.yaml were recorded with the same cap.
DEMO_MAX_NEW_TOKENS = 128


def default_dataset_path(model_path: str | None, export_root: str | None = None, demo: str = OPENORCA_DEMO) -> str:
    """Processed demo set `demo` (OPENORCA_DEMO or CNNDM_DEMO) for `model_path` (None: the
    embedded model), built if missing; a reasoning demo set is its file."""
    if demo in REASONING_DEMOS:
        return os.path.join(ROOT, demo)
    if demo not in (OPENORCA_DEMO, CNNDM_DEMO):
        raise HarnessError(f"no demo data set {demo!r} (known: {', '.join((OPENORCA_DEMO, CNNDM_DEMO) + REASONING_DEMOS)})")
    source = DEMO_PARQUET if demo == OPENORCA_DEMO else CNNDM_DEMO_FILE
    # Keyed by model (tokens depend on it) and by the source file (a changed demo set is rebuilt).
    model_key = DEFAULT_MODEL_NAME if model_path is None else \
        f"{os.path.basename(model_path.rstrip('/'))}-{file_fingerprint(model_path)}"
    key = f"{model_key}-{file_fingerprint(source)[:8]}"
    root = export_root or os.path.join(ROOT, "data")
    if demo == OPENORCA_DEMO:
        export_dir = os.path.join(root, f"open_orca_demo-{key}")
        path = os.path.join(export_dir, f"open_orca_gpt4_tokenized_llama.sampled_{DEMO_SAMPLES}.pkl")
        tool = "processorca.py"
        cmd = ["--dataset_pq_path", source, "--export_dir", export_dir, "--seqlen_limit", "1024",
               "--num_total_samples", str(DEMO_SAMPLES), "--calibration_subset_size", str(DEMO_SAMPLES // 4)]
        cmd += [] if model_path is None else ["--model_dir", model_path]
    else:
        export_dir = os.path.join(root, f"cnndm_demo-{key}")
        path = os.path.join(export_dir, "cnn_eval.json")
        tool = "processcnndm.py"
        cmd = ["--dataset-path", source, "--export-dir", export_dir]
        cmd += [] if model_path is None else ["--model-id", model_path]
    if os.path.isfile(path):
        return path
    log.info("building the demo data set for %s in %s", model_path or DEFAULT_MODEL_NAME, export_dir)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, tool), *cmd], capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.isfile(path):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise HarnessError(f"could not build the demo data set with {tool}: {last}")
    return path


def main(argv=None) -> int:
    """python -m inputs.demo [--model-path P]: print the demo pickle's path (building it if needed)."""
    import argparse

    from common.errors import exit_on_error

    ap = argparse.ArgumentParser(description=main.__doc__, allow_abbrev=False)
    ap.add_argument("--model-path", default=None, help="model whose tokenizer builds it (default: embedded)")
    ap.add_argument("--demo", default=OPENORCA_DEMO, choices=[OPENORCA_DEMO, CNNDM_DEMO], help="which demo set")
    args = ap.parse_args(argv)
    return exit_on_error(lambda: print(default_dataset_path(args.model_path, demo=args.demo)) or 0)


if __name__ == "__main__":
    sys.exit(main())
