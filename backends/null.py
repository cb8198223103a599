"""A backend without a model, for testing the harness itself.

Returns `tokens` ids after `delay_ms` (per request; per batch in generate). Options let tests
make chosen samples fail or hang (selected by the first id of the prompt) to check that every
query is still completed.
"""
from __future__ import annotations

import time
from typing import Iterator

from backends.base import Backend
from common.errors import HarnessError


class NullBackend(Backend):
    name = "null"
    default_batch_size = 64
    streams_per_worker = 64    # its streams never wait (unless delay_ms or stall_on say so)
    pinnable = True            # it starts no threads
    defaults = {
        "tokens": 32,        # ids returned per request (capped by max_new_tokens)
        "delay_ms": 0.0,     # wait before answering (per stream / per generate call)
        "token_id": 7,       # id returned at every position
        "eos_id": 1,         # id treated as end of sequence
        "fail_on": [],       # prompts whose first id is listed here raise RuntimeError
        "fail_mid_on": [],   # ... raise after the first streamed token
        "stall_on": [],      # ... hang for stall_s seconds (a backend that stopped answering)
        "stall_s": 3600.0,
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        try:
            self._fail, self._fail_mid, self._stall = (
                {int(v) for v in o[key]} for key in ("fail_on", "fail_mid_on", "stall_on"))
        except ValueError:
            raise HarnessError("null: fail_on, fail_mid_on and stall_on take token ids separated by commas, got "
                               f"{o['fail_on']}, {o['fail_mid_on']}, {o['stall_on']}") from None
        if o["tokens"] < 0 or o["delay_ms"] < 0 or o["stall_s"] < 0:
            raise HarnessError(f"null: tokens, delay_ms and stall_s must be >= 0, got tokens={o['tokens']} "
                               f"delay_ms={o['delay_ms']:g} stall_s={o['stall_s']:g}")

    def running_dtype(self) -> str:
        return "none"  # no model

    def running_device(self) -> str:
        return "none"

    def load(self) -> None:
        self.eos_token_ids = frozenset({self.options["eos_id"]})
        self._delay_s = self.options["delay_ms"] / 1000
        n = max(self.params.min_new_tokens, min(self.options["tokens"], self.params.max_new_tokens))
        self._output = self.trim([self.options["token_id"]] * n)  # the same for every prompt

    def _answer(self, prompt: list[int]) -> list[int]:
        """The output for one prompt; shared, so callers copy it."""
        if prompt and prompt[0] in self._stall:
            time.sleep(self.options["stall_s"])
        if prompt and prompt[0] in self._fail:
            raise RuntimeError(f"null backend: injected failure for prompt starting with {prompt[0]}")
        return self._output

    def generate(self, prompts: list[list[int]]) -> list[list[int]]:
        if self._delay_s:
            time.sleep(self._delay_s)
        outs: list = []
        for p in prompts:
            try:
                outs.append(list(self._answer(p)))
            except RuntimeError as e:  # only this prompt fails; the SUT completes it empty
                outs.append(e)
        return outs

    def stream(self, prompt: list[int]) -> Iterator[list[int]]:
        if self._delay_s:
            time.sleep(self._delay_s)
        out = self._answer(prompt)
        yield out[:1]
        if prompt and prompt[0] in self._fail_mid:
            raise RuntimeError(f"null backend: injected failure after the first token of {prompt[0]}")
        if len(out) > 1:
            yield out[1:]
