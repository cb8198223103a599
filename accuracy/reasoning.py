"""Exact-match grading of the reasoning benchmarks (deepseek-r1, gpt-oss-120b).

Each output is graded as the benchmark's reference grader does, by the sub-dataset named in the
dataset's `dataset` column (matched by substring, in the reference's order):
- gpqa: a letter A-D, mmlu_pro / mmlu: A-J, after "Answer:" / "FINAL ANSWER:" (the last one);
- math500: the last \\boxed{...} (braces matched), equal under the MATH grader (math_grade);
- aime: the last \\boxed{N}, else the last "Answer: N", an integer 0-999;
- livecodebench: the ```python block, run against the problem's tests (a code runner).
A reasoning trace needs no separate cleaning for the last-answer rules: whatever the think block
holds, the answer stated last (after it) is the one read. gpt-oss-120b answers in the Harmony
format; its grader reads the letter and the code from the `final` channel first.

The score is the share of right answers in percent: over all outputs for deepseek-r1, and for
gpt-oss-120b with the sub-datasets that the data set repeats (aime25 8 times, gpqa_diamond 5,
livecodebench_v6 3) weighted down by their repeats, as its reference does.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from accuracy import math_grade
from common.errors import HarnessError

BENCHMARKS = ("deepseek-r1", "gpt-oss-120b")
_DATASETS = {"deepseek-r1": ("gpqa", "mmlu_pro", "math500", "aime", "livecodebench"),
             "gpt-oss-120b": ("gpqa", "mmlu_pro", "math500", "aime", "livecodebench", "mmlu")}
_CHOICES = {"gpqa": "D", "mmlu_pro": "J", "mmlu": "J"}
REPEATS = {"gpt-oss-120b": {"aime25": 8, "gpqa_diamond": 5, "livecodebench_v6": 3}}

_FINAL_RE = re.compile(r"<\|channel\|>final[^<]*<\|message\|>(.*?)(?:<\|return\|>|$)", re.DOTALL)
_BOLD_RE = re.compile(r"\*\*([^*]+)\*\*")
_AIME_BOXED_RE = re.compile(r"\\boxed{\s*(\d+)\s*}")
_AIME_ANSWER_RE = re.compile(r"Answer:\s*(\d+)(?!\.)\b", re.IGNORECASE | re.MULTILINE)
_PY_BLOCK_RE = re.compile(r"```python(.*?)```", re.DOTALL)
_ANY_BLOCK_RE = re.compile(r"```(.*?)```", re.DOTALL)
_LANG_TAG_RE = re.compile(r"^(?:python|py)\s*\n", re.IGNORECASE)

# (code, question_id) pairs in, one pass/fail per pair out
CodeRunner = Callable[[Sequence[tuple[str, str]]], list[bool]]


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def sub_dataset(benchmark: str, name) -> str:
    """The grader a `dataset` value selects ("gpqa", "math500", ...)."""
    lowered = _text(name).lower()
    if not lowered:
        raise HarnessError("an output has no dataset name (the `dataset` column is empty)")
    for key in _DATASETS[benchmark]:
        if key in lowered:
            return key
    raise HarnessError(f"no grader for dataset {name!r} of {benchmark} (known: {', '.join(_DATASETS[benchmark])})")


def final_channel(text: str) -> str:
    """The Harmony `final` channel's message, or the whole text when there is none."""
    m = _FINAL_RE.search(text)
    return m.group(1).strip() if m else text


def _unquote(text: str) -> str:
    if text.startswith(("['", '["')) and text.endswith(("']", '"]')):
        text = text[2:-2].strip()
    return text.replace(r"\n", "\n").replace(r"\'", "'")


def _last_stated_choice(text: str, last: str) -> str | None:
    pattern = rf"\b(?:ANSWER|FINAL\s*ANSWER)\b\s*[:=]?\s*(?:\(?\s*([A-{last}])\s*\)?)(?:\s*$|[^A-Za-z])"
    matches = list(re.finditer(pattern, text, re.IGNORECASE))
    return matches[-1].group(1).upper() if matches else None


def _last_letter(text: str, last: str) -> str | None:
    matches = list(re.finditer(rf"\b([A-{last}])\b", text, re.IGNORECASE))
    return matches[-1].group(1).upper() if matches else None


def parse_choice(text: str, last: str, harmony: bool = False) -> str | None:
    """The chosen letter (A to `last`); MMLU-Pro (A-J) falls back to the last standalone letter."""
    if not text:
        return None
    if not harmony:
        text = _unquote(text)
        return _last_stated_choice(text, last) or (_last_letter(text, last) if last == "J" else None)
    final = _unquote(_BOLD_RE.sub(r"\1", final_channel(text)))
    m = re.match(rf"^[^a-zA-Z]*([A-{last}])(?:[^a-zA-Z]|$)", final.strip(), re.IGNORECASE)
    if m:
        return m.group(1).upper()
    m = re.search(rf"\b(?:Answer|ANSWER)\s*[:.]?\s*([A-{last}])\b", final, re.IGNORECASE)
    if m:
        return m.group(1).upper()
    stated = _last_stated_choice(text.replace(r"\n", "\n").replace(r"\'", "'"), last)
    return stated or (_last_letter(final, last) if last == "J" else None)


def parse_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...}, nested braces kept; None if it never closes."""
    start = text.rfind(r"\boxed{")
    if start == -1:
        return None
    depth = 0
    for i in range(start + 7, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[start + 7:i].strip()
            depth -= 1
    return None


def parse_aime(text: str) -> int | None:
    matches = list(_AIME_BOXED_RE.finditer(text)) or list(_AIME_ANSWER_RE.finditer(text))
    if not matches:
        return None
    value = int(matches[-1].group(1))
    return value if 0 <= value <= 999 else None


def parse_code(text: str, harmony: bool = False) -> str | None:
    """deepseek-r1: the first ```python block; gpt-oss-120b: the last ```python block, else the last
    ``` block, from the final channel first."""
    if not text:
        return None
    if not harmony:
        m = _PY_BLOCK_RE.search(text)
        return m.group(1).strip() if m else None
    final = final_channel(text)
    for part in ((final, text) if final != text else (text,)):
        blocks = list(_PY_BLOCK_RE.finditer(part))
        if blocks:
            return blocks[-1].group(1).strip()
        blocks = list(_ANY_BLOCK_RE.finditer(part))
        if blocks:
            return _LANG_TAG_RE.sub("", blocks[-1].group(1).strip())
    return None


def extract(benchmark: str, dataset: str, output) -> str | int | None:
    text = _text(output)
    harmony = benchmark == "gpt-oss-120b"
    if not text:
        return None
    if dataset in _CHOICES:
        return parse_choice(text, _CHOICES[dataset], harmony)
    if dataset == "math500":
        return parse_boxed(text)
    if dataset == "aime":
        return parse_aime(text)
    return parse_code(text, harmony)


def is_right(dataset: str, extracted, truth) -> bool:
    """Whether an extracted answer (not code) equals the ground truth."""
    if extracted is None or truth is None or (isinstance(truth, float) and math.isnan(truth)):
        return False
    if dataset in _CHOICES:
        if not extracted or not truth:
            return False
        return extracted.upper() in "ABCDEFGHIJ"[:"ABCDEFGHIJ".index(_CHOICES[dataset]) + 1] and \
            extracted.upper() == str(truth).upper()
    if dataset == "aime":
        try:
            return int(extracted) == int(truth)
        except (ValueError, TypeError):
            return False
    given = str(extracted).strip()
    return bool(given) and bool(str(truth)) and math_grade.answers_equal(given, str(truth))


@dataclass
class Graded:
    dataset: str          # the `dataset` value as the data set names it
    extracted: str | int | None
    correct: bool


@dataclass
class Score:
    benchmark: str
    exact_match: float
    tokens_per_sample: float
    num_samples: int
    per_dataset: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (right, total)

    def checker_line(self) -> str:
        """The line the submission checker parses with its 'exact_match' (and 'tokens_per_sample')
        patterns, as the reference prints it."""
        return str({"exact_match": self.exact_match, "tokens_per_sample": self.tokens_per_sample,
                    "num-samples": self.num_samples})

    def table(self) -> str:
        rows = [f"{'dataset':24s} {'right':>7s} {'total':>7s} {'accuracy':>9s}"]
        for name, (right, total) in sorted(self.per_dataset.items()):
            rows.append(f"{name:24s} {right:7d} {total:7d} {100.0 * right / total:8.2f}%")
        rows.append(f"{'exact_match':24s} {'':7s} {self.num_samples:7d} {self.exact_match:8.4f}")
        return "\n".join(rows)


def grade(benchmark: str, outputs: Sequence, truths: Sequence, datasets: Sequence,
          run_code: CodeRunner | None = None, question_ids: Sequence | None = None) -> list[Graded]:
    """Grade outputs item by item. Code is run only through `run_code` (the sandbox); it gets the
    outputs that hold code, with their question ids."""
    if benchmark not in BENCHMARKS:
        raise HarnessError(f"unknown reasoning benchmark {benchmark!r} (known: {', '.join(BENCHMARKS)})")
    if not len(outputs) == len(truths) == len(datasets):
        raise HarnessError("outputs, ground truths and dataset names differ in number")
    graded, code_items = [], []
    for n, (output, truth, name) in enumerate(zip(outputs, truths, datasets)):
        kind = sub_dataset(benchmark, name)
        extracted = extract(benchmark, kind, output)
        if kind == "livecodebench":
            # the reference runs code only when both the code and the question id are there
            qid = question_ids[n] if question_ids is not None else truth
            if extracted and _text(qid):
                code_items.append((n, extracted, _text(qid)))
            graded.append(Graded(str(name), extracted, False))
        else:
            graded.append(Graded(str(name), extracted, is_right(kind, extracted, truth)))
    if code_items:
        if run_code is None:
            raise HarnessError(f"{len(code_items)} livecodebench outputs hold code, and no code runner was given")
        for (n, _, _), passed in zip(code_items, run_code([(code, qid) for _, code, qid in code_items])):
            graded[n].correct = bool(passed)
    return graded


def score(benchmark: str, graded: Sequence[Graded], token_counts: Sequence[int]) -> Score:
    per: dict[str, list[int]] = {}
    for g in graded:
        counts = per.setdefault(g.dataset, [0, 0])
        counts[0] += g.correct
        counts[1] += 1
    repeats = REPEATS.get(benchmark, {})
    right = sum(r / repeats.get(name, 1) for name, (r, _) in per.items())
    total = sum(t / repeats.get(name, 1) for name, (_, t) in per.items())
    return Score(benchmark, 100.0 * right / total if total else 0.0,
                 float(sum(token_counts)) / len(token_counts) if token_counts else 0.0,
                 len(graded), {name: (r, t) for name, (r, t) in per.items()})
