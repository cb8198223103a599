"""Backend registry: name -> "module:Class", imported only when asked for.

A missing optional dependency (llama_cpp, torch, httpx) therefore breaks only the backend
that needs it, with a message naming the extra to install.

May import: common, inputs, quantization (never harness: the SUT core calls backends, not the
other way round).
"""
from __future__ import annotations

import importlib

from backends.base import Backend, GenerationParams, trim_at_eos  # noqa: F401
from common.errors import HarnessError

REGISTRY: dict[str, tuple[str, str]] = {
    # name: ("module:Class", pip extra that provides its dependencies)
    "null": ("backends.null:NullBackend", ""),
    "llamacpp": ("backends.llamacpp:LlamaCppBackend", "llamacpp"),
    "hf": ("backends.hf:HFBackend", "hf"),
    "fakequant": ("backends.fakequant:FakeQuantBackend", "hf"),
    "openai": ("backends.openai:OpenAIBackend", "openai"),
    "vllm": ("backends.vllm:VLLMBackend", "vllm"),
}


def get_backend_class(name: str) -> type[Backend]:
    if name not in REGISTRY:
        raise HarnessError(f"unknown backend '{name}' (choose from: {', '.join(REGISTRY)})")
    target, extra = REGISTRY[name]
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if e.name and not e.name.startswith("backends"):
            hint = f"pip install -e '.[{extra}]'" if extra else f"pip install {e.name}"
            raise HarnessError(f"backend '{name}' needs the Python package '{e.name}': {hint}") from e
        raise
    return getattr(module, cls_name)


def make_backend(name: str, **kwargs) -> Backend:
    """Construct (not load) the named backend."""
    return get_backend_class(name)(**kwargs)
