"""Speculative decoding shared by backends: options, prompt-lookup drafts, acceptance statistics.

Draft-and-verify stays lossless under greedy decoding: the target scores the last accepted id
followed by K drafted ids in one forward pass; its argmax at each position is the id it would
have produced one step at a time, so drafts are kept up to the first one that differs from that
argmax, and the target's own id at that position is kept too. Each step therefore yields between
1 and K+1 ids, all of them the target's.

Kinds (`--backend-arg speculative=...`):
- `ngram`: prompt-lookup decoding. The last n ids (n = ngram_max down to 1) are looked up earlier
  in the prompt and the text so far; the ids that followed the latest match are the drafts.
  No second model; strong where the answer copies from the prompt (summaries, extraction).
- `draft`: a smaller or lower-precision model with the same vocabulary drafts (option draft_model).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import HarnessError

KINDS = ("ngram", "draft")

# The options every speculative backend takes, merged into its `defaults`.
OPTIONS: dict[str, Any] = {
    "speculative": "",         # "" (off) | ngram | draft
    "num_draft_tokens": 4,     # K: most drafted ids verified per step
    "ngram_max": 3,            # ngram: longest suffix looked up (falls back to shorter ones)
    "draft_model": "",         # draft: path of the draft model (same vocabulary as the target)
}


def check_options(options: dict[str, Any], backend: str) -> str | None:
    """The speculative kind ("" when off) after checking the options; HarnessError on bad ones."""
    kind = options["speculative"]
    if kind and kind not in KINDS:
        raise HarnessError(f"{backend}: unknown speculative kind '{kind}' (choose from: {', '.join(KINDS)})")
    # hf: draft_quant_config alone drafts with the target's own weights, quantized.
    has_draft = bool(options["draft_model"] or options.get("draft_quant_config"))
    if has_draft and not kind:
        kind = "draft"   # draft_model=PATH alone asks for draft-model speculation
    if kind == "draft" and not has_draft:
        raise HarnessError(f"{backend}: speculative=draft needs a draft model: --backend-arg draft_model=PATH")
    if kind == "ngram" and has_draft:
        raise HarnessError(f"{backend}: speculative=ngram takes no draft model (drafts come from the prompt)")
    if kind and options["num_draft_tokens"] < 1:
        raise HarnessError(f"{backend}: num_draft_tokens must be >= 1, got {options['num_draft_tokens']}")
    if kind == "ngram" and options["ngram_max"] < 1:
        raise HarnessError(f"{backend}: ngram_max must be >= 1, got {options['ngram_max']}")
    return kind or None


def check_same_vocab(target_n_vocab: int, draft_n_vocab: int, draft_path: str, backend: str) -> None:
    if target_n_vocab != draft_n_vocab:
        raise HarnessError(f"{backend}: draft model {draft_path} has a vocabulary of {draft_n_vocab} ids, the "
                           f"target {target_n_vocab}; speculative decoding needs the same vocabulary")


def ngram_draft(context: list[int] | np.ndarray, k: int, ngram_max: int) -> list[int]:
    """Up to k ids that followed the latest earlier occurrence of the context's last n ids,
    trying n = ngram_max first (longer matches predict better) down to 1."""
    ctx = np.asarray(context)
    n_ctx = len(ctx)
    for n in range(min(ngram_max, n_ctx - 1), 0, -1):
        suffix = ctx[n_ctx - n:]
        # Windows starting at 0 .. n_ctx-n-1 (the suffix itself excluded) whose n ids equal the suffix.
        windows = np.lib.stride_tricks.sliding_window_view(ctx[:n_ctx - 1], n)
        hits = np.flatnonzero((windows == suffix).all(axis=1))
        if len(hits):
            start = int(hits[-1]) + n
            return ctx[start:start + k].tolist()
    return []


def accept(draft: list[int], pick) -> tuple[list[int], int]:
    """Verify `draft` against the target. pick(i) gives (the target's greedy id at position i,
    after the last accepted id and draft[:i]; whether generation ends with it: EOS, max tokens).
    Returns (ids kept, drafted ids accepted)."""
    kept: list[int] = []
    for i in range(len(draft) + 1):
        token, last = pick(i)
        kept.append(token)
        if last or i == len(draft) or token != draft[i]:
            break
    return kept, sum(1 for a, b in zip(kept, draft) if a == b)


@dataclass
class SpecStats:
    """Acceptance and time of one backend's speculative steps (info()["speculative"])."""
    kind: str
    num_draft_tokens: int
    steps: int = 0              # verification steps of one sequence that carried drafts
    steps_without_draft: int = 0  # decode steps where no draft was found (plain one-token steps)
    drafted: int = 0
    accepted: int = 0
    draft_s: float = 0.0        # finding / producing drafts
    verify_s: float = 0.0       # target forward passes that verified drafts

    def add(self, drafted: int, accepted: int) -> None:
        if drafted:
            self.steps += 1
            self.drafted += drafted
            self.accepted += accepted
        else:
            self.steps_without_draft += 1

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_draft_tokens": self.num_draft_tokens,
                "acceptance_rate": round(self.accepted / self.drafted, 4) if self.drafted else None,
                "mean_accepted_per_step": round(self.accepted / self.steps, 4) if self.steps else None,
                "steps": self.steps, "steps_without_draft": self.steps_without_draft,
                "drafted": self.drafted, "accepted": self.accepted,
                "draft_s": round(self.draft_s, 4), "verify_s": round(self.verify_s, 4)}


class HFAssist:
    """transformers' assisted generation for the hf backend (one prompt per generate() call, the
    only batch size transformers supports for it), with acceptance counted from the target's
    forward passes: the first holds the prompt plus drafts, each later one the last accepted id
    plus drafts, and every pass yields its accepted drafts plus one id of its own."""

    def __init__(self, kind: str, options: dict[str, Any], target, draft=None):
        self.kind, self.options, self.draft = kind, options, draft
        self.stats = SpecStats(kind, options["num_draft_tokens"])
        self._fresh, self._t0, self._prompt_len, self._steps, self._drafted = True, 0.0, 0, 0, 0
        self._forward_s = 0.0
        if draft is not None:   # transformers reads the assistant's settings from its own generation_config
            for key, value in self.generation_config().items():
                setattr(draft.generation_config, key, value)
        target.register_forward_pre_hook(self._before, with_kwargs=True)
        target.register_forward_hook(self._after)

    def generation_config(self) -> dict[str, Any]:
        k = self.options["num_draft_tokens"]
        if self.kind == "ngram":
            return {"prompt_lookup_num_tokens": k, "max_matching_ngram_size": self.options["ngram_max"]}
        # A fixed K: the default schedule changes K with acceptance, and the confidence threshold
        # stops drafting early, both of which would make runs hard to compare.
        return {"num_assistant_tokens": k, "num_assistant_tokens_schedule": "constant",
                "assistant_confidence_threshold": 0.0}

    def generate_kwargs(self) -> dict[str, Any]:
        return {"assistant_model": self.draft} if self.draft is not None else {}

    def begin(self, prompt_len: int) -> None:
        self._fresh, self._prompt_len, self._steps, self._drafted = True, prompt_len, 0, 0
        self._forward_s, self._wall = 0.0, time.perf_counter()

    def _before(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        n_in = ids.shape[1] if ids is not None else 0
        self._drafted += n_in - (self._prompt_len if self._fresh else 1)
        self._fresh = False
        self._steps += 1
        self._t0 = time.perf_counter()

    def _after(self, module, args, output) -> None:
        self._forward_s += time.perf_counter() - self._t0

    def end(self, n_generated: int) -> None:
        """After one generate(): n_generated is its raw output length (before EOS trimming)."""
        s = self.stats
        accepted = max(n_generated - self._steps, 0)
        if self._drafted:
            s.steps += self._steps
            s.drafted += self._drafted
            s.accepted += min(accepted, self._drafted)
        else:
            s.steps_without_draft += self._steps
        s.verify_s += self._forward_s
        # Outside the target's passes: the draft model (or the lookup) and generate()'s own loop.
        s.draft_s += time.perf_counter() - self._wall - self._forward_s
