"""ROUGE scoring speed: accuracy.rouge (fast path) against single-process rouge_score.

Generates seeded OpenOrca-length (target, prediction) pairs: English words with a Zipf-like
frequency, sentences of 5-30 words, answers of ~20-800 words (median ~170, like the reference
outputs of the llama2-70b dataset), predictions sharing about half their words with the target.
Both texts are sentence-split as evaluation.py does (not timed). Then it times

- rouge_score's RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True).score,
  one process, as the reference's evaluate.load("rouge") runs it, on --baseline-samples pairs
  (all of them with --baseline-samples 0; otherwise the full time is extrapolated and says so);
- accuracy.rouge.score_pairs on all pairs, in one process and on all cores;

and prints the speed-ups and the largest absolute difference between the two on the baseline pairs.

    python benchmarks/evaluation_speed.py [--samples 24576] [--baseline-samples 2000]
"""
import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from rouge_score import rouge_scorer  # noqa: E402

from accuracy.rouge import ROUGE_TYPES, score_pairs  # noqa: E402
from accuracy.sentences import newline_sentences  # noqa: E402


def vocabulary() -> list[str]:
    """Real English words (the Punkt English model's vocabulary), most frequent-looking first."""
    from punkt.data import load_module
    words = [w for w in load_module("english").ORTHO_CONTEXT if w.isalpha() and len(w) < 14]
    return sorted(set(words))


def make_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    words = vocabulary()
    rng.shuffle(words)
    weights = [1.0 / (rank + 10) for rank in range(len(words))]  # Zipf-like: a few words repeat a lot
    cum = list(np.cumsum(weights))

    def draw(k):
        return rng.choices(words, cum_weights=cum, k=k)

    def sentences(n_words):
        out, left = [], n_words
        while left > 0:
            k = min(left, rng.randint(5, 30))
            sent = draw(k)
            sent[0] = sent[0].capitalize()
            if k > 8 and rng.random() < 0.4:
                sent[k // 2] += ","
            out.append(" ".join(sent) + rng.choice(".....?!"))
            left -= k
        return out

    pairs = []
    for _ in range(n):
        n_words = int(min(800, max(20, rng.lognormvariate(5.15, 0.7))))
        target = sentences(n_words)
        # the answer keeps about half of the words, reorders some sentences and is shorter or longer
        kept = [" ".join(w if rng.random() < 0.5 else draw(1)[0] for w in s.split(" ")) for s in target]
        for i in range(len(kept) - 1):
            if rng.random() < 0.5:
                kept[i], kept[i + 1] = kept[i + 1], kept[i]
        cut = int(len(kept) * rng.uniform(0.6, 1.3))
        pred = kept[:cut] if cut <= len(kept) else kept + sentences(20 * (cut - len(kept)))
        pairs.append((" ".join(target), " ".join(pred)))
    return pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("--samples", type=int, default=24576)
    ap.add_argument("--baseline-samples", type=int, default=2000,
                    help="pairs to score with plain rouge_score (0: all; else the full time is extrapolated)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    print(f"cpu_count={os.cpu_count()} loadavg at start={tuple(round(x, 2) for x in os.getloadavg())}")
    t0 = time.perf_counter()
    pairs = make_pairs(args.samples, args.seed)
    targets = [newline_sentences(t) for t, _ in pairs]
    preds = [newline_sentences(p) for _, p in pairs]
    words = [len(t.split()) for t in targets]
    print(f"generated {len(pairs)} pairs in {time.perf_counter() - t0:.1f} s (incl. sentence splitting); "
          f"target words mean {np.mean(words):.0f} median {np.median(words):.0f} max {max(words)}")

    nb = len(pairs) if args.baseline_samples <= 0 else min(args.baseline_samples, len(pairs))
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    t0 = time.perf_counter()
    base = [scorer.score(t, p) for t, p in zip(targets[:nb], preds[:nb])]
    t_base = time.perf_counter() - t0
    t_base_full = t_base * len(pairs) / nb
    label = "measured" if nb == len(pairs) else f"extrapolated from {nb} pairs"
    print(f"rouge_score, 1 process: {t_base:.1f} s for {nb} pairs ({1e3 * t_base / nb:.2f} ms/pair); "
          f"{len(pairs)} pairs: {t_base_full:.1f} s ({label})")

    t0 = time.perf_counter()
    one = score_pairs(targets, preds, num_workers=1)
    t_one = time.perf_counter() - t0
    print(f"accuracy.rouge, 1 process: {t_one:.1f} s for {len(pairs)} pairs ({1e3 * t_one / len(pairs):.2f} ms/pair), "
          f"speed-up x{t_base_full / t_one:.1f}")
    t0 = time.perf_counter()
    allc = score_pairs(targets, preds, num_workers=None)
    t_all = time.perf_counter() - t0
    print(f"accuracy.rouge, {os.cpu_count()} processes: {t_all:.1f} s for {len(pairs)} pairs, "
          f"speed-up x{t_base_full / t_all:.1f}")

    assert one == allc, "multi-process scores differ from in-process scores"
    diffs = {k: max(abs(b[k].fmeasure - getattr(f, k)) for b, f in zip(base, one)) for k in ROUGE_TYPES}
    agg_base = {k: float(round(np.mean([b[k].fmeasure for b in base]) * 100, 4)) for k in ROUGE_TYPES}
    agg_fast = {k: float(round(np.mean([getattr(f, k) for f in one[:nb]]) * 100, 4)) for k in ROUGE_TYPES}
    print(f"max abs difference per sample on {nb} pairs: {diffs}")
    print(f"aggregate (x100, 4 d.p.) rouge_score: {agg_base}")
    print(f"aggregate (x100, 4 d.p.) accuracy.rouge: {agg_fast}  identical={agg_base == agg_fast}")
    print(f"loadavg at end={tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
