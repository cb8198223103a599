"""Synthetic datasets for performance runs, in the processed OpenOrca pickle schema.

    python -m inputs.synthetic --output data/synthetic_2560_768.pkl --num-samples 1024 \
        --input-len 2560 --output-len 768

Prompts are random token ids from a vocabulary range (default) or windows of real text
(--prompt-source text, tokenized with --model-path, default the embedded model). Lengths are
fixed ("2560"), uniform over a closed range ("128-512") or normal with bounds
("normal:1024,256" or "normal:1024,256,128,2048" = mean, std, min, max; draws outside the
bounds are drawn again).

tok_output holds output-length ids (the same kind as the prompt's), so tok_output_length is the
wanted number of generated tokens for each sample. Nothing is compared against it for accuracy:
run main.py with --ignore-eos --max-new-tokens N so that backends generate exactly N tokens.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import HarnessError, exit_on_error
from common.files import make_folder, temp_file_beside

log = logging.getLogger(__name__)

COLUMNS = ["id", "system_prompt", "question", "output", "input", "tok_input", "tok_output", "origin",
           "tok_input_length", "tok_output_length"]
DEFAULT_VOCAB_RANGE = (100, 32000)  # inside every common vocabulary (Llama-2 32000, Gemma 262144)
_MAX_REDRAWS = 1000


@dataclass(frozen=True)
class LengthSpec:
    """How many tokens: fixed (lo == hi), uniform in [lo, hi], or normal(mean, std) within [lo, hi]."""
    kind: str            # "fixed", "uniform" or "normal"
    lo: int
    hi: int
    mean: float = 0.0
    std: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "LengthSpec":
        s = text.strip().lower()
        try:
            if re.fullmatch(r"\d+", s):
                spec = cls("fixed", int(s), int(s))
            elif m := re.fullmatch(r"(?:uniform:)?(\d+)-(\d+)", s):
                spec = cls("uniform", int(m[1]), int(m[2]))
            elif s.startswith("normal:"):
                vals = [float(v) for v in s[len("normal:"):].split(",")]
                if len(vals) not in (2, 4):
                    raise ValueError
                mean, std = vals[:2]
                lo, hi = (int(vals[2]), int(vals[3])) if len(vals) == 4 else (1, int(mean + 4 * std))
                spec = cls("normal", lo, hi, mean, std)
            else:
                raise ValueError
        except ValueError:
            raise HarnessError(f"bad length '{text}': use N, LO-HI, normal:MEAN,STD or normal:MEAN,STD,MIN,MAX"
                               ) from None
        if not 1 <= spec.lo <= spec.hi or spec.std < 0:
            raise HarnessError(f"bad length '{text}': need 1 <= min <= max and std >= 0")
        return spec

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, self.lo, dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(self.lo, self.hi + 1, size=n)
        out = np.rint(rng.normal(self.mean, self.std, size=n)).astype(np.int64)
        for _ in range(_MAX_REDRAWS):  # truncated normal by redrawing, so the bounds get no pile-up
            bad = (out < self.lo) | (out > self.hi)
            if not bad.any():
                return out
            out[bad] = np.rint(rng.normal(self.mean, self.std, size=int(bad.sum()))).astype(np.int64)
        return np.clip(out, self.lo, self.hi)  # bounds far out in the tail: clip the few left


@dataclass(frozen=True)
class SyntheticSettings:
    num_samples: int = 1024
    input_len: LengthSpec = LengthSpec("fixed", 2560, 2560)
    output_len: LengthSpec = LengthSpec("fixed", 768, 768)
    prompt_source: str = "random"   # "random" ids or "text" windows
    vocab_range: tuple[int, int] = DEFAULT_VOCAB_RANGE  # random ids in [lo, hi)
    seed: int = 0


def _text_stream(tokenizer, text_file: str | None) -> np.ndarray:
    """Token ids of a body of real text: --text-file, else the shipped demo OpenOrca answers."""
    if text_file:
        try:
            text = Path(text_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise HarnessError(f"cannot read --text-file {text_file}: {e}") from e
    else:
        demo = Path(__file__).resolve().parent.parent / "assets" / "openorca_demo" / "open_orca_demo.parquet"
        if not demo.is_file():
            raise HarnessError(f"the demo text {demo} is missing; pass --text-file")
        df = pd.read_parquet(demo)
        text = "\n\n".join(df["question"].tolist() + df["response"].tolist())
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < 2:
        raise HarnessError("the text for --prompt-source text is empty")
    return np.asarray(ids, dtype=np.int64)


def generate(settings: SyntheticSettings, tokenizer=None, text_file: str | None = None) -> pd.DataFrame:
    """The synthetic frame; a tokenizer is needed for text prompts and fills the text columns."""
    if settings.num_samples < 1:
        raise HarnessError("--num-samples must be positive")
    rng = np.random.default_rng(settings.seed)
    in_lens = settings.input_len.draw(rng, settings.num_samples)
    out_lens = settings.output_len.draw(rng, settings.num_samples)

    if settings.prompt_source == "text":
        if tokenizer is None:
            raise HarnessError("--prompt-source text needs a tokenizer (--model-path)")
        stream = _text_stream(tokenizer, text_file)
        bos = tokenizer.bos_token_id

        def ids(n: int) -> list[int]:
            # A window of the text, wrapping around its end, after the model's BOS like a real prompt.
            start = int(rng.integers(0, len(stream)))
            body = np.take(stream, range(start, start + n - (bos is not None)), mode="wrap").tolist()
            return ([bos] if bos is not None else []) + body
    elif settings.prompt_source == "random":
        lo, hi = settings.vocab_range
        if not 0 <= lo < hi:
            raise HarnessError(f"bad --vocab-range {lo}:{hi}: need 0 <= LO < HI")
        if tokenizer is not None and hi > len(tokenizer):
            raise HarnessError(f"--vocab-range {lo}:{hi} exceeds the tokenizer's vocabulary ({len(tokenizer)})")

        def ids(n: int) -> list[int]:
            return rng.integers(lo, hi, size=n).tolist()
    else:
        raise HarnessError(f"unknown prompt source '{settings.prompt_source}' (random or text)")

    tok_input = [ids(int(n)) for n in in_lens]
    tok_output = [ids(int(n)) for n in out_lens]
    decode = (lambda t: tokenizer.decode(t, skip_special_tokens=True)) if tokenizer is not None else (lambda t: "")
    inputs = [decode(t) for t in tok_input]
    n = settings.num_samples
    frame = {
        "id": [f"synthetic.{i}" for i in range(n)],
        "system_prompt": [""] * n,
        "question": inputs,
        "output": [decode(t) for t in tok_output],
        "input": inputs,
        "tok_input": _object_array(tok_input),
        "tok_output": _object_array(tok_output),
        "origin": ["synthetic"] * n,
        "tok_input_length": in_lens,
        "tok_output_length": out_lens,
    }
    return pd.DataFrame(frame, columns=COLUMNS)


def _object_array(lists: list[list[int]]) -> np.ndarray:
    """One Python list per element (numpy would turn equal-length lists into a 2-D array)."""
    arr = np.empty(len(lists), dtype=object)
    for i, row in enumerate(lists):
        arr[i] = row
    return arr


def check_output(path: str | os.PathLike) -> None:
    """A new .pkl path (main.py reads a dataset by its suffix; an existing file is never replaced)."""
    path = Path(path)
    if path.suffix not in (".pkl", ".pickle"):
        raise HarnessError(f"--output {path}: name it .pkl (the dataset is written as a pickle)")
    if os.path.lexists(path):
        raise HarnessError(f"--output {path} exists already; datasets are never overwritten (choose a new name)")


def write_pickle(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write to a temporary file beside `path`, then link it into place: a failed run leaves no
    half file, and a file that appeared meanwhile is never replaced."""
    path = Path(path)
    make_folder(path.parent, "the folder of --output")
    try:
        with temp_file_beside(path) as tmp:
            df.to_pickle(tmp)
            os.link(tmp, path)
    except FileExistsError:
        raise HarnessError(f"--output {path} exists already; datasets are never overwritten") from None


def _vocab_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[:-]\s*(\d+)\s*", text)
    if not m:
        raise HarnessError(f"bad --vocab-range '{text}': use LO:HI (ids LO..HI-1)")
    return int(m[1]), int(m[2])


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description="Write a synthetic dataset pickle for performance runs.",
                                allow_abbrev=False)
    p.add_argument("--output", required=True, help="pickle to write (read by main.py --dataset-path)")
    p.add_argument("--num-samples", type=int, default=1024)
    p.add_argument("--input-len", default="2560", help="N, LO-HI or normal:MEAN,STD[,MIN,MAX] (tokens)")
    p.add_argument("--output-len", default="768", help="N, LO-HI or normal:MEAN,STD[,MIN,MAX] (tokens)")
    p.add_argument("--prompt-source", choices=["random", "text"], default="random")
    p.add_argument("--vocab-range", default=f"{DEFAULT_VOCAB_RANGE[0]}:{DEFAULT_VOCAB_RANGE[1]}",
                   help="random ids are drawn from LO..HI-1")
    p.add_argument("--model-path", default=None,
                   help="tokenizer (folder or .gguf) for text prompts and the text columns; text prompts use "
                        "the embedded model when omitted")
    p.add_argument("--text-file", default=None, help="UTF-8 text for --prompt-source text (default: demo set)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    check_output(args.output)
    settings = SyntheticSettings(num_samples=args.num_samples, input_len=LengthSpec.parse(args.input_len),
                                 output_len=LengthSpec.parse(args.output_len), prompt_source=args.prompt_source,
                                 vocab_range=_vocab_range(args.vocab_range), seed=args.seed)
    tokenizer = None
    if args.model_path or args.prompt_source == "text":
        from inputs.tokenizer import load_tokenizer
        tokenizer = load_tokenizer(args.model_path)
    df = generate(settings, tokenizer, args.text_file)
    write_pickle(df, args.output)
    log.info("wrote %d samples to %s: input tokens %d..%d (mean %.1f), output tokens %d..%d (mean %.1f)",
             len(df), args.output, df.tok_input_length.min(), df.tok_input_length.max(),
             df.tok_input_length.mean(), df.tok_output_length.min(), df.tok_output_length.max(),
             df.tok_output_length.mean())


if __name__ == "__main__":
    exit_on_error(main)
