"""The demo data set that the default run uses when no --dataset-path is given.

assets/openorca_demo/open_orca_demo.parquet is a small OpenOrca-format file written for this
project. On first use it goes through processorca.py with the model's tokenizer (tokens depend
on the model) and the pickle is kept under data/, keyed by model.
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
DEMO_PARQUET = os.path.join(ROOT, "assets", "openorca_demo", "open_orca_demo.parquet")
DEMO_SAMPLES = 64  # 16 per origin
# The embedded Gemma 3 270M is a base model: on these prompts it practically never emits an end
# token, so every answer would run to the reference's 1024 tokens (~15 s each on 2 CPU cores).
# The demo caps answers at 128 tokens (the demo references average ~25); its accuracy targets in
# accuracy_targets.yaml were recorded with the same cap.
DEMO_MAX_NEW_TOKENS = 128


def default_dataset_path(model_path: str | None, export_root: str | None = None) -> str:
    """Processed demo pickle for `model_path` (None: the embedded model), built if missing."""
    # Keyed by model (tokens depend on it) and by the parquet (a changed demo set is rebuilt).
    model_key = DEFAULT_MODEL_NAME if model_path is None else \
        f"{os.path.basename(model_path.rstrip('/'))}-{file_fingerprint(model_path)}"
    key = f"{model_key}-{file_fingerprint(DEMO_PARQUET)[:8]}"
    export_dir = os.path.join(export_root or os.path.join(ROOT, "data"), f"open_orca_demo-{key}")
    path = os.path.join(export_dir, f"open_orca_gpt4_tokenized_llama.sampled_{DEMO_SAMPLES}.pkl")
    if os.path.isfile(path):
        return path
    log.info("building the demo data set for %s in %s", model_path or DEFAULT_MODEL_NAME, export_dir)
    cmd = [sys.executable, os.path.join(ROOT, "processorca.py"), "--dataset_pq_path", DEMO_PARQUET,
           "--export_dir", export_dir, "--seqlen_limit", "1024", "--num_total_samples", str(DEMO_SAMPLES),
           "--calibration_subset_size", str(DEMO_SAMPLES // 4)]
    if model_path is not None:
        cmd += ["--model_dir", model_path]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.isfile(path):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise HarnessError(f"could not build the demo data set with processorca.py: {last}")
    return path


def main(argv=None) -> int:
    """python -m inputs.demo [--model-path P]: print the demo pickle's path (building it if needed)."""
    import argparse

    from common.errors import exit_on_error

    ap = argparse.ArgumentParser(description=main.__doc__, allow_abbrev=False)
    ap.add_argument("--model-path", default=None, help="model whose tokenizer builds it (default: embedded)")
    args = ap.parse_args(argv)
    return exit_on_error(lambda: print(default_dataset_path(args.model_path)) or 0)


if __name__ == "__main__":
    sys.exit(main())
