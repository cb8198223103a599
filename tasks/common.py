"""What the tasks share: text <-> token ids, opening a backend, statistics, results.json.

Tokenizers: a task turns text into the ids that Backend.score()/generate() take. For a GGUF file
the ids come from llama.cpp's own vocabulary (llama-cpp-python, vocabulary only: no weights are
loaded), so that the numbers match llama.cpp's `llama-perplexity` tool token for token; for a
checkpoint folder they come from its Hugging Face tokenizer (harness/tokenizer.py).
"""
from __future__ import annotations

import ctypes
import datetime as dt
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from backends import GenerationParams, make_backend
from backends.base import Backend
from harness.errors import HarnessError
from harness.models import resolve_model_path
from harness.results import RESULTS_FILE, _clean, _write_new, environment

log = logging.getLogger(__name__)


# -- tokenizers ----------------------------------------------------------------------------------
class TaskTokenizer:
    """encode(text, bos) -> ids and decode(ids) -> text; `bos_id` is None when the model's
    vocabulary does not ask for a BOS token at the start of a sequence."""

    bos_id: int | None = None

    def encode(self, text: str, bos: bool = True) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError


class LlamaVocabTokenizer(TaskTokenizer):
    """llama.cpp's tokenizer of a GGUF file (the one `llama-perplexity` uses); loads the
    vocabulary only, no weights and no context."""

    def __init__(self, path: str):
        try:
            import llama_cpp
        except ImportError as e:
            raise HarnessError("tokenizing for a .gguf model needs llama-cpp-python: "
                               "pip install -e '.[llamacpp]'") from e
        self._lib = llama_cpp
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._model = llama_cpp.llama_model_load_from_file(path.encode(), params)
        if not self._model:
            raise HarnessError(f"llama.cpp cannot read the vocabulary of {path} (not a GGUF model?)")
        self._vocab = vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.bos_id = llama_cpp.llama_vocab_bos(vocab) if llama_cpp.llama_vocab_get_add_bos(vocab) else None
        self._special = {t for t in range(llama_cpp.llama_vocab_n_tokens(vocab))
                         if llama_cpp.llama_vocab_is_control(vocab, t) or llama_cpp.llama_vocab_is_eog(vocab, t)}

    def encode(self, text: str, bos: bool = True) -> list[int]:
        raw = text.encode("utf-8")
        size = len(raw) + 2
        while True:  # a negative count means "the buffer needs this many"
            buf = (self._lib.llama_token * size)()
            n = self._lib.llama_tokenize(self._vocab, raw, len(raw), buf, size, False, False)
            if n >= 0:
                break
            size = -n
        return ([self.bos_id] if bos and self.bos_id is not None else []) + list(buf[:n])

    def decode(self, ids: Sequence[int]) -> str:
        out, buf = bytearray(), ctypes.create_string_buffer(256)
        for t in ids:
            if int(t) not in self._special:
                n = self._lib.llama_token_to_piece(self._vocab, int(t), buf, len(buf), 0, False)
                out += buf.raw[:max(n, 0)]
        return out.decode("utf-8", errors="replace")

    def __del__(self):
        if getattr(self, "_model", None):
            self._lib.llama_model_free(self._model)
            self._model = None


class HFTaskTokenizer(TaskTokenizer):
    """The Hugging Face tokenizer of a checkpoint folder."""

    def __init__(self, path: str):
        from harness.tokenizer import load_tokenizer

        self._tok = load_tokenizer(path)
        bos = self._tok.bos_token_id
        # Ask the tokenizer itself whether it starts sequences with BOS (Llama/Gemma yes, GPT-2 no).
        self.bos_id = bos if bos is not None and self._tok("a").input_ids[:1] == [bos] else None

    def encode(self, text: str, bos: bool = True) -> list[int]:
        ids = self._tok(text, add_special_tokens=False).input_ids
        return ([self.bos_id] if bos and self.bos_id is not None else []) + list(ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)


def load_task_tokenizer(model_path: str | None) -> TaskTokenizer:
    """llama.cpp's vocabulary for a .gguf file, the HF tokenizer for a checkpoint folder."""
    path = resolve_model_path(model_path)
    if os.path.isfile(path) and path.endswith(".gguf"):
        return LlamaVocabTokenizer(path)
    return HFTaskTokenizer(path)


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
def read_text(path: str | os.PathLike, what: str) -> str:
    """A UTF-8 text file; a clear error when it is missing, a folder, binary or empty."""
    p = Path(path)
    if not p.is_file():
        raise HarnessError(f"{what} not found: {p}" if not p.exists() else f"{what} is not a file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise HarnessError(f"{what} {p} is not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise HarnessError(f"{what} {p} is empty")
    return text


def check_output_dir(path: str | os.PathLike) -> Path:
    """Refuse (before any work) an output folder that already holds a results.json."""
    out = Path(path)
    if (out / RESULTS_FILE).exists():
        raise HarnessError(f"{out / RESULTS_FILE} already exists; results are never overwritten "
                           "(choose a new --output-dir)")
    if out.exists() and not out.is_dir():
        raise HarnessError(f"--output-dir {out} exists and is not a folder")
    return out


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


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
        "finished": now_iso(),
        "samples": samples or [],
    }
    path = out / RESULTS_FILE
    _write_new(path, json.dumps(_clean(results), indent=1, default=str, allow_nan=False) + "\n")
    log.info("results written to %s", path)
    return path
