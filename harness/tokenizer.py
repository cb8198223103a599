"""Load a Hugging Face tokenizer from a local checkpoint folder or a GGUF file, offline.

A GGUF file carries its vocabulary; transformers can rebuild a fast tokenizer from it
(`gguf_file=`). That takes a few seconds, so the result is saved once under the cache folder.
"""
import logging
import os
import shutil
import tempfile

from harness.errors import HarnessError
from harness.models import cache_dir, file_fingerprint, resolve_model_path

log = logging.getLogger(__name__)


def load_tokenizer(model_path: str | None = None):
    """Tokenizer for `model_path` (folder or .gguf); None means the embedded default model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    path = resolve_model_path(model_path)
    try:
        if os.path.isdir(path):
            return AutoTokenizer.from_pretrained(path, local_files_only=True)
        if not path.endswith(".gguf"):
            raise HarnessError(f"cannot load a tokenizer from {path}: expected a checkpoint folder or a .gguf file")
        cached = cache_dir("tokenizers") / file_fingerprint(path)
        if cached.is_dir():
            return AutoTokenizer.from_pretrained(cached, local_files_only=True)
        log.info("building tokenizer from %s (once; cached in %s)", path, cached)
        tok = AutoTokenizer.from_pretrained(os.path.dirname(path) or ".", gguf_file=os.path.basename(path),
                                            local_files_only=True)
        tmp = tempfile.mkdtemp(dir=cached.parent)
        tok.save_pretrained(tmp)
        try:
            os.replace(tmp, cached)
        except OSError:  # another process saved it first
            shutil.rmtree(tmp, ignore_errors=True)
        return tok
    except HarnessError:
        raise
    except Exception as e:  # transformers raises many types for unreadable files
        raise HarnessError(f"cannot load a tokenizer from {path}: {type(e).__name__}: {e}".splitlines()[0]) from e
