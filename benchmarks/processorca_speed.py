"""Tokenizing speed of processorca.py against the MLPerf reference's row-by-row slow tokenizer.

The reference (mlcommons/inference language/llama2-70b/processorca.py) loads the Llama-2 tokenizer
with use_fast=False (the Python SentencePiece tokenizer) and calls tokenizer(text)["input_ids"] once
per row through DataFrame.apply. No Llama-2 files are available offline, so this script builds a
Llama-2-like pair from its own data, seeded and cached:
- a SentencePiece BPE model trained with the Llama-2 trainer settings (vocabulary 32000,
  byte_fallback, split_digits, identity normalization, <unk>/<s>/</s> = 0/1/2) on ~4 MB of the
  synthetic rows below;
- the slow tokenizer: transformers' SentencePiece backend on that .model (what use_fast=False gives
  for a Llama tokenizer: Python special-token splitting, then sentencepiece per text, legacy spacing,
  BOS added);
- the fast tokenizer: transformers' LlamaTokenizer (Rust BPE) converted from the same .model, with
  the legacy normalizer that LlamaConverter uses. Ids of both are checked equal on a few hundred
  texts before timing, and again on every baseline row.

The synthetic OpenOrca parquet (default 1M rows) has English-like text: a Zipf-distributed
vocabulary of ~50k made-up words plus common English words, punctuation, capitals and numbers;
log-normal question and answer lengths like the GPT-4 set, a handful of system prompts, ~1% non-ASCII
rows. On the same rows the script times
- baseline (the reference's method): slow tokenizer, one call per text, on the first
  --baseline-rows rows, scaled linearly to all rows (printed as measured and scaled);
- for comparison, on the same baseline rows: the fast tokenizer called one text at a time, and its
  Rust batch encoder (encode_batch_fast over all cores, what processorca used before its word cache);
- processorca.tokenize with the fast tokenizer (each distinct word encoded once:
  inputs.fast_tokenize.WordwiseEncoder), on the first --batched-rows rows (default all), scaled if fewer;
- the character filter: the reference's per-character loop vs processorca.is_english.
Token lists are dropped chunk by chunk so memory stays bounded.

    python benchmarks/processorca_speed.py [--rows 1000000] [--baseline-rows 20000] [--batched-rows N]
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
from inputs import fast_tokenize  # noqa: E402
from inputs.models import cache_dir  # noqa: E402

WORDS = ("the of and to in is that for it as was with be by on not this are or from at which an have "
         "answer question step first then total number each more than time people water year city first "
         "student because however therefore example result between during without through another important "
         "calculate explain sentence passage summary review positive negative premise hypothesis option "
         "river garden teacher history science energy market family morning evening country language").split()
ONSETS = "b c d f g h j k l m n p r s t v w y z bl br ch cl cr dr fl fr gr pl pr sh sk sl sp st str th tr wh".split()
VOWELS = "a e i o u ai ea ee ie oa oo ou ay".split()
CODAS = ["", "", "", "n", "r", "s", "t", "l", "nd", "ng", "st", "ck", "rt", "nt", "ss", "m", "ll", "sh", "ch", "ght"]
SUFFIXES = ["", "", "", "", "s", "ed", "ing", "er", "ly", "tion", "ness", "ment", "able", "al", "ity"]
SYSTEMS = ["", "You are a helpful assistant.", "You are an AI assistant. You will be given a task.",
           "Think step by step and justify your answer.", "Given a definition of a task and an input, reply.",
           po.BAD_SYSTEM_PROMPTS[1]]
DATA_VERSION = "v2"  # bump when the synthetic text changes (cached parquet and tokenizer names)


def make_corpus(rng: np.random.Generator, n_words: int) -> str:
    """English-like text: Zipf-distributed words (common English first, then ~50k made-up words)."""
    lexicon: set[str] = set()
    while len(lexicon) < 50_000:
        k = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
        lexicon.add("".join(str(rng.choice(ONSETS)) + str(rng.choice(VOWELS)) + str(rng.choice(CODAS))
                            for _ in range(k)) + str(rng.choice(SUFFIXES)))
    made_up = sorted(lexicon)
    rng.shuffle(made_up)
    vocab = np.array(list(dict.fromkeys(WORDS)) + made_up, dtype=object)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    words = vocab[rng.choice(len(vocab), n_words, p=p / p.sum())]
    r = rng.random(n_words)
    words[r < 0.06] = words[r < 0.06] + ","
    end = r > 0.93
    words[end] = words[end] + "."
    cap = np.flatnonzero(end[:-1]) + 1
    words[cap] = [w.capitalize() for w in words[cap]]
    num = rng.random(n_words) < 0.01
    words[num] = rng.integers(0, 5000, int(num.sum())).astype(str)
    return " ".join(words)


def make_parquet(path: Path, rows: int, seed: int = 0) -> None:
    """Rows of English-like text; character lengths log-normal (median ~350 / ~700 characters)."""
    rng = np.random.default_rng(seed)
    corpus = make_corpus(rng, 2_000_000)
    writer = None
    for start in range(0, rows, 100_000):
        n = 100_000  # always a full block of draws (the last one cut), so the first rows never depend on `rows`
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
        df = df.iloc[:rows - start]
        table = __import__("pyarrow").Table.from_pandas(df, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def row_texts(df: pd.DataFrame) -> list[str]:
    """Every row's model input (Llama-2 prompt), then every row's output, as processorca tokenizes them."""
    return po.format_prompts(df, "llama2") + df["output"].tolist()


def train_llama2_like_model(path: Path, parquet: Path, train_chars: int = 4_000_000) -> None:
    """A SentencePiece BPE model with Llama-2's trainer settings, trained on the parquet's first rows."""
    lines: list[str] = []
    size = 0
    for batch in pq.ParquetFile(parquet).iter_batches(batch_size=2_000):
        for text in row_texts(batch.to_pandas().rename(columns={"response": "output"})):
            lines += [text[i:i + 2000] for i in range(0, len(text), 2000)]  # under max_sentence_length
            size += len(text)
        if size >= train_chars:
            break
    train_sentencepiece(path, lines)


def train_sentencepiece(path: Path, lines: list[str], vocab_size: int = 32000) -> None:
    """SentencePiece BPE with Llama-2's trainer settings (byte_fallback, split_digits, identity
    normalization, <unk>/<s>/</s> = 0/1/2) on these lines, written to path (a .model file)."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(path.with_suffix("")), model_type="bpe",
        vocab_size=vocab_size, byte_fallback=True, split_digits=True, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", character_coverage=0.99995,
        allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, max_sentence_length=4192,
        shuffle_input_sentence=False, num_threads=os.cpu_count() or 1, minloglevel=2)


def llama2_like_tokenizers(model_file: Path):
    """(slow, fast): the use_fast=False SentencePiece tokenizer and the Rust LlamaTokenizer, same .model."""
    import sentencepiece as spm
    from tokenizers import normalizers
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import generate_merges
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    slow = SentencePieceBackend(vocab_file=str(model_file), unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                special_tokens_pattern="bos", legacy=True)
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = generate_merges(vocab, {p: sp.get_score(i) for i, p in enumerate(pieces)})
    fast = LlamaTokenizer(vocab=vocab, merges=merges, legacy=True, add_bos_token=True, add_eos_token=False)
    # LlamaConverter's legacy normalizer: "▁" before every text segment, spaces to "▁", no pre-tokenizer.
    fast.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                                              normalizers.Replace(" ", "\u2581")])
    fast.backend_tokenizer.pre_tokenizer = None
    return slow, fast


def reference_is_english(s: str) -> bool:
    return all(c.isascii() or c in "’–“”—" for c in s)


def check_same_ids(slow, fast, texts: list[str]) -> int:
    """Both tokenizers' ids on these texts and a few edge cases; raises on the first difference."""
    extra = ["", " ", "  two  spaces ", " leading", "tab\there\n\nnew line", "a</s>b<s>c", "<s>[INST] q [/INST]",
             "caf\u00e9 \u672c \U0001F642 \u2019\u2013\u201c\u201d\u2014", "0123456789 3.14", "x" * 500]
    for text in texts + extra:
        a, b = slow(text)["input_ids"], fast(text)["input_ids"]
        if a != b:
            raise SystemExit(f"slow and fast tokenizers differ on {text[:80]!r}: {a[:20]} vs {b[:20]}")
    return len(texts) + len(extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic parquet")
    ap.add_argument("--baseline-rows", type=int, default=20_000,
                    help="time the row-by-row tokenizers on the first N rows only, scaled to --rows")
    ap.add_argument("--batched-rows", type=int, default=None,
                    help="time processorca.tokenize on the first N rows only, scaled to --rows (default: all)")
    ap.add_argument("--parquet", default=None, help="where the synthetic parquet goes (default: cache folder)")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}", flush=True)

    cache = cache_dir("bench")
    path = Path(args.parquet or cache / f"orca_synthetic_{DATA_VERSION}_{args.rows}.parquet")
    if not path.exists():
        t = time.perf_counter()
        make_parquet(path, args.rows)
        print(f"wrote {path} in {time.perf_counter() - t:.1f} s", flush=True)
    # Trained on the first rows, which are the same for every --rows (same seed), so one model serves all.
    model_file = cache / f"llama2_like_bpe32k_{DATA_VERSION}.model"
    if not model_file.exists():
        t = time.perf_counter()
        train_llama2_like_model(model_file, path)
        print(f"trained {model_file} in {time.perf_counter() - t:.1f} s", flush=True)
    slow, fast = llama2_like_tokenizers(model_file)
    print(f"slow tokenizer (reference, use_fast=False): {type(slow).__name__}, vocab {len(slow)}")
    print(f"fast tokenizer (processorca): {type(fast).__name__}, vocab {len(fast)}, from the same {model_file.name}; "
          f"word cache {'used' if fast_tokenize.WordwiseEncoder.for_tokenizer(fast) else 'NOT used'}")
    first = next(pq.ParquetFile(path).iter_batches(batch_size=300)).to_pandas().rename(columns={"response": "output"})
    print(f"slow and fast ids identical on {check_same_ids(slow, fast, row_texts(first))} texts", flush=True)

    total_rows = pq.ParquetFile(path).metadata.num_rows
    baseline_rows = min(args.baseline_rows, total_rows)
    batched_rows = min(args.batched_rows or total_rows, total_rows)
    t_slow = t_fast_rows = t_rust = t_batch = t_eng_ref = t_eng_fast = 0.0
    n_tokens = done = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=50_000):
        if done >= batched_rows:
            break
        df = batch.to_pandas().rename(columns={"response": "output"}).iloc[:batched_rows - done]
        texts = row_texts(df)
        t = time.perf_counter()
        batched = po.tokenize(texts, fast)
        t_batch += time.perf_counter() - t
        n_tokens += sum(map(len, batched))
        t = time.perf_counter()
        fast_eng = [po.is_english(x) for x in texts]
        t_eng_fast += time.perf_counter() - t
        if done < baseline_rows:
            k = min(len(df), baseline_rows - done)
            sub = texts[:k] + texts[len(df):len(df) + k]  # the same rows' inputs and outputs
            expected = batched[:k] + batched[len(df):len(df) + k]
            t = time.perf_counter()
            slow_ids = [slow(x)["input_ids"] for x in sub]
            t_slow += time.perf_counter() - t
            assert slow_ids == expected, "processorca.tokenize ids differ from the slow tokenizer's"
            del slow_ids
            t = time.perf_counter()
            fast_ids = [fast(x)["input_ids"] for x in sub]
            t_fast_rows += time.perf_counter() - t
            assert fast_ids == expected, "processorca.tokenize ids differ from the fast tokenizer's row by row"
            del fast_ids
            t = time.perf_counter()
            rust_ids = [e.ids for e in fast.backend_tokenizer.encode_batch_fast(sub)]
            t_rust += time.perf_counter() - t
            assert rust_ids == expected, "processorca.tokenize ids differ from the Rust batch encoder's"
            del rust_ids
            t = time.perf_counter()
            ref = [reference_is_english(x) for x in sub]
            t_eng_ref += time.perf_counter() - t
            assert ref == fast_eng[:k] + fast_eng[len(df):len(df) + k]
        done += len(df)
        print(f"  {done} rows: processorca {t_batch:.1f} s; row by row on the first {min(done, baseline_rows)} rows: "
              f"slow {t_slow:.1f} s, fast {t_fast_rows:.1f} s, Rust batch {t_rust:.1f} s; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)

    b_scale = total_rows / baseline_rows
    t_scale = total_rows / done

    def scaled(seconds: float, measured_rows: int, factor: float) -> str:
        if factor == 1:
            return f"{seconds:.1f} s (measured on all {total_rows} rows)"
        return (f"{seconds * factor:.1f} s scaled to {total_rows} rows "
                f"(measured {seconds:.1f} s on {measured_rows} rows)")

    print(f"\nrows {total_rows}, texts {2 * total_rows}; tokens in the {done} batched rows: {n_tokens} "
          f"({n_tokens / (2 * done):.0f} per text); ids identical to the slow tokenizer's on {baseline_rows} rows")
    print(f"baseline, reference method (slow tokenizer, one call per text): {scaled(t_slow, baseline_rows, b_scale)}")
    print(f"fast tokenizer, one call per text: {scaled(t_fast_rows, baseline_rows, b_scale)}")
    print(f"fast tokenizer, Rust batch encoder: {scaled(t_rust, baseline_rows, b_scale)}")
    print(f"processorca.tokenize (fast tokenizer, word cache): {scaled(t_batch, done, t_scale)}")
    ours = t_batch * t_scale
    print(f"speed-up over the reference method: {t_slow * b_scale / ours:.1f}x "
          f"(over fast one call per text: {t_fast_rows * b_scale / ours:.1f}x, "
          f"over the Rust batch encoder: {t_rust * b_scale / ours:.1f}x)")
    print(f"character filter: per-character loop {t_eng_ref * b_scale:.1f} s (scaled), processorca.is_english "
          f"{t_eng_fast * t_scale:.1f} s{' (scaled)' if t_scale > 1 else ''} "
          f"({t_eng_ref * b_scale / (t_eng_fast * t_scale):.0f}x)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
