"""Summarization: greedy summaries (at most 300 new tokens) through Backend.generate(), documents
per second, and ROUGE-1/2/L/Lsum against reference summaries (accuracy/rouge.py: the same numbers
as `rouge_score` with the stemmer, the MLPerf reference's settings; reported x100 as there).

Documents per second is the number of documents over the wall time of the generate() calls
(tokenization, decoding and scoring excluded).

Files read (JSON list or JSON lines):
- objects with "document" and "summary" (WikiLingua's field names; the demo file), or "source"
  and "target" (the GEM release of WikiLingua), optionally "id";
- WikiLingua's original nesting {article_url: {section_name: {"document", "summary", ...}}}.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from accuracy.rouge import ROUGE_TYPES, score_pairs
from backends.base import Backend
from common.errors import HarnessError
from common.files import read_text
from tasks.common import TaskTokenizer, parse_json_or_lines

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 300
DEFAULT_TEMPLATE = "Summarize the following article in a few sentences.\n\nArticle:\n{document}\n\nSummary:"
_FIELDS = (("document", "summary"), ("source", "target"))


@dataclass(frozen=True)
class Document:
    id: str
    document: str
    reference: str


def load_documents(path: str | Path) -> list[Document]:
    """Documents with reference summaries (see the module docstring for the accepted layouts)."""
    p = Path(path)
    data = parse_json_or_lines(read_text(p, "summarization file"), p)
    if isinstance(data, dict):   # WikiLingua's nesting: url -> section -> {document, summary}
        flat = []
        for url, sections in data.items():
            if not isinstance(sections, dict):
                raise HarnessError(f"{p}: expected {{url: {{section: {{document, summary}}}}}}, "
                                   f"got {type(sections).__name__} under {url!r}")
            flat.extend({"id": f"{url}#{name}", **item} for name, item in sections.items() if isinstance(item, dict))
        data = flat
    if not isinstance(data, list) or not data:
        raise HarnessError(f"{p}: expected a non-empty list of {{\"document\", \"summary\"}} objects")
    docs = []
    for i, obj in enumerate(data, start=1):
        fields = next((f for f in _FIELDS if isinstance(obj, dict) and f[0] in obj and f[1] in obj), None)
        if fields is None:
            keys = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
            raise HarnessError(f"{p} item {i}: needs \"document\" and \"summary\" (or \"source\" and "
                               f"\"target\"); found {keys}")
        doc, ref = obj[fields[0]], obj[fields[1]]
        if not isinstance(doc, str) or not isinstance(ref, str):
            # str() would score null as the summary "None" and a list as its Python repr
            raise HarnessError(f"{p} item {i}: {fields[0]} and {fields[1]} must be texts, got "
                               f"{type(doc).__name__} and {type(ref).__name__}")
        doc, ref = doc.strip(), ref.strip()
        if not doc or not ref:
            raise HarnessError(f"{p} item {i}: empty document or summary")
        docs.append(Document(str(obj.get("id", i)), doc, ref))
    return docs


@dataclass
class SummarizationResult:
    n_documents: int
    n_failed: int
    generate_seconds: float
    documents_per_second: float
    output_tokens: int
    output_tokens_per_second: float
    rouge1: float
    rouge2: float
    rougeL: float
    rougeLsum: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def summarize(backend: Backend, tokenizer: TaskTokenizer, docs: list[Document], template: str = DEFAULT_TEMPLATE,
              batch_size: int = 1, progress: bool = True) -> tuple[SummarizationResult, list[dict]]:
    """Generate a summary per document (the backend's GenerationParams cap the length), time the
    generate() calls and score ROUGE; a failed document counts with an empty summary."""
    if "{document}" not in template:
        raise HarnessError("the prompt template must contain {document}")
    if batch_size < 1:
        raise HarnessError(f"batch size must be >= 1, got {batch_size}")
    prompts = [tokenizer.encode(template.replace("{document}", d.document)) for d in docs]
    outputs: list = []
    seconds = 0.0
    bar = tqdm(total=len(docs), desc="summarization", unit="doc", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        t0 = time.perf_counter()
        outputs.extend(backend.generate(batch))
        seconds += time.perf_counter() - t0
        bar.update(len(batch))
    bar.close()
    samples, predictions, n_failed, n_tokens = [], [], 0, 0
    for d, prompt, out in zip(docs, prompts, outputs):
        error = None
        if isinstance(out, BaseException):
            log.warning("document %s failed: %s", d.id, out)
            error, out = f"{type(out).__name__}: {out}", []
            n_failed += 1
        text = tokenizer.decode(out).strip()
        predictions.append(text)
        n_tokens += len(out)
        samples.append({"id": d.id, "prompt_tokens": len(prompt), "output_tokens": len(out),
                        "summary": text, "reference": d.reference, "error": error})
    scores = score_pairs([d.reference for d in docs], predictions, num_workers=1)
    for sample, s in zip(samples, scores):
        sample["rouge"] = s.as_dict()
    mean = {k: 100.0 * sum(getattr(s, k) for s in scores) / len(scores) for k in ROUGE_TYPES}
    result = SummarizationResult(
        n_documents=len(docs), n_failed=n_failed, generate_seconds=seconds,
        documents_per_second=len(docs) / seconds if seconds > 0 else float("nan"),
        output_tokens=n_tokens, output_tokens_per_second=n_tokens / seconds if seconds > 0 else float("nan"),
        **mean)
    log.info("summarization: %d documents, %.3f docs/s, ROUGE-1 %.2f", len(docs), result.documents_per_second,
             result.rouge1)
    return result, samples
