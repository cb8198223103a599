"""Tokenizing speed of processorca.py against the reference's row-by-row calls.

Builds a seeded synthetic OpenOrca parquet (default 1M rows, lengths shaped like the GPT-4 set:
log-normal question and answer lengths, a handful of system prompts, ~1% non-ASCII rows),
then times, on the same rows:
- row by row: tokenizer(text)["input_ids"] per text, as the reference's DataFrame.apply does;
- batched: processorca.tokenize, in chunks over all cores (the Rust batch encoder of a Hugging
  Face fast tokenizer, or worker processes for a GGUF file's llama.cpp vocabulary);
- the character filter: the reference's per-character loop vs processorca.is_english.
Both tokenizers' ids are checked equal. Token lists are dropped chunk by chunk so memory stays
bounded; --baseline-rows times the slow row-by-row path on the first N rows only and scales it up
(printed as such).

    python benchmarks/processorca_speed.py [--rows 1000000] [--baseline-rows 100000] [--model_dir PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import processorca as po  # noqa: E402
from harness.models import cache_dir  # noqa: E402
from harness.tokenizer import load_tokenizer  # noqa: E402

WORDS = ("the of and to in is that for it as was with be by on not this are or from at which an have "
         "answer question step first then total number each more than time people water year city first "
         "student because however therefore example result between during without through another important "
         "calculate explain sentence passage summary review positive negative premise hypothesis option "
         "river garden teacher history science energy market family morning evening country language").split()
SYSTEMS = ["", "You are a helpful assistant.", "You are an AI assistant. You will be given a task.",
           "Think step by step and justify your answer.", "Given a definition of a task and an input, reply.",
           po.BAD_SYSTEM_PROMPTS[1]]


def make_parquet(path: Path, rows: int, seed: int = 0) -> None:
    """Rows of random words; character lengths log-normal (median ~350 / ~700 characters)."""
    rng = np.random.default_rng(seed)
    words = rng.choice(WORDS, size=2_000_000)
    corpus = " ".join(words)
    writer = None
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        q_len = np.clip(rng.lognormal(np.log(350), 0.9, n), 20, 12000).astype(int)
        r_len = np.clip(rng.lognormal(np.log(700), 0.8, n), 2, 12000).astype(int)
        q_off = rng.integers(0, len(corpus) - 12000, n)
        r_off = rng.integers(0, len(corpus) - 12000, n)
        origins = rng.choice(["cot", "flan", "niv", "t0"], n, p=[0.07, 0.4, 0.06, 0.47])
        questions = [corpus[o:o + k] for o, k in zip(q_off, q_len)]
        responses = [corpus[o:o + k] for o, k in zip(r_off, r_len)]
        for i in np.flatnonzero(rng.random(n) < 0.01):
            responses[i] += " caf\u00e9"
        df = pd.DataFrame({"id": [f"{o}.{start + i}" for i, o in enumerate(origins)],
                           "system_prompt": rng.choice(SYSTEMS, n), "question": questions, "response": responses})
        table = __import__("pyarrow").Table.from_pandas(df, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def reference_is_english(s: str) -> bool:
    return all(c.isascii() or c in "’–“”—" for c in s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--baseline-rows", type=int, default=None, help="time row-by-row on the first N rows only")
    ap.add_argument("--model_dir", default=None, help="tokenizer (default: the embedded model)")
    ap.add_argument("--parquet", default=None, help="where the synthetic parquet goes (default: cache folder)")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")

    path = Path(args.parquet or cache_dir("bench") / f"orca_synthetic_{args.rows}.parquet")
    if not path.exists():
        t = time.perf_counter()
        make_parquet(path, args.rows)
        print(f"wrote {path} in {time.perf_counter() - t:.1f} s")
    tok = load_tokenizer(args.model_dir)
    print(f"tokenizer: {type(tok).__name__}, vocab {len(tok)}, from {args.model_dir or 'the embedded model'}")

    baseline_rows = min(args.baseline_rows or args.rows, args.rows)
    t_row = t_batch = t_eng_ref = t_eng_fast = 0.0
    n_tokens = done = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=50_000):
        df = batch.to_pandas().rename(columns={"response": "output"})
        texts = po.format_prompts(df, "llama2") + df["output"].tolist()
        t = time.perf_counter()
        batched = po.tokenize(texts, tok)
        t_batch += time.perf_counter() - t
        n_tokens += sum(map(len, batched))
        t = time.perf_counter()
        fast = [po.is_english(x) for x in texts]
        t_eng_fast += time.perf_counter() - t
        if done < baseline_rows:
            k = min(len(df), baseline_rows - done)
            sub = texts[:k] + texts[len(df):len(df) + k]  # the same rows' inputs and outputs
            t = time.perf_counter()
            row_by_row = [tok(x)["input_ids"] for x in sub]
            t_row += time.perf_counter() - t
            assert row_by_row == batched[:k] + batched[len(df):len(df) + k], "batched ids differ from row by row"
            t = time.perf_counter()
            ref = [reference_is_english(x) for x in sub]
            t_eng_ref += time.perf_counter() - t
            assert ref == fast[:k] + fast[len(df):len(df) + k]
        done += len(df)
        print(f"  {done} rows: batched {t_batch:.1f} s, row-by-row {t_row:.1f} s (first {min(done, baseline_rows)} "
              f"rows), load {os.getloadavg()[0]:.1f}", flush=True)

    scale = done / baseline_rows
    print(f"\nrows {done}, texts {2 * done}, tokens {n_tokens} ({n_tokens / (2 * done):.0f} per text)")
    print(f"tokenize batched (processorca.tokenize): {t_batch:.1f} s")
    print(f"tokenize row by row (reference): {t_row * scale:.1f} s"
          + (f" (measured {t_row:.1f} s on {baseline_rows} rows, scaled x{scale:.1f})" if scale > 1 else ""))
    print(f"speed-up: {t_row * scale / t_batch:.2f}x")
    print(f"character filter: per-character loop {t_eng_ref * scale:.1f} s, processorca.is_english {t_eng_fast:.1f} s "
          f"({t_eng_ref * scale / t_eng_fast:.0f}x)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
