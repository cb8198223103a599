"""Load the tokenizer of a local model, offline: a checkpoint folder or a GGUF file.

- A folder: its Hugging Face tokenizer (AutoTokenizer, local files only).
- A .gguf file: llama.cpp's own vocabulary from the file (no weights loaded), wrapped in the
  small part of the Hugging Face tokenizer API that this project uses. Token ids therefore
  equal what llama.cpp and llama.cpp servers compute for the same model. (transformers can also
  rebuild a tokenizer from GGUF, but for Gemma 3 in transformers 5.17 it splits words into single
  characters, so it is not used.)
"""
from __future__ import annotations

import logging
import os

from common.errors import HarnessError
from common.native import native_output_silenced
from inputs.models import resolve_model_path

log = logging.getLogger(__name__)


class GGUFTokenizer:
    """llama.cpp's tokenizer for a GGUF file, with Hugging Face-style methods.

    Text is tokenized with special-token names parsed (as Hugging Face does for added tokens);
    add_special_tokens adds BOS when the model's GGUF metadata asks for it."""

    def __init__(self, path: str):
        try:
            import llama_cpp
        except ImportError as e:
            raise HarnessError(f"reading the vocabulary of {path} needs llama-cpp-python: "
                               "pip install -e '.[llamacpp]'") from e
        try:
            with native_output_silenced():  # llama.cpp warns about n_ctx on every vocab-only load
                self._llama = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        except (ValueError, RuntimeError) as e:
            raise HarnessError(f"cannot read the vocabulary of {path}: not a valid GGUF file ({e})") from e
        self.name_or_path = path
        meta = self._llama.metadata
        self.bos_token_id = self._llama.token_bos()
        self.eos_token_id = self._llama.token_eos()
        self.pad_token_id = int(meta.get("tokenizer.ggml.padding_token_id", self.eos_token_id))
        self.add_bos = meta.get("tokenizer.ggml.add_bos_token", "true") == "true"
        self.chat_template = meta.get("tokenizer.chat_template")
        self.bos_token = self._piece(self.bos_token_id)
        self.eos_token = self._piece(self.eos_token_id)

    @property
    def eog_token_ids(self) -> set[int]:
        """Every id llama.cpp treats as end of generation (Gemma 3: <eos>, <end_of_turn>, </s>)."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        return {t for t in range(len(self)) if llama_cpp.llama_vocab_is_eog(vocab, t)}

    def __len__(self) -> int:
        return self._llama.n_vocab()

    def _piece(self, token_id: int) -> str:
        return self._llama._model.token_get_text(token_id)

    def encode(self, text: str, add_special_tokens: bool = True, split_special_tokens: bool = False) -> list[int]:
        """split_special_tokens=True reads special-token names ("<eos>") as plain text."""
        return self._llama.tokenize(text.encode("utf-8"), add_bos=add_special_tokens and self.add_bos,
                                    special=not split_special_tokens)

    def __call__(self, text, add_special_tokens: bool = True, split_special_tokens: bool = False, **_):
        texts = [text] if isinstance(text, str) else text
        ids = [self.encode(t, add_special_tokens, split_special_tokens) for t in texts]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._llama.detokenize([int(t) for t in ids], special=not skip_special_tokens).decode(
            "utf-8", errors="replace")

    def batch_decode(self, sequences, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(s, skip_special_tokens) for s in sequences]

    def convert_ids_to_tokens(self, ids):
        return self._piece(ids) if isinstance(ids, int) else [self._piece(int(t)) for t in ids]

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = False):
        if not self.chat_template:
            raise HarnessError(f"{self.name_or_path} has no chat template")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(msg):
            raise HarnessError(f"chat template: {msg}")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        text = env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token, eos_token=self.eos_token)
        return self.encode(text, add_special_tokens=False) if tokenize else text


def load_tokenizer(model_path: str | None = None):
    """Tokenizer for `model_path` (folder or .gguf); None means the embedded default model."""
    path = resolve_model_path(model_path)
    if path.endswith(".gguf"):
        return GGUFTokenizer(path)
    if not os.path.isdir(path):
        raise HarnessError(f"cannot load a tokenizer from {path}: expected a checkpoint folder or a .gguf file")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # transformers raises many types for unreadable folders
        raise HarnessError(f"cannot load a tokenizer from {path}: {type(e).__name__}: {e}".splitlines()[0]) from e


class SentencePieceDecoder:
    """Decoding as the MLPerf reference's evaluation does it: the slow SentencePiece tokenizer
    (`use_fast=False`), i.e. SentencePiece's own decode of the ids left after dropping special
    ones. The fast tokenizer's byte-fallback decoder writes a different number of U+FFFD
    characters for a response cut inside a multi-byte character, which changes `gen_len`."""

    def __init__(self, model_file: str, tokenizer):
        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor(model_file=model_file)
        self._tokenizer = tokenizer
        self._special = set(tokenizer.all_special_ids)
        self._n = len(tokenizer)
        self.name_or_path = tokenizer.name_or_path

    def __len__(self) -> int:
        return self._n

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = [int(t) for t in ids if not (skip_special_tokens and int(t) in self._special)]
        if any(t >= self._sp.get_piece_size() for t in ids):  # tokens added on top of the SentencePiece model
            return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        return self._sp.decode(ids)

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(s, skip_special_tokens) for s in sequences]


def load_decoder(model_path: str | None = None):
    """What evaluation.py decodes with: for a folder with a SentencePiece `tokenizer.model` (Llama-2),
    SentencePiece itself, as the reference's slow tokenizer; else the tokenizer of load_tokenizer()."""
    tokenizer = load_tokenizer(model_path)
    path = resolve_model_path(model_path)
    model_file = os.path.join(path, "tokenizer.model") if os.path.isdir(path) else ""
    if os.path.isfile(model_file):
        try:
            return SentencePieceDecoder(model_file, tokenizer)
        except (RuntimeError, OSError) as e:  # not a SentencePiece model after all
            log.warning("%s is not a SentencePiece model (%s); decoding with the fast tokenizer", model_file, e)
    return tokenizer
