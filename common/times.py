"""Times as results files write them: ISO-8601 in UTC; stamps for new folder names."""
from __future__ import annotations

import datetime
import itertools
import os
import time

_calls = itertools.count(1)


def iso_utc(t: float | None = None) -> str:
    """Epoch seconds (default: now) as e.g. '2026-11-29T01:53:29.123+00:00'."""
    when = datetime.datetime.now(datetime.timezone.utc) if t is None else \
        datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return when.isoformat(timespec="milliseconds")


def stamp() -> str:
    """Local date and time for new folder and file names, unique on this host: two runs started in
    the same second differ by process id, two calls in one process by a count, e.g.
    '20261129-015329-4242-1'."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_calls)}"
