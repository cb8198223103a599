"""Query Sample Library over the processed OpenOrca pickle (as the MLPerf llama2-70b reference).

The pickle (or the same table as parquet or JSON lines) is the DataFrame written by processorca.py
(or by `python -m inputs.synthetic`): columns id, system_prompt, question, output, input,
tok_input, tok_output, origin, tok_input_length, tok_output_length. Only `tok_input` is needed to
run; `output`/`tok_output` are the references used by evaluation.py. Prompts are kept as plain
lists of token ids: every backend takes ids, and no tensor is built per sample before it is needed.
The reasoning benchmarks' tables (inputs/reasoning.py) are read too: gpt-oss-120b's `input_tokens`
as tok_input, and a table with only `text_input` (deepseek-r1's) is tokenized at load time with
the model's tokenizer and chat template, as its reference does.
"""
from __future__ import annotations

import logging
import operator
import os

import numpy as np

from common.errors import HarnessError
from common.tables import read_table

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("tok_input",)


def read_processed_pickle(path: str):
    """The processed DataFrame (pickle, parquet or JSON lines; see common/tables.py), with a clear
    error for a missing, corrupt, unsafe or wrong-format file."""
    if not path or not os.path.isfile(path):
        raise HarnessError(f"dataset not found: {path} (build it with processorca.py or python -m inputs.synthetic)")
    df = read_table(path, "dataset")
    if "tok_input" not in df.columns and "input_tokens" in df.columns:  # gpt-oss-120b's name for it
        df = df.rename(columns={"input_tokens": "tok_input"})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns and "text_input" not in df.columns]
    if missing:
        raise HarnessError(f"dataset {path} lacks column(s) {', '.join(missing)} "
                           f"(has: {', '.join(map(str, df.columns))})")
    if len(df) == 0:
        raise HarnessError(f"dataset {path} has no rows")
    return df


def token_id(value) -> int:
    """`value` as a token id. operator.index, not int: a float id (1.5) is refused, never cut to
    another token; and a bool is an int to Python, but JSON's `true` is not the token 1."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{str(value).lower()} is not a token id")
    return operator.index(value)


class Dataset:
    def __init__(self, dataset_path: str, total_sample_count: int | None = None,
                 perf_count_override: int | None = None, model_path: str | None = None):
        """total_sample_count None: every row of the dataset. model_path: whose tokenizer turns a
        text_input-only table into ids."""
        self.dataset_path = dataset_path
        df = read_processed_pickle(dataset_path)
        if "tok_input" not in df.columns:
            from inputs.reasoning import prompt_ids
            from inputs.tokenizer import load_tokenizer

            df = df.assign(tok_input=prompt_ids(df, load_tokenizer(model_path)))
        if total_sample_count is None:
            total_sample_count = len(df)
        if total_sample_count < 1:
            raise HarnessError(f"--total-sample-count must be >= 1, got {total_sample_count}")
        if total_sample_count > len(df):
            log.warning("--total-sample-count %d is more than the %d samples in %s: using %d",
                        total_sample_count, len(df), dataset_path, len(df))
        self.total_sample_count = min(len(df), total_sample_count)
        try:
            rows = df["tok_input"].iloc[: self.total_sample_count]
            self.input_ids = [[token_id(t) for t in ids] for ids in rows]
        except (TypeError, ValueError) as e:
            raise HarnessError(f"dataset {dataset_path}: column tok_input must hold lists of token ids ({e})") from e
        if any(len(ids) == 0 for ids in self.input_ids):
            raise HarnessError(f"dataset {dataset_path}: some tok_input entries are empty")
        self.input_lens = [len(ids) for ids in self.input_ids]
        self.perf_count = perf_count_override or self.total_sample_count
        log.info("loaded %d samples from %s", self.total_sample_count, dataset_path)

    def LoadSamplesToRam(self, sample_list):  # noqa: N802 - LoadGen's callback names
        pass  # everything is in memory already

    def UnloadSamplesFromRam(self, sample_list):  # noqa: N802
        pass
