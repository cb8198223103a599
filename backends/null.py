"""A backend without a model, for testing the harness itself.

Returns `tokens` ids after `delay_ms` (per request; per batch in generate). Options let tests
make chosen samples fail (`fail_on`: prompt first-token ids that raise) to check that every
query is still completed.
"""
from __future__ import annotations

import time
from typing import Iterator

from backends.base import Backend


class NullBackend(Backend):
    name = "null"
    default_batch_size = 64
    defaults = {
        "tokens": 32,        # ids returned per request (capped by max_new_tokens)
        "delay_ms": 0.0,     # wait before answering (per stream / per generate call)
        "token_id": 7,       # id returned at every position
        "eos_id": 1,         # id treated as end of sequence
        "fail_on": [],       # prompts whose first id is listed here raise RuntimeError
    }

    def load(self) -> None:
        self.eos_token_ids = frozenset({self.options["eos_id"]})
        self._fail = {int(v) for v in self.options["fail_on"]}

    def _answer(self, prompt: list[int]) -> list[int]:
        if prompt and prompt[0] in self._fail:
            raise RuntimeError(f"null backend: injected failure for prompt starting with {prompt[0]}")
        n = max(self.params.min_new_tokens, min(self.options["tokens"], self.params.max_new_tokens))
        return self.trim([self.options["token_id"]] * n)

    def generate(self, prompts: list[list[int]]) -> list[list[int]]:
        if self.options["delay_ms"]:
            time.sleep(self.options["delay_ms"] / 1000)
        return [self._answer(p) for p in prompts]

    def stream(self, prompt: list[int]) -> Iterator[list[int]]:
        if self.options["delay_ms"]:
            time.sleep(self.options["delay_ms"] / 1000)
        out = self._answer(prompt)
        yield out[:1]
        if len(out) > 1:
            yield out[1:]
