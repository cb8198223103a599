"""Build the MLPerf Llama-3.1-8B CNN-DailyMail dataset from a local copy of the validation split.

Same prompt, columns and file as the reference's download_cnndm.py (mlcommons/inference,
language/llama3.1-8b), but from a file on disk instead of a download:

    python processcnndm.py --dataset-path cnn_dailymail-3.0.0-validation.parquet \
        --model-id Llama-3.1-8B-Instruct --export-dir data/          # -> data/cnn_eval.json, 13,368 rows
    python processcnndm.py ... --n-samples 5000                       # -> data/cnn_eval_5000.json

The input is a table with the split's columns (`article`, `highlights`; others are dropped) as
parquet, JSON lines or a pandas pickle (read without running code from it, common/tables.py).
Each row becomes the reference's record: `instruction` ({"llama": template}), `input` (the
article), `tok_input` (the template filled with the article, tokenized with the tokenizer's
defaults: Llama 3.1 puts its BOS in front and no chat template is applied, as in the reference),
`output` (the highlights). The file is the reference's JSON array (what its dataset.py reads with
pandas.read_json); the same table is written beside it as parquet.

--n-samples picks rows as the reference does: the Hugging Face datasets shuffle with seed 42,
which is numpy's default_rng(42).permutation, then the first n. Outputs go to a temporary folder
first and are moved into place only when all of them are written; existing ones are never replaced.
"""
from __future__ import annotations

import argparse
import logging
import os

import numpy as np

from common.errors import HarnessError, exit_on_error
from common.files import make_folder
from common.tables import read_table
from inputs.fast_tokenize import load_tokenizer, tokenize
from processorca import export

log = logging.getLogger("processcnndm")

INSTRUCTION = "llama"
INSTRUCTION_TEMPLATE = {
    INSTRUCTION: ("Summarize the following news article in 128 tokens. Please output the summary only, without "
                  "any other text.\n\nArticle:\n{input}\n\nSummary:"),
}
SHUFFLE_SEED = 42
COLUMNS = ["instruction", "input", "tok_input", "output"]


def output_name(n_samples: int | None) -> str:
    """The reference's file name."""
    return "cnn_eval.json" if n_samples is None else f"cnn_eval_{n_samples}.json"


def read_split(path: str, text_column: str = "article", summary_column: str = "highlights"):
    df = read_table(path, "CNN-DailyMail table")
    missing = [c for c in (text_column, summary_column) if c not in df.columns]
    if missing:
        raise HarnessError(f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))}); "
                           "choose others with --text-column / --summary-column")
    for col in (text_column, summary_column):
        bad = [i for i, v in enumerate(df[col]) if not isinstance(v, str)]
        if bad:
            raise HarnessError(f"{path}: column {col} of row {bad[0]} is {df[col].iloc[bad[0]]!r}, not text "
                               f"({len(bad)} such rows)")
    if len(df) == 0:
        raise HarnessError(f"{path} has no rows")
    return df


def select(df, n_samples: int | None):
    """Every row, or the reference's n: datasets' shuffle(seed=42), then the first n."""
    if n_samples is None:
        return df.reset_index(drop=True)
    if not 1 <= n_samples <= len(df):
        raise HarnessError(f"--n-samples must be between 1 and the {len(df)} rows of the input, got {n_samples}")
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(df))[:n_samples]
    return df.iloc[order].reset_index(drop=True)


def build(df, tokenizer, text_column: str = "article", summary_column: str = "highlights"):
    """The reference's records for the rows of `df`."""
    import pandas as pd

    template = INSTRUCTION_TEMPLATE[INSTRUCTION]
    articles = df[text_column].tolist()
    prompts = [template.format_map({"input": a}) for a in articles]
    ids = tokenize(prompts, tokenizer, add_special_tokens=True, desc="tokenizing prompts")
    out = pd.DataFrame({"instruction": [dict(INSTRUCTION_TEMPLATE) for _ in articles], "input": articles,
                        "output": df[summary_column].tolist()})
    out["tok_input"] = pd.Series([list(map(int, row)) for row in ids], dtype=object)
    return out[COLUMNS]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--dataset-path", required=True,
                   help="local CNN-DailyMail 3.0.0 validation split (.parquet, .jsonl or .pkl)")
    p.add_argument("--model-id", "--model-dir", dest="model_id", default=None,
                   help="tokenizer: a Hugging Face checkpoint folder (Llama-3.1-8B-Instruct) or a .gguf file "
                        "(default: the embedded model)")
    p.add_argument("--text-column", default="article", help="column holding the article")
    p.add_argument("--summary-column", default="highlights", help="column holding the reference summary")
    p.add_argument("--n-samples", type=int, default=None, help="rows to keep, chosen as the reference does")
    p.add_argument("--export-dir", default=os.environ.get("DATASET_CNNDM_PATH", "data"),
                   help="output folder (default: $DATASET_CNNDM_PATH or data, as the reference)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    df = select(read_split(args.dataset_path, args.text_column, args.summary_column), args.n_samples)
    out_dir = make_folder(args.export_dir, "--export-dir")  # before the slow tokenizer load
    name = output_name(args.n_samples)
    for existing in (out_dir / name, (out_dir / name).with_suffix(".parquet")):
        if existing.exists():  # an earlier data set is never replaced
            raise HarnessError(f"{existing} exists already; remove it or choose another --export-dir")
    tokenizer = load_tokenizer(args.model_id)
    records = build(df, tokenizer, args.text_column, args.summary_column)
    for path in export({name: records}, out_dir):
        log.info("wrote %s", path)
    lengths = records["tok_input"].map(len)
    log.info("%d samples; prompt tokens min %d, mean %.0f, max %d", len(records), lengths.min(), lengths.mean(),
             lengths.max())


if __name__ == "__main__":
    exit_on_error(main)
