"""Data sets of the reasoning benchmarks (deepseek-r1, gpt-oss-120b): reading, prompts, code tests.

The references' preprocessed files (pickle or parquet) hold one row per question with the
columns `dataset` (the sub-dataset: "aime1983", "math500", "gpqa_diamond", "mmlu_pro",
"livecodebench"...), `ground_truth` (a letter, a number or expression, or LiveCodeBench's
question id) and the prompt: `text_input` (deepseek-r1, put through the model's chat template as a
user message with the generation prompt, as its reference tokenizes it) or already-tokenized
`tok_input` / `input_tokens` (gpt-oss-120b's Harmony prompts). They are read with the project's
safe table reader. LiveCodeBench's test cases come from a `tests` column: JSON text (or a list)
of {"input": ..., "output": ...}, stdin and the expected stdout, or with "fn_name" a call-based
case: one JSON argument a line, the expected JSON result.

    python -m inputs.reasoning --input assets/reasoning_demo/deepseek-r1.jsonl --output demo.pkl \
        [--model-path MODEL]        # adds tok_input for main.py (the chat template of MODEL)
"""
from __future__ import annotations

import argparse
import json
import logging
import math

from common.errors import HarnessError, exit_on_error
from common.tables import read_table

log = logging.getLogger("inputs.reasoning")
TOKEN_COLUMNS = ("tok_input", "input_tokens")
REQUIRED = ("dataset", "ground_truth")


def read(path: str):
    """The table, with the columns grading and prompting need, or one clear error."""
    df = read_table(path, "reasoning dataset")
    missing = [c for c in REQUIRED if c not in df.columns]
    if not any(c in df.columns for c in TOKEN_COLUMNS + ("text_input",)):
        missing.append("text_input (or tok_input / input_tokens)")
    if missing:
        raise HarnessError(f"reasoning dataset {path} lacks column(s) {', '.join(missing)} "
                           f"(has: {', '.join(map(str, df.columns))})")
    if not len(df):
        raise HarnessError(f"reasoning dataset {path} has no rows")
    return df


def prompt_ids(df, tokenizer) -> list[list[int]]:
    """Token ids of each prompt: the tokenized column when there is one, else `text_input` through
    the chat template."""
    for column in TOKEN_COLUMNS:
        if column in df.columns:
            return [[int(t) for t in ids] for ids in df[column]]
    chat = bool(getattr(tokenizer, "chat_template", None))
    if not chat:  # as the reference does for a backend without one: the text itself
        log.warning("the tokenizer has no chat template: prompts are tokenized as plain text")
    out = []
    for n, text in enumerate(df["text_input"]):
        if not isinstance(text, str) or not text:
            raise HarnessError(f"reasoning dataset: row {n} has no text_input")
        if chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        # a chat template writes the BOS itself
        out.append(list(tokenizer.encode(text, add_special_tokens=not chat)))
    return out


def code_tests(df) -> dict[str, list[tuple]]:
    """Question id (the ground truth of livecodebench rows) -> its (stdin, expected stdout) cases."""
    if "tests" not in df.columns:
        return {}
    out = {}
    for n, (name, qid, tests) in enumerate(zip(df["dataset"], df["ground_truth"], df["tests"])):
        missing = tests is None or (isinstance(tests, float) and math.isnan(tests))
        if missing or "livecodebench" not in str(name).lower():
            continue
        try:
            cases = json.loads(tests) if isinstance(tests, str) else list(tests)
            # call-based (LeetCode) cases name the function to call
            out[str(qid)] = [(str(c["input"]), str(c["output"])) + ((str(c["fn_name"]),) if c.get("fn_name") else ())
                             for c in cases]
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise HarnessError(f"reasoning dataset: row {n}: tests must be a JSON list of "
                               f"{{\"input\", \"output\"}} ({type(e).__name__}: {e})") from None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Add tok_input (the model's chat template) to a reasoning data set",
                                allow_abbrev=False)
    p.add_argument("--input", required=True, help="the data set: .pkl, .parquet or .jsonl")
    p.add_argument("--output", required=True, help="new .pkl for main.py --dataset-path")
    p.add_argument("--model-path", default=None, help="whose tokenizer and chat template (default: the embedded model)")
    args = p.parse_args(argv)
    from inputs.synthetic import check_output, write_pickle
    from inputs.tokenizer import load_tokenizer

    check_output(args.output)
    df = read(args.input)
    ids = prompt_ids(df, load_tokenizer(args.model_path))
    df = df.assign(tok_input=ids, tok_input_length=[len(i) for i in ids])
    write_pickle(df, args.output)
    print(f"wrote {len(df)} prompts to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(exit_on_error(main))
