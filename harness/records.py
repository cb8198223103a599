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

A run at 100,000 queries per second makes millions of records, so RequestLog keeps them packed:
one 72-byte row per request and 16 bytes per streamed chunk, rather than one object with its own
lists per request (about 1 KB). RequestRecord is the readable form of one request, made on demand.
"""
from __future__ import annotations

import math
import struct
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

NAN = math.nan
# One request's row. One struct.pack per request costs less than filling an array per column
# (this runs for every query, on the path that decides TTFT at 50,000+ queries per second).
_ROW_FIELDS = (("seq", "Q"), ("query_id", "Q"), ("chunk_start", "Q"), ("sample_index", "I"), ("n_input", "I"),
               ("n_output", "I"), ("n_chunks", "I"), ("t_issued", "d"), ("t_dispatch", "d"), ("t_first", "d"),
               ("t_done", "d"))
_ROW = struct.Struct("<" + "".join(code for _, code in _ROW_FIELDS))
_ROW_DTYPE = np.dtype([(name, "<" + {"Q": "u8", "I": "u4", "d": "f8"}[code]) for name, code in _ROW_FIELDS])


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
    """Every completed request, packed. add() is the only writer (harness/core.py calls it under
    its lock); readers take columns(), a copy, so a run still adding rows is never disturbed."""

    def __init__(self) -> None:
        self._rows = bytearray()        # _ROW after _ROW
        # Every row's chunks, row after row: arrival time and ids, as pairs of doubles (a count of ids is
        # exact in one), so each request adds its chunks with one call.
        self._chunks = array("d")
        self._errors: dict[int, str] = {}   # seq -> why it failed (failures are rare)
        # perf_counter() times become wall-clock ones through this pair, read together.
        self.clock_origin = (time.time(), time.perf_counter())

    def add(self, seq: int, sample_index: int, query_id: int, n_input: int, n_output: int, t_issued: float,
            t_dispatch: float, t_first: float | None, t_done: float, chunks: list[float], error: str | None) -> None:
        """One completed request; `chunks` is flat: time, ids, time, ids, ... of each chunk."""
        start = len(self._chunks) // 2
        self._chunks.extend(chunks)
        if error is not None:
            self._errors[seq] = error
        # Last, in one step: a reader on another thread sees whole rows only.
        self._rows += _ROW.pack(seq, query_id, start, sample_index, n_input, n_output, len(chunks) // 2, t_issued,
                                t_dispatch, NAN if t_first is None else t_first, t_done)

    @classmethod
    def from_records(cls, records: Iterable[RequestRecord]) -> RequestLog:
        log = cls()
        for i, r in enumerate(records):
            log.add(i if r.seq is None else r.seq, r.sample_index, r.query_id, r.n_input, r.n_output, r.t_issued,
                    NAN if r.t_dispatch is None else r.t_dispatch, r.t_first,
                    NAN if r.t_done is None else r.t_done,
                    [x for chunk in zip(r.chunk_times, r.chunk_sizes) for x in chunk], r.error)
        return log

    def __len__(self) -> int:
        return len(self._rows) // _ROW.size

    def snapshot(self) -> RequestLog:
        """The rows so far, in a log of their own that no longer grows."""
        copy = RequestLog()
        copy._rows = self._rows[:len(self) * _ROW.size]
        copy._chunks = self._chunks[:]
        copy._errors, copy.clock_origin = self._errors.copy(), self.clock_origin
        return copy

    def _table(self) -> np.ndarray:
        # A sliced copy: a numpy view of the live bytearray would stop add() from growing it.
        return np.frombuffer(bytes(self._rows[:len(self) * _ROW.size]), dtype=_ROW_DTYPE)

    def output_tokens(self) -> int:
        """Generated ids of every request, failed ones included."""
        return int(self._table()["n_output"].sum())

    def columns(self) -> RequestColumns:
        """A copy of the rows so far as numpy columns, in issue order."""
        table = self._table()
        table = table[np.argsort(table["seq"], kind="stable")]
        chunks = np.frombuffer(self._chunks[:len(self._chunks) // 2 * 2], dtype=np.float64)
        errors = self._errors.copy()
        seq = table["seq"].astype(np.int64)

        def col(name: str) -> np.ndarray:
            return table[name].astype(np.float64 if table.dtype[name].kind == "f" else np.int64)
        return RequestColumns(
            seq=seq, sample_index=col("sample_index"), query_id=table["query_id"].copy(),
            n_input=col("n_input"), n_output=col("n_output"), chunk_start=col("chunk_start"),
            n_chunks=col("n_chunks"), t_issued=col("t_issued"), t_dispatch=col("t_dispatch"), t_first=col("t_first"),
            t_done=col("t_done"),
            chunk_times=chunks[0::2].copy(), chunk_sizes=chunks[1::2].astype(np.int64),
            errors=[errors.get(s) for s in seq.tolist()] if errors else [None] * len(seq),
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
