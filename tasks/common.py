"""What the tasks share: text <-> token ids, opening a backend, statistics, results.json.

Tokenizers: a task turns text into the ids that Backend.score()/generate() take, with the
project's tokenizer loader (inputs/tokenizer.py). For a GGUF file that is llama.cpp's own
vocabulary, so the numbers match llama.cpp's `llama-perplexity` tool token for token whichever
backend computes the log-probabilities.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from backends import GenerationParams, make_backend
from backends.base import Backend
from common.errors import HarnessError
from common.files import parse_json
from common.times import iso_utc
from harness.results import RESULTS_FILE, environment, write_new_json
from inputs.models import resolve_model_path
from inputs.tokenizer import load_tokenizer

log = logging.getLogger(__name__)


# -- tokenizers ----------------------------------------------------------------------------------
class TaskTokenizer:
    """Text <-> ids for the tasks, over inputs.tokenizer.load_tokenizer (llama.cpp's vocabulary
    for a .gguf file, the Hugging Face tokenizer of a folder).

    Text is tokenized as plain text (a "<eos>" in a document is not the EOS token), as
    llama.cpp's perplexity and multiple-choice code do. `bos_id` is None when the model does not
    start sequences with BOS."""

    def __init__(self, model_path: str | None):
        self._tok = load_tokenizer(model_path)
        bos = self._tok.bos_token_id
        # Ask the tokenizer itself whether it starts sequences with BOS (Llama/Gemma yes, GPT-2 no).
        self.bos_id = bos if bos is not None and self._tok("a")["input_ids"][:1] == [bos] else None

    def encode(self, text: str, bos: bool = True) -> list[int]:
        ids = self._tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return ([self.bos_id] if bos and self.bos_id is not None else []) + list(ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(t) for t in ids], skip_special_tokens=True)


# -- backends ------------------------------------------------------------------------------------
@dataclass
class BackendSpec:
    """What the command line says about the backend (the flags of main.py)."""
    name: str = "llamacpp"
    model_path: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    options: dict[str, str] | None = None

    def open(self, params: GenerationParams = GenerationParams()) -> Backend:
        """Construct and load the backend; the model path defaults to the embedded GGUF."""
        backend = make_backend(self.name, model_path=resolve_model_path(self.model_path), dtype=self.dtype,
                               device=self.device, params=params, options=dict(self.options or {}))
        backend.load()
        return backend


def parse_backend_args(pairs: list[str]) -> dict[str, str]:
    """['k=v', ...] -> {'k': 'v'}; a pair without '=' is an error."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HarnessError(f"--backend-arg expects KEY=VALUE, got '{pair}'")
        out[key] = value
    return out


# -- statistics ----------------------------------------------------------------------------------
def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean, sqrt(var / (n - 1)) with the population variance:
    the estimate llama.cpp prints for perplexity and multiple-choice scores."""
    n = len(values)
    if n == 0:
        raise HarnessError("nothing was scored (empty input?)")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, float("nan")
    var = max(math.fsum(v * v for v in values) / n - mean * mean, 0.0)
    return mean, math.sqrt(var / (n - 1))


# -- files ---------------------------------------------------------------------------------------
def parse_json_or_lines(text: str, p: Path):
    """A JSON document, or JSON lines (one object per line)."""
    try:
        return parse_json(text, str(p))
    except HarnessError:
        try:
            return [parse_json(line, f"line {n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        except HarnessError as e:
            raise HarnessError(f"{p} is neither JSON nor JSON lines ({e})") from None


def check_output_dir(path: str | os.PathLike) -> Path:
    """Refuse (before any work) an output folder that already holds a results.json."""
    out = Path(path)
    if (out / RESULTS_FILE).exists():
        raise HarnessError(f"{out / RESULTS_FILE} already exists; results are never overwritten "
                           "(choose a new --output-dir)")
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--output-dir {out} exists and is not a folder")
    return out


def write_task_results(output_dir: str | os.PathLike, *, task: str, backend: Backend, dataset: dict[str, Any],
                       metrics: dict[str, Any], settings: dict[str, Any], started: str,
                       samples: list[dict[str, Any]] | None = None) -> Path:
    """results.json of one task run (atomic; never replaces an existing file)."""
    out = check_output_dir(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = backend.info()
    results = {
        "kind": "task",
        "task": task,
        "backend": info,
        "model": info.get("model_path"),
        "dataset": dataset,
        "settings": settings,
        "metrics": metrics,
        "environment": environment(),
        "started": started,
        "finished": iso_utc(),
        "samples": samples or [],
    }
    path = out / RESULTS_FILE
    write_new_json(path, results)
    log.info("results written to %s", path)
    return path
