"""Query Sample Library over the processed OpenOrca pickle (as the MLPerf llama2-70b reference).

The pickle is the DataFrame written by processorca.py (or by `python -m inputs.synthetic`):
columns id, system_prompt, question, output, input, tok_input, tok_output, origin,
tok_input_length, tok_output_length. Only `tok_input` is needed to run; `output`/`tok_output`
are the references used by evaluation.py. Prompts are kept as plain lists of token ids: every
backend takes ids, and no tensor is built per sample before it is needed.
"""
from __future__ import annotations

import logging
import os
import pickle

from common.errors import HarnessError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("tok_input",)


def read_processed_pickle(path: str):
    """The processed DataFrame, with a clear error for a missing, corrupt or wrong-format file."""
    import pandas as pd

    if not path or not os.path.isfile(path):
        raise HarnessError(f"dataset not found: {path} (build it with processorca.py or python -m inputs.synthetic)")
    try:
        df = pd.read_pickle(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, OSError) as e:
        raise HarnessError(f"cannot read dataset {path}: not a pandas pickle ({type(e).__name__}: {e})".splitlines()[0]) from e
    if not isinstance(df, pd.DataFrame):
        raise HarnessError(f"dataset {path} holds a {type(df).__name__}, expected a pandas DataFrame")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise HarnessError(f"dataset {path} lacks column(s) {', '.join(missing)} "
                           f"(has: {', '.join(map(str, df.columns))})")
    if len(df) == 0:
        raise HarnessError(f"dataset {path} has no rows")
    return df


class Dataset:
    def __init__(self, dataset_path: str, total_sample_count: int = 24576, perf_count_override: int | None = None):
        self.dataset_path = dataset_path
        df = read_processed_pickle(dataset_path)
        self.total_sample_count = min(len(df), total_sample_count)
        if self.total_sample_count < 1:
            raise HarnessError(f"--total-sample-count must be >= 1, got {total_sample_count}")
        try:
            self.input_ids = [[int(t) for t in ids] for ids in df["tok_input"].iloc[: self.total_sample_count]]
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
