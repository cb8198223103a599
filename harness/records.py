"""Per-request records and the latency metrics derived from them.

Definitions follow vLLM's benchmarks and GuideLLM:
- TTFT = time of the first generated token - time the query was issued;
- E2E  = time of the last token - time issued;
- TPOT = (E2E - TTFT) / (n_out - 1), undefined for one-token outputs;
- ITL  = gaps between successive token arrivals (a chunk of k tokens arriving at once counts
  as one gap followed by k-1 zero gaps, so len(ITL) == n_out - 1);
- queue = dispatch - issue: how long a query waited for a worker, which hands it to the
  backend at dispatch. TTFT and E2E "from dispatch" start there, as vLLM's --max-concurrency
  and GuideLLM's concurrent runs measure; LoadGen's own figures start at the issue.
Times are seconds from time.perf_counter(); NaN where a time does not exist (a query that
never reached the backend has no dispatch, one that failed before any token no first token).

A run at 100,000 queries per second makes millions of records, so RequestLog keeps them as
columns in typed arrays (88 bytes per request plus 12 per streamed chunk) rather than as one
object with its own lists per request (about 1 KB). RequestRecord is the readable form of
one request, made on demand.
"""
from __future__ import annotations

import math
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

NAN = math.nan
_TIMES = ("t_issued", "t_dispatch", "t_first", "t_done")
_INTS = ("seq", "sample_index", "query_id", "n_input", "n_output", "chunk_start", "n_chunks")


@dataclass(slots=True)
class RequestRecord:
    """One request, readable (RequestLog stores requests as columns)."""
    sample_index: int            # QSL index of the sample
    query_id: int                # LoadGen's response id
    n_input: int                 # prompt tokens
    t_issued: float              # when the SUT received the query
    t_first: float | None = None         # first token arrived
    t_done: float | None = None          # last token arrived / request finished
    n_output: int = 0                    # generated ids reported to LoadGen
    chunk_times: list[float] = field(default_factory=list)   # arrival time of each streamed chunk
    chunk_sizes: list[int] = field(default_factory=list)     # ids in each chunk
    error: str | None = None             # why the query failed (harness/core.py answered it for LoadGen)
    t_dispatch: float | None = None      # when a worker handed it to the backend
    seq: int | None = None               # issue order (0 = first issued)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft(self) -> float | None:
        return None if self.t_first is None else self.t_first - self.t_issued

    @property
    def e2e(self) -> float | None:
        return None if self.t_done is None else self.t_done - self.t_issued

    @property
    def queue(self) -> float | None:
        return None if self.t_dispatch is None else self.t_dispatch - self.t_issued

    @property
    def tpot(self) -> float | None:
        if self.n_output < 2 or self.ttft is None or self.e2e is None:
            return None
        return (self.e2e - self.ttft) / (self.n_output - 1)

    @property
    def itl(self) -> list[float]:
        gaps: list[float] = []
        for i in range(1, len(self.chunk_times)):
            gaps.append(self.chunk_times[i] - self.chunk_times[i - 1])
            gaps.extend([0.0] * (self.chunk_sizes[i] - 1))
        if self.chunk_sizes:
            gaps = [0.0] * (self.chunk_sizes[0] - 1) + gaps
        return gaps


class RequestLog:
    """Every completed request, as columns. add() is the only writer (harness/core.py calls it under
    its lock); readers take columns(), a copy, so a run still adding rows is never disturbed."""

    def __init__(self) -> None:
        self._times = array("d")        # _TIMES per row
        self._ints = array("Q")         # _INTS per row (LoadGen's query ids are unsigned 64-bit)
        self._chunk_times = array("d")  # every row's chunk arrival times, row after row
        self._chunk_sizes = array("I")
        self._errors: dict[int, str] = {}   # seq -> why it failed (failures are rare)
        # perf_counter() times become wall-clock ones through this pair, read together.
        self.clock_origin = (time.time(), time.perf_counter())

    def add(self, seq: int, sample_index: int, query_id: int, n_input: int, n_output: int, t_issued: float,
            t_dispatch: float, t_first: float | None, t_done: float, chunk_times: list[float],
            chunk_sizes: list[int], error: str | None) -> None:
        start = len(self._chunk_times)
        self._chunk_times.extend(chunk_times)
        self._chunk_sizes.extend(chunk_sizes)
        if error is not None:
            self._errors[seq] = error
        self._times.extend((t_issued, t_dispatch, NAN if t_first is None else t_first, t_done))
        # Last: a row counts once its ints are in, so a reader on another thread sees whole rows only.
        self._ints.extend((seq, sample_index, query_id, n_input, n_output, start, len(chunk_times)))

    @classmethod
    def from_records(cls, records: Iterable[RequestRecord]) -> RequestLog:
        log = cls()
        for i, r in enumerate(records):
            log.add(i if r.seq is None else r.seq, r.sample_index, r.query_id, r.n_input, r.n_output, r.t_issued,
                    NAN if r.t_dispatch is None else r.t_dispatch, r.t_first,
                    NAN if r.t_done is None else r.t_done, r.chunk_times, r.chunk_sizes, r.error)
        return log

    def __len__(self) -> int:
        return len(self._ints) // len(_INTS)

    def snapshot(self) -> RequestLog:
        """The rows so far, in a log of their own that no longer grows."""
        n = len(self)
        copy = RequestLog()
        copy._ints, copy._times = self._ints[:n * len(_INTS)], self._times[:n * len(_TIMES)]
        copy._chunk_times, copy._chunk_sizes = self._chunk_times[:], self._chunk_sizes[:]
        copy._errors, copy.clock_origin = self._errors.copy(), self.clock_origin
        return copy

    def output_tokens(self) -> int:
        """Generated ids of every request, failed ones included."""
        return sum(self._ints[_INTS.index("n_output")::len(_INTS)])

    def columns(self) -> RequestColumns:
        """A copy of the rows so far as numpy columns, in issue order."""
        n = len(self)
        # Slices copy: a numpy view of the live arrays would stop add() from growing them.
        ints = np.frombuffer(self._ints[:n * len(_INTS)], dtype=np.uint64).reshape(n, len(_INTS))
        times = np.frombuffer(self._times[:n * len(_TIMES)], dtype=np.float64).reshape(n, len(_TIMES))
        order = np.argsort(ints[:, 0], kind="stable")
        ints, times = ints[order], times[order]
        errors = self._errors.copy()
        seq = ints[:, 0].astype(np.int64)
        return RequestColumns(
            seq=seq, sample_index=ints[:, 1].astype(np.int64), query_id=ints[:, 2].copy(),
            n_input=ints[:, 3].astype(np.int64), n_output=ints[:, 4].astype(np.int64),
            chunk_start=ints[:, 5].astype(np.int64), n_chunks=ints[:, 6].astype(np.int64),
            t_issued=times[:, 0].copy(), t_dispatch=times[:, 1].copy(), t_first=times[:, 2].copy(),
            t_done=times[:, 3].copy(),
            chunk_times=np.frombuffer(self._chunk_times[:], dtype=np.float64),
            chunk_sizes=np.frombuffer(self._chunk_sizes[:], dtype=np.uint32).astype(np.int64),
            errors=[errors.get(s) for s in seq.tolist()] if errors else [None] * n,
            clock_origin=self.clock_origin)

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.columns().records())


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else x


@dataclass
class RequestColumns:
    """Requests in issue order as numpy arrays (times in seconds, NaN where absent), with the
    metric definitions of this module over them."""
    seq: np.ndarray
    sample_index: np.ndarray
    query_id: np.ndarray
    n_input: np.ndarray
    n_output: np.ndarray
    chunk_start: np.ndarray
    n_chunks: np.ndarray
    t_issued: np.ndarray
    t_dispatch: np.ndarray
    t_first: np.ndarray
    t_done: np.ndarray
    chunk_times: np.ndarray
    chunk_sizes: np.ndarray
    errors: list[str | None]
    clock_origin: tuple[float, float]

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def ok(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)

    def ttft(self) -> np.ndarray:
        return self.t_first - self.t_issued

    def ttft_from_dispatch(self) -> np.ndarray:
        return self.t_first - self.t_dispatch

    def e2e(self) -> np.ndarray:
        return self.t_done - self.t_issued

    def e2e_from_dispatch(self) -> np.ndarray:
        return self.t_done - self.t_dispatch

    def queue(self) -> np.ndarray:
        return self.t_dispatch - self.t_issued

    def tpot(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.n_output >= 2, (self.t_done - self.t_first) / (self.n_output - 1), np.nan)

    def itl(self, rows: np.ndarray) -> np.ndarray:
        """The inter-token gaps of the requests selected by the boolean mask `rows`, together."""
        starts, counts = self.chunk_start[rows], self.n_chunks[rows]
        total = int(counts.sum())
        if total == 0:
            return np.empty(0)
        firsts = np.cumsum(counts) - counts        # where each request's chunks begin in the gathered order
        idx = np.arange(total) - np.repeat(firsts - starts, counts)
        times, sizes = self.chunk_times[idx], self.chunk_sizes[idx]
        continues = np.ones(total, dtype=bool)     # chunk follows one of the same request
        continues[firsts[counts > 0]] = False
        gaps = np.diff(times)[continues[1:]]
        return np.concatenate([gaps, np.zeros(int(np.clip(sizes - 1, 0, None).sum()))])

    def wall_time(self, t: np.ndarray) -> np.ndarray:
        """perf_counter() times as epoch seconds."""
        wall, perf = self.clock_origin
        return t - perf + wall

    def records(self) -> list[RequestRecord]:
        out = []
        for i in range(len(self)):
            a, n = int(self.chunk_start[i]), int(self.n_chunks[i])
            out.append(RequestRecord(
                int(self.sample_index[i]), int(self.query_id[i]), int(self.n_input[i]), float(self.t_issued[i]),
                _opt(float(self.t_first[i])), _opt(float(self.t_done[i])), int(self.n_output[i]),
                self.chunk_times[a:a + n].tolist(), self.chunk_sizes[a:a + n].tolist(), self.errors[i],
                _opt(float(self.t_dispatch[i])), int(self.seq[i])))
        return out
