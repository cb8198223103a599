"""The interface every model backend implements.

Lifecycle: construct (cheap, validates options) -> load() -> generate()/stream() many times
-> close(). Prompts and outputs are lists of token ids; outputs hold generated ids only (no
prompt, no padding), cut after the first end-of-sequence token unless EOS is ignored.

- generate(prompts): a batch, used by the Offline SUT. Outputs are in prompt order.
- stream(prompt): one request, yielding lists of new ids as they exist, used by the Server SUT.
  The Server SUT calls stream() from several threads at once (--num-workers); a backend that
  is not thread-safe serialises internally, a batching backend merges concurrent calls.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

from common.errors import HarnessError


@dataclass(frozen=True)
class GenerationParams:
    """Greedy decoding limits, as in the MLPerf reference (max 1024, min 1 new tokens)."""
    max_new_tokens: int = 1024
    min_new_tokens: int = 1
    # Force every output to max_new_tokens (synthetic performance runs): EOS neither stops nor trims.
    ignore_eos: bool = False

    def __post_init__(self):
        if self.max_new_tokens < 1 or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise HarnessError(f"need 1 <= max_new_tokens and 0 <= min_new_tokens <= max_new_tokens, "
                               f"got max={self.max_new_tokens} min={self.min_new_tokens}")


def trim_at_eos(ids: list[int], eos_ids: set[int] | frozenset[int], params: GenerationParams) -> list[int]:
    """Cut after the first EOS (kept once, never repeated) and at max_new_tokens."""
    ids = list(ids[: params.max_new_tokens])
    if params.ignore_eos:
        return ids
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[: i + 1]
    return ids


def parse_options(defaults: dict[str, Any], given: dict[str, Any], backend: str) -> dict[str, Any]:
    """Merge `key=value` strings (or lists, for list options) into a backend's typed defaults;
    unknown keys are an error."""
    out = dict(defaults)
    for key, raw in given.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise HarnessError(f"unknown option '{key}' for backend '{backend}' (known: {known})")
        default = defaults[key]
        if isinstance(default, list) and isinstance(raw, list):  # e.g. repeated --api-server
            out[key] = list(raw)
            continue
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                out[key] = raw.lower() in ("1", "true", "yes")
            elif isinstance(default, (int, float)):
                out[key] = type(default)(raw)
                if not math.isfinite(out[key]):  # nan / inf: no option means either
                    raise ValueError(raw)
            elif isinstance(default, list):
                out[key] = [v for v in raw.split(",") if v]
            else:
                out[key] = raw if raw != "" else default
        except ValueError:
            kind = "a finite float" if type(default) is float else type(default).__name__
            raise HarnessError(f"option '{key}' of backend '{backend}' expects {kind}, got '{raw}'") from None
    return out


class Backend(abc.ABC):
    """Base class: subclasses set `name`, `defaults` (typed option defaults) and implement load/generate."""

    name: ClassVar[str] = "base"
    defaults: ClassVar[dict[str, Any]] = {}
    # What main.py uses when --batch-size / --num-workers are not given.
    default_batch_size: ClassVar[int] = 1
    default_num_workers: ClassVar[int] = 1
    # Server: how many queued queries one worker may serve together (harness/core.py): the first
    # chunk of each stream, then each stream to its end. 1 serves them one by one. More suits a
    # backend whose stream() hardly ever waits: a stream that waits, or hangs, holds up the
    # others in its worker.
    streams_per_worker: ClassVar[int] = 1
    # Whether the SUT's threads may be pinned to one CPU (main.py --pin-cpu): only for a backend
    # whose work runs in another process or in threads it started before the run, since threads
    # started from a pinned worker (llama.cpp's, a generation thread) would be confined with it.
    pinnable: ClassVar[bool] = False

    def __init__(self, model_path: str | None = None, dtype: str = "float32", device: str = "cpu",
                 params: GenerationParams = GenerationParams(), options: dict[str, str] | None = None):
        self.model_path = model_path
        self.dtype = dtype
        self.device = device
        self.params = params
        self.options = parse_options(self.defaults, options or {}, self.name)
        self.eos_token_ids: frozenset[int] = frozenset()

    @abc.abstractmethod
    def load(self) -> None:
        """Load weights / connect; raise HarnessError for anything the user can fix."""

    @abc.abstractmethod
    def generate(self, prompts: list[list[int]]) -> list[list[int]]:
        """Generated ids for each prompt, in order (trimmed with trim_at_eos)."""

    def stream(self, prompt: list[int]) -> Iterator[list[int]]:
        """Yield new ids as they are produced. Default: one chunk from generate()."""
        yield self.generate([prompt])[0]

    def score(self, ids: list[int]) -> list[float]:
        """Natural-log probability of each ids[i] given ids[:i] (entry 0 is 0.0), one forward
        pass over the whole list; used by the perplexity and multiple-choice tasks."""
        raise HarnessError(f"backend '{self.name}' cannot score tokens (perplexity/multiple-choice tasks)")

    def close(self) -> None:
        """Free the model / connections. Safe to call twice."""

    def running_dtype(self) -> str:
        """The number format the model actually runs in (results show this, not the --dtype asked
        for): a GGUF's quantization, "server" when a server chooses, the torch dtype otherwise."""
        return self.dtype

    def running_device(self) -> str:
        """Where the model actually runs (results show this, not the --device asked for)."""
        return self.device

    def native_engine(self) -> tuple[str, str]:
        """(what runs this backend's native code, what to do if it crashes), for the one line that
        main.py prints when the process dies by a signal (harness/supervisor.py)."""
        return f"the {self.name} backend", "report it with the native traceback"

    def info(self) -> dict[str, Any]:
        """What describes this backend in results: name, model, dtype, device, options."""
        return {"backend": self.name, "model_path": self.model_path, "dtype": self.running_dtype(),
                "device": self.running_device(), "options": self.options,
                "max_new_tokens": self.params.max_new_tokens, "min_new_tokens": self.params.min_new_tokens,
                "ignore_eos": self.params.ignore_eos}

    def trim(self, ids: list[int]) -> list[int]:
        return trim_at_eos(ids, self.eos_token_ids, self.params)
