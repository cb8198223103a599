"""Fast, exact tokenizing for processorca.py: `tokenize(texts, tokenizer)` gives, for each text,
exactly `tokenizer(text)["input_ids"]`, but many times faster than one call per text.

- A Llama-2-style SentencePiece BPE tokenizer goes through WordwiseEncoder: each distinct word is
  encoded once and its ids reused (exact: texts are cut only where no BPE merge can cross; the
  conditions are checked on the tokenizer when it is loaded).
- Another Hugging Face fast tokenizer uses its multi-threaded Rust batch encoder.
- Anything else (the llama.cpp vocabulary of a GGUF file, a slow tokenizer) encodes chunks in
  worker processes.

load_tokenizer() also gives a Llama SentencePiece tokenizer the MLPerf reference's legacy spacing
(reference_llama_spacing), so processorca's ids equal the reference pickle's.
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
from contextlib import contextmanager
from functools import partial

import numpy as np
from tqdm import tqdm

log = logging.getLogger("processorca")

TOKENIZE_CHUNK = 32768  # rows per batched call: big enough to amortise, small enough for tqdm to move


def load_tokenizer(model_path: str | None):
    """inputs.tokenizer.load_tokenizer, with a Llama SentencePiece tokenizer given the reference's spacing
    (reference_llama_spacing). Every tokenizer processorca uses is loaded here."""
    from inputs.tokenizer import load_tokenizer as load

    return reference_llama_spacing(load(model_path))


def reference_llama_spacing(tokenizer):
    """A Llama SentencePiece tokenizer made to tokenize as the reference does: SentencePiece's legacy spacing.

    The reference loads Llama-2's tokenizer with use_fast=False under transformers 4.x: legacy
    SentencePiece, which cuts the text at special tokens (on the raw text) and encodes each piece
    between them on its own, spaces made "▁" and a "▁" put in front. Its inputs therefore start
    [1, 1, 518, ...]: the literal "<s>", the added BOS, then "▁[" (518); and a piece starting with a
    space starts "▁", "▁word". For a Llama folder, transformers 5 builds LlamaTokenizer from the
    vocabulary and merges alone (the normalizer in the folder's tokenizer.json is dropped) with a
    Metaspace pre-tokenizer: prepend_scheme "first" unless legacy=True is passed, which gives "["
    instead of "▁[" after "<s>"; and even "always" (legacy=True) puts no "▁" before a piece that starts
    with a space. So the backend gets LlamaConverter's legacy form back, whatever the folder's legacy
    flag says: normalizer Prepend("▁") then spaces to "▁", no pre-tokenizer (as in Llama-2's own
    tokenizer.json), and added tokens matched before normalization, as the slow tokenizer matches them.
    Only a LlamaTokenizer in exactly the form transformers builds (byte-fallback BPE over a vocabulary
    with "▁" and byte pieces, no normalizer, Metaspace that puts a "▁" in front) is changed; any other
    tokenizer (GGUF, other model types, a Llama tokenizer in another form) is returned as it is.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # GGUF or a slow Python tokenizer
        return tokenizer
    from tokenizers import AddedToken, normalizers
    from tokenizers.models import BPE
    from transformers import LlamaTokenizer

    if not isinstance(tokenizer, LlamaTokenizer):
        return tokenizer
    pre = _state(backend.pre_tokenizer) or {}
    if (not isinstance(backend.model, BPE) or not backend.model.byte_fallback or backend.normalizer is not None
            or pre.get("type") != "Metaspace" or pre.get("replacement") != "\u2581" or pre.get("split")
            or pre.get("prepend_scheme") not in ("first", "always")
            or backend.token_to_id("\u2581") is None or backend.token_to_id("<0x0A>") is None):
        return tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    backend.pre_tokenizer = None
    for token in backend.get_added_tokens_decoder().values():
        if token.normalized:  # re-adding the same content updates the token in place (same id)
            raw = AddedToken(token.content, single_word=token.single_word, lstrip=token.lstrip, rstrip=token.rstrip,
                             normalized=False, special=token.special)
            (backend.add_special_tokens if token.special else backend.add_tokens)([raw])
    tokenizer.legacy = True
    log.info("Llama SentencePiece tokenizer: legacy spacing, as the reference's (a \"\u2581\" before every text piece)")
    return tokenizer

@contextmanager
def _gc_paused():
    """Python's cyclic garbage collector off: it would walk every token list made so far, again and
    again, although lists of ints can hold no reference cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def tokenize(texts: list[str], tokenizer, add_special_tokens: bool = True, append: int | None = None,
             desc: str = "tokenizing", processes: int | None = None,
             chunk_size: int = TOKENIZE_CHUNK) -> list[list[int]]:
    """Token ids of each text, exactly as `tokenizer(text)["input_ids"]` row by row, but faster.

    A Llama-2-style fast tokenizer (WordwiseEncoder.for_tokenizer) encodes each distinct word once.
    Any other Hugging Face fast tokenizer encodes each chunk with its Rust batch encoder, which
    spreads the chunk over all cores (encode_batch_fast also skips character offsets, which
    nothing here needs). Any other tokenizer (the llama.cpp vocabulary of a GGUF file, a slow
    Python tokenizer) encodes one text per call, so chunks go to worker processes that each load
    the tokenizer from its path; `processes` (default: the number of cores) sets how many.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    processes = processes or os.cpu_count() or 1
    chunks = [texts[i:i + chunk_size] for i in range(0, len(texts), chunk_size)]
    out: list[list[int]] = []
    pool = None
    wordwise = _cached_wordwise_encoder(tokenizer)
    with tqdm(total=len(texts), desc=desc, unit="rows", disable=len(texts) < TOKENIZE_CHUNK) as bar, _gc_paused():
        if wordwise is not None:
            results = (wordwise.encode(c, add_special_tokens) for c in chunks)
        elif backend is not None:
            results = ([e.ids for e in backend.encode_batch_fast(c, add_special_tokens=add_special_tokens)]
                       for c in chunks)
        elif processes > 1 and len(chunks) > 1 and getattr(tokenizer, "name_or_path", None):
            pool = _worker_pool(processes, tokenizer.name_or_path)
            results = pool.imap(partial(_encode_in_worker, add_special_tokens=add_special_tokens), chunks)
        else:
            results = (tokenizer(c, add_special_tokens=add_special_tokens)["input_ids"] for c in chunks)
        try:
            for ids in results:
                if append is not None:
                    for row in ids:
                        row.append(append)
                out.extend(ids)
                bar.update(len(ids))
        finally:
            if pool is not None:
                pool.terminate()
    return out


# How a Llama / SentencePiece BPE fast tokenizer turns spaces into "▁" and puts a "▁" before each text
# piece, as (normalizer, pre-tokenizer) settings: the tokenizer.json of LlamaConverter (legacy), and
# what transformers 5 builds for a Llama folder (Metaspace without splitting; "always" for legacy=True).
LLAMA_SPACE_SETTINGS = [
    ({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                          {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
     None),
    *[(None, {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": False})
      for scheme in ("always", "first")],
]
_PIECE_CROSSES_WORDS = re.compile("[^\u2581]\u2581")  # a vocabulary piece such as "a▁b" or "a▁"
_SPACE = ord(" ")


class WordwiseEncoder:
    """Token ids of many texts, equal to the Rust encoder's, with each distinct word encoded once.

    For a Llama-2-style fast tokenizer (see `for_tokenizer`): the Rust BPE runs over each whole
    text as one "word" (nothing splits it), so nothing is cached and its merge loop costs far more
    than the rest. A tokenizers Split pre-tokenizer would restore caching, but its per-piece
    bookkeeping costs more than the merges it saves (measured: slower than no split). Here texts
    are cut into words at spaces with numpy and pyarrow, every distinct word is encoded once by
    the tokenizer itself and kept, and each text's ids are its words' ids in order.

    Why that is exact: cut T = L + " " + R at a space that is neither the first nor the last
    character of T, whose neighbours are neither a space nor "▁", that does not follow the end of
    an added token (such as "<s>") and does not come before the start of one. Added tokens contain
    neither a space nor "▁", so they are found in L and R exactly where they are found in T (before
    and after normalization), and the text pieces between them are the same, except the one holding
    the space: X + " " + Y, X the end of L and Y the start of R, neither empty. A piece has its
    spaces turned into "▁" and gets a "▁" in front (legacy normalizer: always; Metaspace "always":
    unless it starts with "▁"; "first": only at the start of the text). X has the same start in T
    and in L, so in T the piece becomes P + "▁Y'", where P is what X becomes in L and Y' is Y with
    its spaces made "▁"; Y starts R and starts with neither a space nor "▁", so in R it becomes
    "▁Y'". P ends with X's last character, which is not "▁". BPE merges only two adjacent symbols
    whose concatenation is a vocabulary piece, and no piece has a character other than "▁" followed
    by "▁" (checked on the vocabulary), so no merge ever joins the last symbol of P with the "▁"
    after it. Merges are applied lowest rank first, but a merge on one side never changes which
    merges the other side can make, so each side ends exactly as it would alone. Byte-fallback
    tokens ("<0xE2>") and <unk> are vocabulary pieces too, so the check covers them, and "▁" is in
    the vocabulary, so it never becomes an <unk> that could fuse with a neighbour. Hence
    encode(T) = encode(L) + encode(R) without special tokens, and by induction a text's ids are its
    words' ids in order, plus what the post-processor puts around them (Llama-2: BOS first).
    """

    MAX_WORDS = 2_000_000  # memory bound of the word cache: it is emptied when it holds more

    def __init__(self, backend, added: list[str], prefix: list[int], suffix: list[int]):
        self.backend = backend
        self._added = [a.encode() for a in added]
        self._affixes = (prefix, suffix)
        # One int object per id, shared by every list: the gather below then touches 32k objects that
        # stay in the CPU cache instead of a fresh object for each occurrence.
        self._ints = np.array(range(backend.get_vocab_size(with_added_tokens=True)), object)
        self._reset()

    @classmethod
    def for_tokenizer(cls, tokenizer) -> WordwiseEncoder | None:
        """The encoder when the tokenizer meets every condition of the proof above, else None."""
        from tokenizers.models import BPE

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        model = backend.model
        if (not isinstance(model, BPE) or model.dropout or model.ignore_merges or model.continuing_subword_prefix
                or model.end_of_word_suffix or backend.truncation or backend.padding
                or (_state(backend.normalizer), _state(backend.pre_tokenizer)) not in LLAMA_SPACE_SETTINGS):
            return None
        vocab = backend.get_vocab(with_added_tokens=True)
        if "\u2581" not in vocab or any(_PIECE_CROSSES_WORDS.search(piece) for piece in vocab):
            return None
        added = list(backend.get_added_tokens_decoder().values())
        if any(not t.content or " " in t.content or "\u2581" in t.content or t.lstrip or t.rstrip or t.single_word
               for t in added):
            return None
        affixes = _template_affixes(_state(backend.post_processor))
        if affixes is None:
            return None
        return cls(backend, [t.content for t in added], *affixes)

    def _reset(self) -> None:
        import pyarrow as pa

        self._known = pa.array([], pa.large_string())  # every word encoded so far
        self._n_ids = np.zeros(0, np.int64)             # its number of ids
        self._first = np.zeros(0, np.int64)             # where its ids start in _ids
        self._ids = np.zeros(0, object)                 # all their ids, as Python ints (shared, not copied)

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        import pyarrow as pa
        import pyarrow.compute as pc

        if not texts:
            return []
        if len(self._known) > self.MAX_WORDS:
            self._reset()
        words, word_text = self._words(pa.array(texts, pa.large_string()))
        codes = pc.index_in(words, value_set=self._known)
        if codes.null_count:
            missing = pc.is_null(codes)
            unknown = pc.filter(words, missing)
            new = pc.unique(unknown)
            n_known = len(self._known)
            self._learn(new)
            codes = codes.fill_null(0).to_numpy().copy()
            codes[missing.to_numpy(zero_copy_only=False)] = n_known + pc.index_in(unknown, value_set=new).to_numpy()
        else:
            codes = codes.to_numpy()
        n_ids = self._n_ids[codes]
        ids = self._ids[np.repeat(self._first[codes] - (np.cumsum(n_ids) - n_ids), n_ids)
                        + np.arange(int(n_ids.sum()))].tolist()
        ends = np.cumsum(np.bincount(word_text, weights=n_ids, minlength=len(texts)).astype(np.int64)).tolist()
        prefix, suffix = self._affixes if add_special_tokens else ([], [])
        out, start = [], 0
        for end in ends:
            out.append(prefix + ids[start:end] + suffix if prefix or suffix else ids[start:end])
            start = end
        return out

    def _words(self, texts):
        """(words, index of each word's text): the texts cut at the spaces allowed above, spaces dropped."""
        import pyarrow as pa

        offsets = np.frombuffer(texts.buffers()[1], np.int64)[:len(texts) + 1]
        data = texts.buffers()[2]
        data = np.frombuffer(data, np.uint8)[:offsets[-1]] if data is not None else np.zeros(0, np.uint8)
        full = np.flatnonzero(offsets[1:] > offsets[:-1])  # empty texts have no words
        starts = offsets[full]
        edge = np.zeros(len(data), bool)  # first and last byte of each text: L and R must not be empty
        edge[starts] = True
        edge[offsets[full + 1] - 1] = True
        spaces = np.flatnonzero((data == _SPACE) & ~edge)
        before, after = data[spaces - 1], data[spaces + 1]
        ok = (before != _SPACE) & (after != _SPACE)
        for end in ["\u2581".encode(), *self._added]:  # the space must not follow one of these
            maybe = np.flatnonzero(before == end[-1])
            ok[maybe[_bytes_at(data, spaces[maybe] - len(end), end)]] = False
        for start in ["\u2581".encode(), *self._added]:  # nor come before one of these
            maybe = np.flatnonzero(after == start[0])
            ok[maybe[_bytes_at(data, spaces[maybe] + 1, start)]] = False
        cuts = spaces[ok]
        # Word starts in text order: each non-empty text's start, then one past each cut in it.
        n_words = len(full) + len(cuts)
        is_start = np.zeros(n_words, bool)
        is_start[np.searchsorted(cuts, starts) + np.arange(len(full))] = True
        bounds = np.empty(n_words + 1, np.int64)
        bounds[:-1][is_start] = starts
        bounds[:-1][~is_start] = cuts + 1
        bounds[-1] = len(data)
        n_starts = np.cumsum(is_start)
        bounds[:-1] -= np.arange(1, n_words + 1) - n_starts  # where they are once the cut spaces are dropped
        bounds[-1] -= len(cuts)
        words = pa.LargeStringArray.from_buffers(n_words, pa.py_buffer(bounds), pa.py_buffer(np.delete(data, cuts)))
        return words, full[n_starts - 1]

    def _learn(self, new) -> None:
        """Encode new words (each exactly as a text of its own, without special tokens) and keep them."""
        import pyarrow as pa

        words = new.to_pylist()
        groups = [words[i:i + 1024] for i in range(0, len(words), 1024)]
        n_ids, ids = [self._n_ids], [self._ids]
        # One pre-tokenized input per group: the tokenizer encodes each word of it on its own and says which
        # word each id came from, at a fraction of the per-input cost of one input per word.
        for group, enc in zip(groups, self.backend.encode_batch(groups, is_pretokenized=True,
                                                                 add_special_tokens=False)):
            n_ids.append(np.bincount(np.asarray(enc.word_ids, np.int64), minlength=len(group)))
            ids.append(self._ints[np.asarray(enc.ids, np.int64)])
        self._n_ids = np.concatenate(n_ids)
        self._ids = np.concatenate(ids)
        self._first = np.cumsum(self._n_ids) - self._n_ids
        self._known = pa.concat_arrays([self._known, new])


_wordwise_cache: tuple[str, WordwiseEncoder | None] = ("", None)


def _cached_wordwise_encoder(tokenizer) -> WordwiseEncoder | None:
    """WordwiseEncoder.for_tokenizer, kept for the next call with the same tokenizer (same serialized
    settings, vocabulary and merges), so that words encoded for one batch of texts serve the next."""
    global _wordwise_cache
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    key = hashlib.sha256(backend.to_str().encode()).hexdigest()
    if _wordwise_cache[0] != key:
        _wordwise_cache = (key, WordwiseEncoder.for_tokenizer(tokenizer))
    return _wordwise_cache[1]


def _bytes_at(data: np.ndarray, at: np.ndarray, pattern: bytes) -> np.ndarray:
    """Whether data[at:at + len(pattern)] == pattern for each position. Positions before or after the
    text (out of range: clipped, or in a neighbouring text) can only report a match that is not
    there, never miss one that is, so a cut is at worst left out."""
    hit = np.ones(len(at), bool)
    for k, byte in enumerate(pattern):
        hit &= data.take(at + k, mode="clip") == byte
    return hit


def _state(component):
    """The JSON settings of a tokenizers component (normalizer, post-processor), None for none."""
    return None if component is None else json.loads(component.__getstate__())


def _template_affixes(post) -> tuple[list[int], list[int]] | None:
    """Ids the post-processor puts before and after a single text, or None if it is not that simple."""
    if post is None:
        return [], []
    if post.get("type") != "TemplateProcessing":
        return None
    ids = {name: token["ids"] for name, token in post["special_tokens"].items()}
    before, after, seen = [], [], False
    for piece in post["single"]:
        if "Sequence" in piece:
            if seen:
                return None
            seen = True
        else:
            (after if seen else before).extend(ids[piece["SpecialToken"]["id"]])
    return (before, after) if seen else None


_worker_tokenizer = None


def _worker_pool(processes: int, tokenizer_path: str):
    # spawn, not fork: the parent may hold tokenizer threads or llama.cpp state that a fork would copy half-way.
    import multiprocessing

    return multiprocessing.get_context("spawn").Pool(processes, initializer=_load_worker_tokenizer,
                                                     initargs=(tokenizer_path,))


def _load_worker_tokenizer(path: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(path)


def _encode_in_worker(chunk: list[str], add_special_tokens: bool) -> list[list[int]]:
    return _worker_tokenizer(chunk, add_special_tokens=add_special_tokens)["input_ids"]
