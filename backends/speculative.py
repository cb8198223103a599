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
    if options["draft_model"] and not kind:
        kind = "draft"   # draft_model=PATH alone asks for draft-model speculation
    if kind == "draft" and not options["draft_model"]:
        raise HarnessError(f"{backend}: speculative=draft needs a draft model: --backend-arg draft_model=PATH")
    if kind == "ngram" and options["draft_model"]:
        raise HarnessError(f"{backend}: speculative=ngram takes no draft_model (drafts come from the prompt)")
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
