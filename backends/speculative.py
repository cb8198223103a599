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
- `draft`: a smaller or lower-precision model with the same vocabulary drafts (option draft_model;
  llamacpp: a second GGUF in its own llama.cpp context, LlamaCppDraft; hf: transformers' assisted
  generation, HFAssist).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from common.errors import HarnessError
from common.native import native_output_silenced

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
    draft_model: str = ""       # the draft model's file name (draft_model option), "" for ngram

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
                "draft_s": round(self.draft_s, 4), "verify_s": round(self.verify_s, 4),
                **({"draft_model": self.draft_model} if self.draft_model else {})}


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


# ---- llama.cpp drafters -------------------------------------------------------------------------

class DraftRequest(NamedTuple):
    seq_id: int
    context: list[int]     # prompt + generated ids; the last one is not in the target's cache yet
    k: int                 # ids to draft (1..num_draft_tokens)
    n_generated: int


def llamacpp_drafter(target) -> "Drafter | None":
    """The drafter of a loaded LlamaCppBackend for its speculative kind (None when off)."""
    if target.spec_kind == "draft":
        return LlamaCppDraft(target)
    return NgramDrafter(target) if target.spec_kind == "ngram" else None


class Drafter:
    """Drafts for the llamacpp engine thread: drafts() once per decode step for every generating
    sequence; release() when a sequence's slot is freed; close() at the end."""

    def __init__(self, target):
        self.stats: SpecStats = target.spec
        self.params, self.options = target.params, target.options

    def drafts(self, seqs: list[tuple[int, list[int], list[int]]]) -> dict[int, list[int]]:
        """(seq_id, prompt, generated) -> drafted ids per seq_id, never past max_new_tokens (the
        target's cache holds every drafted id until verified)."""
        t0, wanted = time.perf_counter(), []
        for seq_id, prompt, generated in seqs:
            k = min(self.options["num_draft_tokens"], self.params.max_new_tokens - len(generated) - 1)
            if k > 0:
                wanted.append(DraftRequest(seq_id, prompt + generated, k, len(generated)))
        out = self.propose(wanted) if wanted else {}
        self.stats.draft_s += time.perf_counter() - t0
        return out

    def propose(self, wanted: list[DraftRequest]) -> dict[int, list[int]]:
        raise NotImplementedError

    def release(self, seq_id: int) -> None:
        pass

    def close(self) -> None:
        pass


class NgramDrafter(Drafter):
    def propose(self, wanted: list[DraftRequest]) -> dict[int, list[int]]:
        return {r.seq_id: ngram_draft(r.context, r.k, self.options["ngram_max"]) for r in wanted}


class LlamaCppDraft(Drafter):
    """A second GGUF model (the draft_model option; same vocabulary as the target, checked id by
    id) drafting greedily in a llama.cpp context of its own, with the target's n_ctx, n_parallel,
    n_batch and threads. Each step it first feeds the ids of each sequence its cache lacks (the
    prompt at the first step, later the target's kept ids), all sequences in one decode, then
    drafts the remaining ids one decode per id, all sequences together. Its cache keeps the drafts
    the target accepted and drops the rest, so a step feeds it one or two ids per sequence."""

    def __init__(self, target):
        import llama_cpp

        from backends.llamacpp import open_context, open_model

        super().__init__(target)
        self._ll, o, path = llama_cpp, target.options, target.options["draft_model"]
        self._model = self._ctx = self._batch = None
        try:
            self._model = open_model(path, o)
            vocab = llama_cpp.llama_model_get_vocab(self._model)
            self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
            check_same_vocab(target.n_vocab, self.n_vocab, path, target.name)
            text = llama_cpp.llama_vocab_get_text
            differ = next((i for i in range(self.n_vocab) if text(vocab, i) != text(target._vocab, i)), None)
            if differ is not None:
                raise HarnessError(f"{target.name}: draft model {path} has another vocabulary than the target "
                                   f"(token {differ} is {text(vocab, differ)!r} there, "
                                   f"{text(target._vocab, differ)!r} in the target); speculative decoding "
                                   "needs the same vocabulary")
            self._ctx = open_context(self._model, o, target.n_threads)
        except BaseException as e:
            self.close()
            if isinstance(e, HarnessError) and "draft model" not in str(e):
                raise HarnessError(f"{target.name}: draft model: {e}") from None
            raise
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(o["n_batch"], 0, 1)
        self._eog, self._eos = target._eog, target.eos_token_ids
        self.stats.draft_model = os.path.basename(path)
        # Per sequence: the ids in the draft's cache, and how many of them are known to equal the
        # context (everything before the previous step's drafts).
        self._fed: dict[int, list[int]] = {}
        self._synced: dict[int, int] = {}

    def release(self, seq_id: int) -> None:
        if self._fed.pop(seq_id, None) is not None:
            self._ll.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        self._synced.pop(seq_id, None)

    def close(self) -> None:
        ll = self._ll
        if self._batch is not None:
            ll.llama_batch_free(self._batch)
        with native_output_silenced(not self.options["verbose"]):
            if self._ctx is not None:
                ll.llama_free(self._ctx)
            if self._model is not None:
                ll.llama_model_free(self._model)
        self._batch = self._ctx = self._model = None

    def propose(self, wanted: list[DraftRequest]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        # Catch up: drop the rejected drafts from the cache and feed what the cache lacks; the
        # last id always goes in again if cached already, since its logits give the first draft.
        feeds: list[tuple[DraftRequest, list[int]]] = []
        for r in wanted:
            fed = self._fed.setdefault(r.seq_id, [])
            same = self._synced.get(r.seq_id, 0)
            while same < min(len(fed), len(r.context)) and fed[same] == r.context[same]:
                same += 1
            same = min(same, len(r.context) - 1)
            if same < len(fed):
                self._ll.llama_memory_seq_rm(self._mem, r.seq_id, same, -1)
                del fed[same:]
            feeds.append((r, r.context[same:]))
            self._synced[r.seq_id] = len(r.context)
        self._decode_rows(feeds, out)
        # Then one id per decode for every sequence still drafting.
        for _ in range(1, max(r.k for r in wanted)):
            # A drafted end id would end generation if accepted: nothing to draft after it.
            going = [(r, d[-1:]) for r in wanted if len(d := out[r.seq_id]) < r.k
                     and not (d[-1] in self._eos and not self._eog_banned(r, len(d) - 1))]
            if not going:
                break
            self._decode_rows(going, out)
        return out

    def _eog_banned(self, r: DraftRequest, j: int) -> bool:
        """Whether the target bans end ids at the j-th drafted position (as in its own pick)."""
        return self.params.ignore_eos or r.n_generated + j < self.params.min_new_tokens

    def _decode_rows(self, feeds: list[tuple[DraftRequest, list[int]]], out: dict[int, list[int]]) -> None:
        """Feed each sequence its ids (in batches of n_batch) and append the draft's greedy id after
        the last one to out[seq_id]."""
        ll, batch, n_batch = self._ll, self._batch, self.options["n_batch"]
        last: list[tuple[DraftRequest, int]] = []   # (request, batch row of its last id)
        n = 0

        def flush() -> None:
            nonlocal n
            batch.n_tokens = n
            rc = ll.llama_decode(self._ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode of the draft model returned {rc} ({n} tokens)")
            for r, row in last:
                logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(self._ctx, row), shape=(self.n_vocab,))
                if self._eog_banned(r, len(out.get(r.seq_id, ()))):
                    logits[self._eog] = -np.inf   # llama.cpp's buffer, rewritten by the next decode
                out.setdefault(r.seq_id, []).append(int(np.argmax(logits)))
            last.clear()
            n = 0

        for r, ids in feeds:
            fed = self._fed[r.seq_id]
            for i, token in enumerate(ids):
                if n == n_batch:
                    flush()
                batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, len(fed), 1
                batch.seq_id[n][0], batch.logits[n] = r.seq_id, i == len(ids) - 1
                fed.append(token)
                if i == len(ids) - 1:
                    last.append((r, n))
                n += 1
        if n:
            flush()
