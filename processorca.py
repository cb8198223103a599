"""Build the MLPerf Llama-2-70B OpenOrca dataset: filter, tokenize and sample the GPT-4 parquet.

Same command line, files and row-for-row result as the reference processorca.py
(mlcommons/inference, language/llama2-70b):

    python processorca.py --dataset_pq_path 1M-GPT4-Augmented.parquet --model_dir Llama-2-70b-chat-hf \
        --seqlen_limit 1024 --export_dir data/ --num_total_samples 24576

Semantics, in the reference's order:
1. `input` is the Llama-2 chat prompt built from system_prompt and question; `output` is the
   parquet's `response`. Both are tokenized with the tokenizer's defaults (special tokens added,
   so a Llama-2 input starts with two BOS ids: the literal "<s>" plus the added one, then "▁[",
   518: a Llama tokenizer keeps the reference's legacy spacing, see inputs/fast_tokenize.py), and a
   Llama-2 input gets token 29871 appended (see --response_init_token).
2. Keep rows whose input and output are ASCII apart from ’ – “ ” —, whose token lengths are
   both strictly below --seqlen_limit, whose output has at least 3 tokens, and, for origins
   niv and t0, whose system prompt is not one of BAD_SYSTEM_PROMPTS.
3. Sample num_total_samples / n_origins rows from each origin (seed 1337), then a calibration
   subset from that sample (seed 12345).

Differences from the reference, all for robustness or speed, none changing the rows:
- the string filters run before tokenizing, and tokenizing is batched: a Llama-2-style tokenizer
  encodes each distinct word once (same ids), others use multi-threaded Rust
  (inputs/fast_tokenize.py);
- a full pickle left in the export folder is never silently reused: every run rebuilds;
- bad input gives one error line and no half-written files (outputs go to a temporary folder
  first and are moved into place only when all of them are written).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import HarnessError, exit_on_error
from common.files import make_folder
from inputs.fast_tokenize import load_tokenizer, tokenize

log = logging.getLogger("processorca")

LLAMA_PROMPT_SYSTEM = "<s>[INST] <<SYS>>\n{}\n<</SYS>>\n\n{} [/INST]"
LLAMA_PROMPT_NO_SYSTEM = "<s>[INST] {} [/INST]"

# Typographic quotes and dashes are the only non-ASCII characters kept (the reference's list).
ALLOWED_NON_ASCII = "’–“”—"
_NOT_ALLOWED = re.compile(f"[^\\x00-\\x7f{ALLOWED_NON_ASCII}]")

# System prompts whose niv/t0 samples score very badly on ROUGE in the reference's analysis.
BAD_SYSTEM_PROMPTS = (
    "",
    "You are an AI assistant that follows instruction extremely well. Help as much as you can.",
    "You are an AI assistant. Provide a detailed answer so user don’t need to search outside to understand "
    "the answer.",
    "You are an AI assistant. Provide a detailed answer so user don't need to search outside to understand "
    "the answer.",
    "User will you give you a task with some instruction. Your job is follow the instructions as faithfully as "
    "you can. While answering think step-by-step and justify your answer.",
    "Explain how you used the definition to come up with the answer.",
)
BAD_PROMPT_ORIGINS = ("niv", "t0")

# Llama-2 always emits "▁" (id 29871) first; the reference appends it to every input so that a
# system cannot win time-to-first-token by sending that predictable token straight away.
LLAMA2_RESPONSE_INIT_TOKEN = 29871
LLAMA2_VOCAB_SIZE = 32000

FILE_PREFIX = "open_orca_gpt4_tokenized_llama"
PARQUET_COLUMNS = ("id", "system_prompt", "question", "response")
COLUMNS = ["id", "system_prompt", "question", "output", "input", "tok_input", "tok_output", "origin",
           "tok_input_length", "tok_output_length"]
SAMPLE_SEED = 1337
CALIBRATION_SEED = 12345


@dataclass(frozen=True)
class OrcaSettings:
    seqlen_limit: int = 1024
    num_total_samples: int = 24576
    calibration_size: int = 1000
    prompt_format: str = "llama2"          # or "chat": the tokenizer's own chat template
    response_init_token: int | None = None  # appended to every tok_input (29871 for Llama-2)

    def __post_init__(self):  # before any tokenizing: a bad number fails in a second
        if self.seqlen_limit < 1:
            raise HarnessError(f"--seqlen_limit must be positive, got {self.seqlen_limit}")
        if self.num_total_samples < 1:
            raise HarnessError(f"--num_total_samples must be positive, got {self.num_total_samples}")
        if self.calibration_size < 0:
            raise HarnessError(f"--calibration_subset_size must be >= 0, got {self.calibration_size}")


@dataclass
class OrcaDataset:
    full: pd.DataFrame                  # every row that passed the filters, parquet order
    by_origin: dict[str, pd.DataFrame]  # full, split by origin (sorted by name)
    sampled: pd.DataFrame               # equal share per origin, concatenated in origin order
    calibration: pd.DataFrame


def is_english(text: str) -> bool:
    """ASCII apart from the allowed quotes and dashes (the common all-ASCII case stays in C)."""
    return text.isascii() or _NOT_ALLOWED.search(text) is None


def resolve_response_init_token(choice: str, tokenizer) -> int | None:
    """--response_init_token: 'auto' means 29871 for a Llama-2 tokenizer and nothing otherwise."""
    if choice == "none":
        return None
    if choice == "auto":
        is_llama2 = (len(tokenizer) == LLAMA2_VOCAB_SIZE
                     and tokenizer.convert_ids_to_tokens(LLAMA2_RESPONSE_INIT_TOKEN) == "▁")
        return LLAMA2_RESPONSE_INIT_TOKEN if is_llama2 else None
    try:
        token = int(choice)
    except ValueError:
        raise HarnessError(f"--response_init_token expects auto, none or a token id, got '{choice}'") from None
    if not 0 <= token < len(tokenizer):
        raise HarnessError(f"--response_init_token {token} is outside the tokenizer's vocabulary "
                           f"(0..{len(tokenizer) - 1})")
    return token



def read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    """The OpenOrca parquet with `response` renamed to `output`, as the reference does."""
    import pyarrow.parquet as pq

    if not os.path.isfile(path):
        raise HarnessError(f"dataset parquet not found: {path}")
    try:
        names = pq.read_schema(path).names
        missing = [c for c in PARQUET_COLUMNS if c not in names]
        if missing:
            raise HarnessError(f"{path} lacks column(s) {', '.join(missing)} (an OpenOrca parquet has "
                               f"{', '.join(PARQUET_COLUMNS)}; it has {', '.join(names)})")
        df = pd.read_parquet(path)
    except HarnessError:
        raise
    except Exception as e:  # pyarrow raises several types for files that are not parquet
        raise HarnessError(f"cannot read {path} as parquet: {type(e).__name__}: {e}".splitlines()[0]) from e
    # Missing text is treated as empty text (the reference would crash or format "None").
    for col in PARQUET_COLUMNS[1:]:
        df[col] = df[col].fillna("").astype(str)
    df["id"] = df["id"].astype(str)
    return df.rename(columns={"response": "output"})


def format_prompts(df: pd.DataFrame, prompt_format: str, tokenizer=None) -> list[str]:
    """The model input text of every row."""
    if prompt_format == "llama2":
        return [LLAMA_PROMPT_SYSTEM.format(s, q) if s else LLAMA_PROMPT_NO_SYSTEM.format(q)
                for s, q in zip(df["system_prompt"], df["question"])]
    if prompt_format == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise HarnessError("--prompt-format chat needs a tokenizer with a chat template; this one has none")
        out = []
        for s, q in zip(df["system_prompt"], df["question"]):
            messages = ([{"role": "system", "content": s}] if s else []) + [{"role": "user", "content": q}]
            out.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return out
    raise HarnessError(f"unknown prompt format '{prompt_format}' (llama2 or chat)")



def _object_column(lists: list[list[int]], index) -> pd.Series:
    """A column holding one Python list per row (pandas would make equal-length lists a 2-D array)."""
    arr = np.empty(len(lists), dtype=object)
    for i, row in enumerate(lists):
        arr[i] = row
    return pd.Series(arr, index=index)


def filter_and_tokenize(df: pd.DataFrame, tokenizer, settings: OrcaSettings) -> pd.DataFrame:
    """The reference's full set: rows of an OpenOrca frame (id, system_prompt, question, output)
    that pass every filter, in their original order, with the COLUMNS added."""
    df = df.copy()
    df["input"] = format_prompts(df, settings.prompt_format, tokenizer)
    df["origin"] = [i.split(".")[0] for i in df["id"]]

    # Filters that need no tokens first, so that dropped rows are never tokenized.
    keep = [is_english(i) and is_english(o) for i, o in zip(df["input"], df["output"])]
    keep = pd.Series(keep, index=df.index)
    bad = df["system_prompt"].isin(BAD_SYSTEM_PROMPTS) & df["origin"].isin(BAD_PROMPT_ORIGINS)
    df = df[keep & ~bad]
    log.info("%d rows pass the character and system-prompt filters", len(df))

    # A chat template already holds the BOS text, so only the Llama-2 format lets the tokenizer add it.
    df["tok_input"] = _object_column(tokenize(df["input"].tolist(), tokenizer,
                                              add_special_tokens=settings.prompt_format == "llama2",
                                              append=settings.response_init_token, desc="tokenizing inputs"), df.index)
    df["tok_output"] = _object_column(tokenize(df["output"].tolist(), tokenizer, desc="tokenizing outputs"), df.index)
    df["tok_input_length"] = df["tok_input"].map(len)
    df["tok_output_length"] = df["tok_output"].map(len)
    limit = settings.seqlen_limit
    df = df[(df["tok_input_length"] < limit) & (df["tok_output_length"] < limit) & (df["tok_output_length"] >= 3)]
    full = df[COLUMNS].reset_index(drop=True)
    log.info("%d rows pass all filters", len(full))
    return full


def build(df: pd.DataFrame, tokenizer, settings: OrcaSettings) -> OrcaDataset:
    """Filter, tokenize and sample an OpenOrca frame (columns id, system_prompt, question, output)."""
    full = filter_and_tokenize(df, tokenizer, settings)
    by_origin = {origin: sub.reset_index(drop=True) for origin, sub in full.groupby("origin")}
    sampled = sample_per_origin(by_origin, settings.num_total_samples)
    if settings.calibration_size > len(sampled):
        raise HarnessError(f"the calibration subset needs {settings.calibration_size} rows but the sample has only "
                           f"{len(sampled)}; pass a smaller --calibration_subset_size")
    calibration = sampled.sample(n=settings.calibration_size, random_state=CALIBRATION_SEED).reset_index(drop=True)
    return OrcaDataset(full, by_origin, sampled, calibration)


def sample_per_origin(by_origin: dict[str, pd.DataFrame], n_total: int) -> pd.DataFrame:
    """n_total / n_origins rows of each origin (seed 1337), concatenated in origin order."""
    if not by_origin:
        raise HarnessError("no rows are left after filtering; nothing to sample")
    if n_total < 1 or n_total % len(by_origin):
        raise HarnessError(f"--num_total_samples {n_total} must be a positive multiple of the number of "
                           f"origins ({len(by_origin)}: {', '.join(by_origin)})")
    share = n_total // len(by_origin)
    for origin, sub in by_origin.items():
        if len(sub) < share:
            raise HarnessError(f"origin '{origin}' has {len(sub)} rows after filtering but {share} are needed "
                               f"({n_total} samples over {len(by_origin)} origins); lower --num_total_samples")
    parts = []
    for origin, sub in by_origin.items():
        log.info("sampling %d of %d rows from %s", share, len(sub), origin)
        parts.append(sub.sample(n=share, random_state=SAMPLE_SEED))
    return pd.concat(parts).reset_index(drop=True)


def output_files(ds: OrcaDataset, num_total_samples: int) -> dict[str, pd.DataFrame]:
    """File name -> frame, with the reference's names."""
    files = {f"{FILE_PREFIX}.full.pkl": ds.full}
    files.update({f"{FILE_PREFIX}.{origin}.pkl": sub for origin, sub in ds.by_origin.items()})
    files[f"{FILE_PREFIX}.sampled_{num_total_samples}.pkl"] = ds.sampled
    files[f"{FILE_PREFIX}.calibration_{len(ds.calibration)}.pkl"] = ds.calibration
    return files


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    """A pandas pickle (.pkl), or a JSON array of records (.json, the llama3.1-8b reference's format)."""
    if path.suffix == ".json":
        with open(path, "w", encoding="utf-8") as f:
            json.dump(frame.to_dict("records"), f, indent=4, ensure_ascii=False, default=int)
    else:
        frame.to_pickle(path)


def export(files: dict[str, pd.DataFrame], export_dir: str | os.PathLike) -> list[Path]:
    """Write every pickle (or JSON array, see write_frame), and the same table as parquet beside it
    (readable without running code from the file, see common/tables.py), into a temporary folder
    first, then move them into export_dir."""
    export_dir = make_folder(export_dir, "--export_dir")
    tmp = Path(tempfile.mkdtemp(prefix=".processorca-", dir=export_dir))
    names = [n for name in files for n in (name, str(Path(name).with_suffix(".parquet")))]
    try:
        for name, frame in files.items():
            write_frame(frame, tmp / name)
            frame.to_parquet(tmp / Path(name).with_suffix(".parquet"))
        written = []
        for name in names:
            os.replace(tmp / name, export_dir / name)
            written.append(export_dir / name)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--dataset_pq_path", required=True, help="the OpenOrca 1M-GPT4-Augmented.parquet")
    p.add_argument("--model_dir", default=None,
                   help="tokenizer: a Hugging Face checkpoint folder or a .gguf file (default: the embedded model)")
    p.add_argument("--seqlen_limit", type=int, default=1024, help="inputs and outputs must be shorter (tokens)")
    p.add_argument("--export_dir", required=True, help="folder for the pickles")
    p.add_argument("--num_total_samples", type=int, default=24576, help="rows in the sampled set")
    p.add_argument("--calibration_subset_size", "--calibration_size", dest="calibration_size", type=int,
                   default=1000, help="rows in the calibration subset (drawn from the sampled set)")
    p.add_argument("--prompt-format", "--prompt_format", dest="prompt_format", choices=["llama2", "chat"],
                   default="llama2", help="llama2: the reference's [INST] prompt; chat: the tokenizer's chat template")
    p.add_argument("--response_init_token", default="auto",
                   help="token id appended to every tok_input: auto (29871 for a Llama-2 tokenizer, else none), "
                        "none, or an id")
    return p.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    df = read_parquet(args.dataset_pq_path)  # before the slow tokenizer load: fail fast on a bad file
    tokenizer = load_tokenizer(args.model_dir)
    settings = OrcaSettings(seqlen_limit=args.seqlen_limit, num_total_samples=args.num_total_samples,
                            calibration_size=args.calibration_size, prompt_format=args.prompt_format,
                            response_init_token=resolve_response_init_token(args.response_init_token, tokenizer))
    log.info("%d rows read from %s; response init token: %s", len(df), args.dataset_pq_path,
             settings.response_init_token)
    make_folder(args.export_dir, "--export_dir")  # before the slow filtering and tokenizing
    ds = build(df, tokenizer, settings)
    for path in export(output_files(ds, settings.num_total_samples), args.export_dir):
        log.info("wrote %s", path)
    log.info("full %d rows (%s); sampled %d; calibration %d", len(ds.full),
             ", ".join(f"{o} {len(s)}" for o, s in ds.by_origin.items()), len(ds.sampled), len(ds.calibration))


if __name__ == "__main__":
    exit_on_error(main)
