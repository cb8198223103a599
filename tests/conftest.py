import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def raw():
    """llama-cpp-python's own high-level model on the embedded GGUF: the reference for tokens and logits."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from inputs.models import default_model_path

    llm = llama_cpp.Llama(default_model_path(), n_ctx=512, n_threads=1, n_threads_batch=1,
                          logits_all=True, verbose=False)
    yield llm
    llm.close()
