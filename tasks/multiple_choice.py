"""Multiple-choice questions scored by the log-likelihood of each answer (MMLU, llama.cpp's
`llama-perplexity --multiple-choice`).

Scoring is llama.cpp's: every choice is tokenized as `context + " " + answer` (BOS first), the
tokens that all choices share at the start are the common prefix, and a choice's score is the
mean log-probability of its tokens after that prefix. The highest score is the prediction.
Accuracy's standard error is llama.cpp's sqrt(p (1 - p) / (n - 1)); the random-chance baseline is
the mean of 1 / (number of choices).

Two prompt styles:
- "letters" (default for MMLU files): the original MMLU prompt. A subject header, the question,
  the choices as "A. ...", then "Answer:"; the scored answers are the letters.
- "text" (default for llama.cpp files): the context is the question and the scored answers are
  the choice texts themselves, as llama.cpp does.

Few-shot: k solved examples from a dev file go before each question (same subject when the
files give subjects, as MMLU's 5-shot setup).

Files read:
- MMLU CSV as published (no header: question, A, B, C, D, answer letter; subject from the file
  name such as `abstract_algebra_test.csv`), or a CSV with a header naming those columns
  (optionally `subject`); a folder of such CSV files;
- MMLU parquet (`question`, `subject`, `choices` list, `answer` index), as on the HF hub;
- llama.cpp's multiple-choice JSON (a list, or JSON lines, of {"question", "mc1_targets":
  {"choices", "labels"}}) and the binary `.bin` files `llama-perplexity -bf` reads.
"""
from __future__ import annotations

import logging
import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from backends.base import Backend
from common.errors import HarnessError
from tasks.common import TaskTokenizer, parse_json_or_lines

log = logging.getLogger(__name__)

STYLES = ("letters", "text")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SPLIT_SUFFIX = re.compile(r"_(test|dev|val|validation|train|auxiliary_train)$")


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, ...]
    answer: int          # index into choices
    subject: str = ""


@dataclass(frozen=True)
class Loaded:
    questions: list[Question]
    format: str          # "mmlu-csv", "mmlu-parquet", "llamacpp-json", "llamacpp-bin"


# -- reading files -------------------------------------------------------------------------------
def load_questions(path: str | Path) -> Loaded:
    """Questions from a file or a folder of MMLU CSV/parquet files (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise HarnessError(f"multiple-choice file not found: {p}")
    if p.is_dir():
        files = sorted([*p.glob("*.csv"), *p.glob("*.parquet")])
        if not files:
            raise HarnessError(f"no .csv or .parquet files in the folder {p}")
        loaded = [load_questions(f) for f in files]
        return Loaded([q for one in loaded for q in one.questions], loaded[0].format)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        out = Loaded(_read_mmlu_csv(p), "mmlu-csv")
    elif suffix == ".parquet":
        out = Loaded(_read_mmlu_parquet(p), "mmlu-parquet")
    elif suffix in (".json", ".jsonl"):
        out = Loaded(_read_llamacpp_json(p), "llamacpp-json")
    elif suffix == ".bin":
        out = Loaded(_read_llamacpp_bin(p), "llamacpp-bin")
    else:
        raise HarnessError(f"cannot read {p}: expected .csv, .parquet (MMLU), .json/.jsonl or .bin "
                           "(llama.cpp multiple choice), or a folder of MMLU files")
    if not out.questions:
        raise HarnessError(f"{p} holds no questions")
    return out


def _subject_from_name(p: Path) -> str:
    return _SPLIT_SUFFIX.sub("", p.stem).replace("_", " ")


def _check(q: Question, where: str) -> Question:
    if not q.question.strip():
        raise HarnessError(f"{where}: empty question")
    if len(q.choices) < 2:
        raise HarnessError(f"{where}: needs at least 2 choices, got {len(q.choices)}")
    if any(not c.strip() for c in q.choices):
        raise HarnessError(f"{where}: empty answer choice")
    if not 0 <= q.answer < len(q.choices):
        raise HarnessError(f"{where}: answer index {q.answer} outside the {len(q.choices)} choices")
    return q


def _answer_index(raw, n_choices: int, where: str) -> int:
    text = str(raw).strip()
    if len(text) == 1 and text.upper() in LETTERS[:n_choices]:
        return LETTERS.index(text.upper())
    try:
        return int(float(text))
    except ValueError:
        raise HarnessError(f"{where}: answer '{text}' is neither a letter nor an index") from None


def _read_mmlu_csv(p: Path) -> list[Question]:
    import pandas as pd

    try:
        df = pd.read_csv(p, header=None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise HarnessError(f"{p} is not a readable CSV file: {e}".splitlines()[0]) from None
    if df.empty:
        return []
    first = [str(v).strip().lower() for v in df.iloc[0]]
    if "question" in first:   # a header row: columns by name
        df.columns = first
        df = df.iloc[1:]
        letters = [c for c in LETTERS.lower() if c in df.columns]
        if "answer" not in df.columns or len(letters) < 2:
            raise HarnessError(f"{p}: a header CSV needs the columns question, A, B, ... and answer; "
                               f"found {', '.join(first)}")
        choice_cols = letters
    else:                      # the published MMLU layout: question, choices..., answer letter
        if df.shape[1] < 4:
            raise HarnessError(f"{p}: expected MMLU rows (question, A, B, C, D, answer), "
                               f"found {df.shape[1]} columns")
        df.columns = ["question", *[LETTERS[i].lower() for i in range(df.shape[1] - 2)], "answer"]
        choice_cols = list(df.columns[1:-1])
    subject = _subject_from_name(p)
    out = []
    for n, (_, row) in enumerate(df.iterrows(), start=1):
        where = f"{p} row {n}"
        choices = tuple(str(row[c]) for c in choice_cols)
        out.append(_check(Question(str(row["question"]), choices,
                                   _answer_index(row["answer"], len(choices), where),
                                   str(row.get("subject", "") or subject).replace("_", " ")), where))
    return out


def _read_mmlu_parquet(p: Path) -> list[Question]:
    import pandas as pd

    try:
        df = pd.read_parquet(p)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise HarnessError(f"{p} is not a readable parquet file: {e}".splitlines()[0]) from None
    missing = {"question", "choices", "answer"} - set(df.columns)
    if missing:
        raise HarnessError(f"{p}: MMLU parquet needs the columns question, choices, answer; "
                           f"missing {', '.join(sorted(missing))}")
    out = []
    for n, row in enumerate(df.itertuples(index=False), start=1):
        where = f"{p} row {n}"
        choices = tuple(str(c) for c in row.choices)
        subject = str(getattr(row, "subject", "") or _subject_from_name(p)).replace("_", " ")
        out.append(_check(Question(str(row.question), choices, _answer_index(row.answer, len(choices), where),
                                   subject), where))
    return out


def _llamacpp_question(obj, where: str) -> Question:
    """One {"question", "mc1_targets": {"choices", "labels"}} task; exactly one label is 1."""
    try:
        mc1 = obj["mc1_targets"]
        choices, labels, question = mc1["choices"], mc1["labels"], obj["question"]
    except (KeyError, TypeError):
        raise HarnessError(f"{where}: expected {{\"question\": ..., \"mc1_targets\": {{\"choices\": [...], "
                           "\"labels\": [...]}}}} (llama.cpp multiple-choice JSON)") from None
    # Types as llama.cpp writes them: str() would score null as the text "None", a string of choices
    # as one choice per character, and true as the label 1.
    if not isinstance(question, str):
        raise HarnessError(f"{where}: question must be text, got {_shown(question)}")
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise HarnessError(f"{where}: mc1_targets.choices must be a list of texts, got {_shown(choices)}")
    if not isinstance(labels, list) or not all(type(v) is int for v in labels):
        raise HarnessError(f"{where}: mc1_targets.labels must be a list of 0/1 integers, got {_shown(labels)}")
    choices = tuple(choices)
    if len(labels) != len(choices) or labels.count(1) != 1:
        raise HarnessError(f"{where}: mc1_targets needs one label per choice with exactly one label 1")
    return _check(Question(question, choices, labels.index(1), str(obj.get("subject", ""))), where)


def _shown(value) -> str:
    return json.dumps(value)[:80]


def _read_llamacpp_json(p: Path) -> list[Question]:
    data = parse_json_or_lines(p.read_text(encoding="utf-8", errors="replace"), p)
    if not isinstance(data, list):
        raise HarnessError(f"{p}: expected a JSON list of multiple-choice tasks")
    return [_llamacpp_question(obj, f"{p} task {i}") for i, obj in enumerate(data, start=1)]


def _read_llamacpp_bin(p: Path) -> list[Question]:
    """llama.cpp's binary layout: u32 task count, u32 offsets, then per task the question and two
    answer sets (mc1: single correct answer, used here; mc2: multiple, ignored), strings as
    u32 length + bytes, labels as i32."""
    data = p.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise HarnessError(f"{p}: truncated llama.cpp multiple-choice file (at byte {pos})")
        values = struct.unpack_from(fmt, data, pos)
        pos += size
        return values

    def string() -> str:
        (n,) = take("<I")
        return take(f"<{n}s")[0].decode("utf-8", errors="replace")

    def answers() -> tuple[list[str], list[int]]:
        (n,) = take("<I")
        if n > 100:
            raise HarnessError(f"{p}: not a llama.cpp multiple-choice file ({n} answers in one task)")
        texts = [string() for _ in range(n)]
        return texts, list(take(f"<{n}i"))

    (n_task,) = take("<I")
    if n_task == 0 or 4 + 4 * n_task > len(data):
        raise HarnessError(f"{p}: not a llama.cpp multiple-choice file (bad task count {n_task})")
    offsets = take(f"<{n_task}I")
    out = []
    for i, off in enumerate(offsets, start=1):
        pos = off
        question = string()
        choices, labels = answers()
        answers()  # mc2
        out.append(_llamacpp_question({"question": question, "mc1_targets": {"choices": choices, "labels": labels}},
                                      f"{p} task {i}"))
    return out


# -- prompts -------------------------------------------------------------------------------------
def _mmlu_block(q: Question) -> str:
    lines = [q.question.strip()] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(q.choices)]
    return "\n".join(lines) + "\nAnswer:"


def prompt_and_answers(q: Question, style: str, shots: list[Question] = ()) -> tuple[str, list[str]]:
    """The context and the answer strings whose likelihood is compared (joined with a space)."""
    if style == "letters":
        about = f" about {q.subject}" if q.subject else ""
        head = f"The following are multiple choice questions (with answers){about}.\n\n"
        examples = "".join(f"{_mmlu_block(s)} {LETTERS[s.answer]}\n\n" for s in shots)
        return head + examples + _mmlu_block(q), [LETTERS[i] for i in range(len(q.choices))]
    if style == "text":
        examples = "".join(f"{s.question.strip()} {s.choices[s.answer]}\n\n" for s in shots)
        return examples + q.question.strip(), list(q.choices)
    raise HarnessError(f"unknown prompt style '{style}' (choose from: {', '.join(STYLES)})")


def pick_shots(q: Question, dev: list[Question], k: int) -> list[Question]:
    """k dev examples, of the question's subject when there are enough of those."""
    if k <= 0:
        return []
    same = [d for d in dev if d.subject == q.subject]
    return (same if len(same) >= k else dev)[:k]


# -- scoring -------------------------------------------------------------------------------------
def choice_scores(backend: Backend, tokenizer: TaskTokenizer, context: str, answers: list[str]) -> list[float]:
    """Mean log-prob of each answer's tokens after the prefix that all choices share (llama.cpp)."""
    seqs = [tokenizer.encode(f"{context} {a}") for a in answers]
    shortest = min(len(s) for s in seqs)
    prefix = 0
    while prefix < shortest and all(s[prefix] == seqs[0][prefix] for s in seqs):
        prefix += 1
    prefix = max(min(prefix, shortest - 1), 1)   # every answer keeps at least one scored token
    scores = []
    for seq in seqs:
        lp = backend.score(seq)
        tail = lp[prefix:]
        scores.append(math.fsum(tail) / len(tail))
    return scores


@dataclass
class MultipleChoiceResult:
    accuracy: float
    accuracy_stderr: float
    chance_accuracy: float
    n_questions: int
    n_correct: int
    per_subject: dict[str, dict]

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def evaluate(backend: Backend, tokenizer: TaskTokenizer, questions: list[Question], style: str,
             dev: list[Question] = (), num_fewshot: int = 0,
             progress: bool = True) -> tuple[MultipleChoiceResult, list[dict]]:
    """Accuracy over `questions`, and one record per question (answer, prediction, scores)."""
    if style not in STYLES:
        raise HarnessError(f"unknown prompt style '{style}' (choose from: {', '.join(STYLES)})")
    if num_fewshot > 0 and len(dev) < num_fewshot:
        raise HarnessError(f"{num_fewshot}-shot needs at least {num_fewshot} dev examples, got {len(dev)} "
                           "(give --fewshot-path)")
    samples = []
    for i, q in enumerate(tqdm(questions, desc="multiple-choice", unit="question", disable=not progress)):
        context, answers = prompt_and_answers(q, style, pick_shots(q, list(dev), num_fewshot))
        scores = choice_scores(backend, tokenizer, context, answers)
        predicted = max(range(len(scores)), key=scores.__getitem__)
        samples.append({"index": i, "subject": q.subject, "answer": q.answer, "predicted": predicted,
                        "correct": predicted == q.answer, "scores": scores})
    n = len(samples)
    if n == 0:
        raise HarnessError("no questions to evaluate")
    correct = sum(s["correct"] for s in samples)
    p = correct / n
    per_subject: dict[str, dict] = {}
    for s in samples:
        d = per_subject.setdefault(s["subject"] or "(none)", {"n": 0, "correct": 0})
        d["n"] += 1
        d["correct"] += s["correct"]
    for d in per_subject.values():
        d["accuracy"] = d["correct"] / d["n"]
    result = MultipleChoiceResult(
        accuracy=p, accuracy_stderr=math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else float("nan"),
        chance_accuracy=sum(1 / len(q.choices) for q in questions) / n, n_questions=n, n_correct=correct,
        per_subject=per_subject)
    log.info("multiple choice: %d/%d correct, accuracy %.4f +/- %.4f (chance %.4f)", correct, n, p,
             result.accuracy_stderr, result.chance_accuracy)
    return result, samples
