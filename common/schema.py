"""Config files checked by pydantic models, every problem reported as one clear line.

    run = parse_model(RunSpec, mapping, "spec.yaml: run #2")
    # -> HarnessError("spec.yaml: run #2: repeats: Input should be a valid integer, unable to parse
    #    string as an integer (got 'two')")
"""
from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from common.errors import HarnessError

M = TypeVar("M", bound=BaseModel)


def describe_errors(error: ValidationError, known: list[str] | None = None) -> str:
    """pydantic's errors as one line: 'field: message (got VALUE)'; '; ' between them. `known`:
    the top-level keys, listed when one is unknown."""
    parts = []
    for e in error.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # models, dataclasses
            msg = "unknown key" + (f" (known: {', '.join(known)})" if known and len(e["loc"]) == 1 else "")
        elif e["type"] != "missing" and "input" in e:
            msg += f" (got {e['input']!r})"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_model(cls: type[M], data: Any, where: str) -> M:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise HarnessError(f"{where}: {describe_errors(e, list(cls.model_fields))}") from None
