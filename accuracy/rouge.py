"""ROUGE-1/2/L/Lsum F-measures, the same floats as `rouge_score`, several times faster.

The MLPerf reference scores with Hugging Face `evaluate.load("rouge")`, which builds
`rouge_score.rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"],
use_stemmer=True)` (default tokenizer, split_summaries=False) and calls `score(target, prediction)`
per pair. This module computes exactly the same numbers, faster, because:

- tokenisation is done once per line (the whole-text tokens of rouge1/2/L are the concatenation of
  the per-line tokens of rougeLsum: a newline is a token boundary) and Porter stems are cached;
- the longest common subsequence uses the bit-parallel algorithm (Allison-Dix / Hyyro), one
  big-integer step per prediction token instead of one Python step per table cell;
- rougeLsum needs not only the LCS length but the exact LCS that rouge_score's backtrack picks
  (its union over candidate sentences is counted); the bit vectors kept per column tell each
  backtrack step, so the same walk runs in O(m + n) steps without the m x n table;
- `score_pairs` spreads large inputs over processes.

Equality with rouge_score is tested (tests/test_evaluation.py) and measured on generated pairs
(benchmarks/evaluation_speed.py).
"""
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass

from rouge_score.scoring import fmeasure

from common.parallel import chunked_map

log = logging.getLogger(__name__)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# rouge_score.tokenize: lower-case, non-alphanumerics to spaces, split, stem words longer than 3.
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_VALID = re.compile(r"^[a-z0-9]+$")


@dataclass(frozen=True)
class RougeScores:
    """F-measures (0..1) of one prediction against its target."""
    rouge1: float
    rouge2: float
    rougeL: float
    rougeLsum: float

    def as_dict(self) -> dict:
        return asdict(self)


class _Tokenizer:
    """rouge_score's DefaultTokenizer(use_stemmer=True) with a stem cache."""

    def __init__(self):
        from nltk.stem import porter
        self._stem = porter.PorterStemmer().stem  # the stemmer rouge_score itself builds
        self._cache: dict[str, str] = {}

    def tokens(self, text: str) -> list[str]:
        cache = self._cache
        out = []
        for word in _NON_ALNUM.sub(" ", text.lower()).split():
            if len(word) > 3:
                stem = cache.get(word)
                if stem is None:
                    stem = cache[word] = self._stem(word)
                word = stem
            if _VALID.match(word):
                out.append(word)
        return out

    def lines(self, text: str) -> list[list[str]]:
        """Tokens of each non-empty line (rougeLsum's sentences; may be empty lists)."""
        return [self.tokens(line) for line in text.split("\n") if line]


def _match_masks(ref: list[str]) -> dict[str, int]:
    """Bit i set in masks[tok] when ref[i] == tok."""
    masks: dict[str, int] = {}
    for i, tok in enumerate(ref):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return masks


def lcs_length(ref: list[str], can: list[str], masks: dict[str, int] | None = None) -> int:
    """Length of the longest common subsequence (bit-parallel)."""
    m = len(ref)
    if not m or not can:
        return 0
    masks = _match_masks(ref) if masks is None else masks
    full = (1 << m) - 1
    v = full  # zero bits of v mark where the DP column increases
    for tok in can:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


def lcs_ref_indices(ref: list[str], can: list[str], masks: dict[str, int] | None = None) -> list[int]:
    """Indices into ref of the LCS that rouge_score's _backtrack_norec returns.

    rouge_score walks its DP table back from the corner: diagonal on a match, else left when
    table[i][j-1] > table[i-1][j], else up. Off a match table[i][j] is the larger of the two, so
    "left" means table[i-1][j] < table[i][j], which is bit i-1 of the bit vector after j prediction
    tokens being 0. Keeping those n vectors gives the same walk without building the table.
    """
    m, n = len(ref), len(can)
    if not m or not n:
        return []
    masks = _match_masks(ref) if masks is None else masks
    full = (1 << m) - 1
    cols = [full]
    v = full
    for tok in can:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
        cols.append(v)
    if v == full:  # nothing in common
        return []
    out = []
    i, j = m, n
    while i > 0 and j > 0:
        if ref[i - 1] == can[j - 1]:
            out.append(i - 1)
            i -= 1
            j -= 1
        elif (cols[j] >> (i - 1)) & 1:
            i -= 1
        else:
            j -= 1
    out.reverse()
    return out


def _ngram_score(target: Counter, prediction: Counter) -> float:
    overlap = sum(min(c, prediction[g]) for g, c in target.items())
    precision = overlap / max(sum(prediction.values()), 1)
    recall = overlap / max(sum(target.values()), 1)
    return fmeasure(precision, recall)


def _lcs_score(target: list[str], prediction: list[str]) -> float:
    if not target or not prediction:
        return 0.0  # rouge_score returns the int 0 here; 0 == 0.0 in every average
    lcs = lcs_length(target, prediction)
    return fmeasure(lcs / len(prediction), lcs / len(target))


def _summary_lcs_score(ref_sents: list[list[str]], can_sents: list[list[str]]) -> float:
    """rouge_score._summary_level_lcs: union LCS per reference sentence, no double counting."""
    if not ref_sents or not can_sents:
        return 0.0
    m = sum(map(len, ref_sents))
    n = sum(map(len, can_sents))
    if not n or not m:
        return 0.0
    cnt_r = Counter(t for s in ref_sents for t in s)
    cnt_c = Counter(t for s in can_sents for t in s)
    can_sets = [set(c) for c in can_sents]
    hits = 0
    for ref in ref_sents:
        masks = _match_masks(ref)
        union: set[int] = set()
        for can, can_set in zip(can_sents, can_sets):
            if not can_set.isdisjoint(masks):
                union.update(lcs_ref_indices(ref, can, masks))
        for i in sorted(union):
            tok = ref[i]
            if cnt_c[tok] > 0 and cnt_r[tok] > 0:
                hits += 1
                cnt_c[tok] -= 1
                cnt_r[tok] -= 1
    return fmeasure(hits / n, hits / m)


class FastRougeScorer:
    """Scores (target, prediction) pairs like RougeScorer(ROUGE_TYPES, use_stemmer=True)."""

    def __init__(self):
        self._tok = _Tokenizer()

    def score(self, target: str, prediction: str) -> RougeScores:
        ref_sents = self._tok.lines(target)
        can_sents = self._tok.lines(prediction)
        ref = [t for s in ref_sents for t in s]
        can = [t for s in can_sents for t in s]
        return RougeScores(
            rouge1=_ngram_score(Counter(ref), Counter(can)),
            rouge2=_ngram_score(Counter(zip(ref, ref[1:])), Counter(zip(can, can[1:]))),
            rougeL=_lcs_score(ref, can),
            rougeLsum=_summary_lcs_score(ref_sents, can_sents),
        )


_worker_scorer: FastRougeScorer | None = None


def _score_chunk(chunk: list[tuple[str, str]]) -> list[RougeScores]:
    global _worker_scorer  # one scorer (and stem cache) per process
    if _worker_scorer is None:
        _worker_scorer = FastRougeScorer()
    return [_worker_scorer.score(t, p) for t, p in chunk]


def score_pairs(targets: list[str], predictions: list[str], num_workers: int | None = None,
                progress: bool = False) -> list[RougeScores]:
    """Per-pair scores in input order; num_workers None = all cores, 1 = in this process."""
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    return chunked_map(_score_chunk, list(zip(targets, predictions)), num_workers, desc="rouge", progress=progress)
