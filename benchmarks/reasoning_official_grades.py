"""Grades tests/data/reasoning_outputs.json with the reference graders of mlcommons/inference, run
unchanged, and writes tests/data/reasoning_official_grades.json, which
tests/test_reasoning_grade.py compares ours with item by item.

    python -m venv /tmp/ref && /tmp/ref/bin/pip install numpy pandas tqdm sympy pylatexenc transformers
    # ROOT: a checkout of mlcommons/inference with language/*/submodules/prm800k filled in
    /tmp/ref/bin/python benchmarks/reasoning_official_grades.py --inference-root ROOT

deepseek-r1 is graded by language/deepseek-r1/eval_accuracy.py's process_dataframe (what its
command line runs), gpt-oss-120b by eval_mlperf_accuracy.py's evaluate_single_entry (what its
accuracy-log path runs). LiveCodeBench items are not in the file: the reference's runner needs
the LiveCodeBench data set from a hub.
"""
import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

import pandas as pd

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def _load(root: Path, benchmark: str, module: str):
    sys.path.insert(0, str(root / "language" / benchmark))
    try:
        for name in ("eval_accuracy", "eval_mlperf_accuracy"):
            sys.modules.pop(name, None)
        return importlib.import_module(module)
    finally:
        sys.path.pop(0)


def _plain(value):
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else (
        int(value) if hasattr(value, "__index__") else str(value))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--inference-root", required=True, type=Path)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    items = json.loads((DATA / "reasoning_outputs.json").read_text())
    df = pd.DataFrame(items)
    df["tok_model_output_len"] = 1
    out = {}

    ds = _load(args.inference_root, "deepseek-r1", "eval_accuracy")
    graded = ds.process_dataframe(df)
    out["deepseek-r1"] = [{"extracted": _plain(e), "correct": bool(a > 0)}
                          for e, a in zip(graded["extracted_answer"], graded["prompt_accuracy"])]

    oss = _load(args.inference_root, "gpt-oss-120b", "eval_mlperf_accuracy")
    out["gpt-oss-120b"] = []
    for item in items:
        correct, extracted, _ = oss.evaluate_single_entry(item["model_output"], item["ground_truth"], item["dataset"])
        out["gpt-oss-120b"].append({"extracted": _plain(extracted), "correct": bool(correct)})

    (DATA / "reasoning_official_grades.json").write_text(json.dumps(out, ensure_ascii=False, indent=0) + "\n")
    for name, rows in out.items():
        print(f"{name}: {sum(r['correct'] for r in rows)} of {len(rows)} right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
