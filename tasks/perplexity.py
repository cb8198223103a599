"""Perplexity of a text file, through Backend.score().

Two ways to cut a long text into windows of `n_ctx` tokens:

- "chunks" (default) is llama.cpp's `llama-perplexity` method: non-overlapping windows of n_ctx
  tokens (a tail shorter than n_ctx is dropped), the first token of each replaced by BOS when the
  vocabulary uses one, and only the second half of each window scored: tokens n_ctx/2+1 .. n_ctx-1,
  so every scored token has at least n_ctx/2 tokens of context. The text must give 2*n_ctx tokens,
  as llama.cpp requires.
- "sliding" is the Hugging Face perplexity guide: windows of n_ctx starting every `stride` tokens;
  each token after the very first is scored exactly once, in the first window that contains it,
  with at least n_ctx - stride tokens of context. Unlike the guide (GPT-2 has no BOS), each window
  starts with BOS in place of its first token, as llama.cpp does, because models trained with BOS
  score much worse without it. This is not llama.cpp's `--ppl-stride` mode, which scores only the
  last `stride` tokens of every window and so never the start of the text.

Perplexity = exp(mean negative log-likelihood over scored tokens). Its standard error is
llama.cpp's: the standard error of the mean NLL, sqrt(var / (n - 1)), times the perplexity.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

from tqdm import tqdm

from backends.base import Backend
from common.errors import HarnessError
from tasks.common import mean_and_stderr

log = logging.getLogger(__name__)

METHODS = ("chunks", "sliding")


@dataclass(frozen=True)
class Window:
    """ids[start:end] go to the model; log-probs at window positions >= first_scored count."""
    start: int
    end: int
    first_scored: int


@dataclass
class PerplexityResult:
    perplexity: float
    perplexity_stderr: float
    mean_nll: float
    mean_nll_stderr: float
    n_scored_tokens: int
    n_windows: int
    n_text_tokens: int

    def as_dict(self) -> dict:
        return asdict(self)


def plan_windows(n_tokens: int, n_ctx: int, method: str = "chunks", stride: int | None = None) -> list[Window]:
    """The windows of one method over a text of n_tokens ids (see the module docstring)."""
    if method not in METHODS:
        raise HarnessError(f"unknown perplexity method '{method}' (choose from: {', '.join(METHODS)})")
    if n_ctx < 4:
        raise HarnessError(f"context size must be at least 4 tokens, got {n_ctx}")
    if method == "chunks":
        if n_tokens < 2 * n_ctx:
            raise HarnessError(f"the text gives {n_tokens} tokens; the chunks method needs at least "
                               f"2 * ctx-size = {2 * n_ctx} (use a longer text or a smaller --ctx-size)")
        return [Window(i * n_ctx, (i + 1) * n_ctx, n_ctx // 2 + 1) for i in range(n_tokens // n_ctx)]
    stride = stride or n_ctx // 2
    if not 1 <= stride < n_ctx:  # stride == n_ctx would leave each window's first token unscored
        raise HarnessError(f"stride must be between 1 and ctx-size - 1 ({n_ctx - 1}), got {stride}")
    if n_tokens < 2:
        raise HarnessError(f"the text gives {n_tokens} token(s); perplexity needs at least 2")
    windows, scored_to = [], 1   # the very first token has nothing to be predicted from
    for begin in range(0, n_tokens, stride):
        end = min(begin + n_ctx, n_tokens)
        windows.append(Window(begin, end, max(scored_to - begin, 1)))
        scored_to = end
        if end == n_tokens:
            break
    return windows


def perplexity(backend: Backend, ids: list[int], n_ctx: int, method: str = "chunks", stride: int | None = None,
               bos_id: int | None = None, progress: bool = True) -> PerplexityResult:
    """Perplexity of the token ids `ids` (a tokenized text, BOS first when the model uses one)."""
    windows = plan_windows(len(ids), n_ctx, method, stride)
    nll: list[float] = []
    for w in tqdm(windows, desc="perplexity", unit="window", disable=not progress or len(windows) < 2):
        window = list(ids[w.start:w.end])
        if bos_id is not None:
            window[0] = bos_id
        logprobs = backend.score(window)
        if len(logprobs) != len(window):
            raise RuntimeError(f"backend '{backend.name}' returned {len(logprobs)} log-probs for "
                               f"{len(window)} ids")
        nll.extend(-lp for lp in logprobs[w.first_scored:])
    mean, se = mean_and_stderr(nll)
    ppl = math.exp(mean)
    log.info("perplexity %.4f +/- %.4f over %d tokens in %d windows", ppl, ppl * se, len(nll), len(windows))
    return PerplexityResult(perplexity=ppl, perplexity_stderr=ppl * se, mean_nll=mean, mean_nll_stderr=se,
                            n_scored_tokens=len(nll), n_windows=len(windows), n_text_tokens=len(ids))
