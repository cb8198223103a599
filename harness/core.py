"""The part of the System-Under-Test shared by the Offline and Server scenarios.

LoadGen calls issue_queries() from its own thread; we queue the samples and worker threads
run them on the backend, then report back:

- Offline (streaming=False): workers take batches of up to `batch_size` samples (sorted by prompt
  length, so a batching backend pads little) and call backend.generate().
- Server (streaming=True): each worker iterates backend.stream() of its queries; the first
  generated id goes to lg.FirstTokenComplete as soon as it exists, and the whole response
  (first token included) to lg.QuerySamplesComplete with n_tokens = number of ids. A worker
  serves one query at a time, or, when queries queue up, up to the backend's
  `streams_per_worker` together: it takes the first chunk of each stream, sends those first
  tokens, then runs each stream to its end and completes them all.

Each query's issue, dispatch (handed to the backend), chunk and completion times go into
`records` (harness/records.py) when it completes: one packed row plus its chunks, so a run of
millions of queries holds about a hundred bytes per query, not an object with lists each.

LoadGen hears about several queries in one call where they are ready together (an Offline
batch, the queries a Server worker serves together): at tens of thousands of queries per
second the GIL hand-overs around each call cost more than the Python work between them.

Every query LoadGen issues is completed exactly once, also when the backend raises or hangs:
a failed query is answered with the ids streamed before the failure, or else one token: the
backend's smallest EOS id, or NO_TOKEN_ID when it has none (never an empty response: LoadGen
logs an error for a completion without tokens and, in the Server scenario, for one without a
first token). Its error is recorded and the run is marked failed. A reply without tokens is such
a failure for every backend ("empty reply (no tokens)"). With `query_timeout_s` a watchdog
completes queries that run too long, so the run ends in bounded time.

interrupt() (on the first Ctrl-C or SIGTERM) completes every outstanding query
as failed ("interrupted") and every query issued after it at once, without calling the backend:
LoadGen cannot be stopped mid-test, but with nothing left outstanding it ends by itself.

With `pin_cpu` LoadGen's issuing thread (from its first issue_queries call until stop()) and the
workers run on that one CPU. At tens of thousands of queries per second they hand the GIL to each
other for every query; on two CPUs each hand-over wakes a sleeping thread on the other CPU,
which is slow enough for the releasing thread to take the GIL back first, and TTFT p99 grows
(docs/performance.md). Only for backends whose work runs elsewhere (`Backend.pinnable`).
"""
from __future__ import annotations

import array
import gc
import itertools
import logging
import math
import os
import queue
import threading
import time
from typing import Callable, Iterator

import mlperf_loadgen as lg

from backends.base import Backend
from common.errors import HarnessError
from harness.records import RequestLog

log = logging.getLogger(__name__)

_STOP = object()
# The one id a failed query is answered with when the backend has no EOS (the openai backend):
# <unk> in Llama's vocabulary, <pad> in Gemma's, a placeholder rather than an answer.
NO_TOKEN_ID = 0
EMPTY_REPLY = "empty reply (no tokens)"
INTERRUPTED = "interrupted"


class _InFlight:
    """One issued query until it completes (then it becomes a row of the RequestLog); `done`
    guards against completing it twice (worker vs watchdog). A plain slotted class: one is made
    for every query on LoadGen's issuing thread, and a dataclass's default factories cost more."""
    __slots__ = ("seq", "sample_index", "query_id", "n_input", "t_issued", "t_dispatch", "t_first", "done", "ids",
                 "chunks")

    def __init__(self, seq: int, sample_index: int, query_id: int, n_input: int, t_issued: float):
        self.seq = seq                  # issue order
        self.sample_index = sample_index
        self.query_id = query_id
        self.n_input = n_input
        self.t_issued = t_issued
        self.t_dispatch = math.nan      # handed to the backend
        self.t_first: float | None = None
        self.done = False
        self.ids: list[int] = []        # ids streamed so far (Server); the first one went to LoadGen
        self.chunks: list[float] = []   # arrival time and ids of each chunk, flat (RequestLog.add)


def _report(complete: Callable, answers: list[tuple[_InFlight, list[int]]]) -> None:
    """One LoadGen call (FirstTokenComplete or QuerySamplesComplete) for all `answers`; their ids
    share one int32 buffer, which LoadGen copies before the call returns."""
    if not answers:
        return
    buf = array.array("i")
    for _, ids in answers:
        buf.fromlist(ids)
    addr = buf.buffer_info()[0]
    responses = []
    for item, ids in answers:
        n = len(ids)
        responses.append(lg.QuerySampleResponse(item.query_id, addr, n * 4, n))
        addr += n * 4
    complete(responses)


def check_pin_cpu(backend_cls: type[Backend], cpu: int) -> None:
    """Refuse a pin that would confine the backend's work, or a CPU this process may not use."""
    if not hasattr(os, "sched_setaffinity"):
        raise HarnessError("pinning threads to a CPU needs Linux (os.sched_setaffinity)")
    if not backend_cls.pinnable:
        raise HarnessError(f"backend '{backend_cls.name}' runs its work on the SUT's worker threads; "
                           "pinning them to one CPU would confine it there")
    if cpu not in os.sched_getaffinity(0):
        raise HarnessError(f"CPU {cpu} is not available to this process "
                           f"(available: {sorted(os.sched_getaffinity(0))})")


class SUTCore:
    def __init__(self, backend: Backend, prompts: list[list[int]], streaming: bool, num_workers: int = 1,
                 batch_size: int = 1, query_timeout_s: float = 0.0, progress=None, pin_cpu: int | None = None):
        self.backend = backend
        self.prompts = prompts
        self.streaming = streaming
        self.num_workers = max(1, num_workers)
        self.batch_size = max(1, batch_size)
        self.streams_per_worker = max(1, backend.streams_per_worker)
        self.query_timeout_s = query_timeout_s
        self.progress = progress          # optional tqdm-like object, .update(n)
        if pin_cpu is not None:
            check_pin_cpu(type(backend), pin_cpu)
        self.pin_cpu = pin_cpu
        self._unpin: tuple[int, set[int]] | None = None   # (issuing thread, its CPUs before the pin)
        self.records = RequestLog()       # completed queries
        self._seq = itertools.count()
        self.errors: list[str] = []
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # C-implemented: the hot path at 10k+ QPS
        self._lock = threading.Lock()
        self._inflight: dict[int, _InFlight] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._gc_was_enabled = False
        self._failed_ids = [min(backend.eos_token_ids) if backend.eos_token_ids else NO_TOKEN_ID]
        self._interrupted = False

    # ---- LoadGen callbacks -------------------------------------------------------------
    def issue_queries(self, query_samples) -> None:
        if self.pin_cpu is not None and self._unpin is None:  # LoadGen's issuing thread, first call
            self._unpin = (threading.get_ident(), os.sched_getaffinity(0))
            os.sched_setaffinity(0, {self.pin_cpu})          # 0: the calling thread only
        # No lock on LoadGen's issuing thread, so it never waits for a worker: a list append and
        # a dict insert are atomic under the GIL, and the watchdog reads a copy of the table.
        now = time.perf_counter()
        items = []
        for qs in query_samples:
            item = _InFlight(next(self._seq), qs.index, qs.id, len(self.prompts[qs.index]), now)
            self._inflight[qs.id] = item  # for the watchdog and interrupt()
            items.append(item)
        if self._interrupted:
            self._complete([(item, [], INTERRUPTED) for item in items])
        elif self.streaming:
            for item in items:
                self._queue.put(item)
        else:
            items.sort(key=lambda it: it.n_input)
            for i in range(0, len(items), self.batch_size):
                self._queue.put(items[i:i + self.batch_size])

    def flush_queries(self) -> None:
        pass

    # ---- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        # Python's cyclic garbage collector pauses every thread while it walks all live objects,
        # and the hot path makes thousands per second: at 20k QPS (when each request was kept as
        # an object) its collections alone pushed TTFT p99 from 1 ms to over 100 ms. The hot path
        # makes no reference cycles (reference counting frees everything), so the collector is
        # off while LoadGen runs.
        gc.collect()
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        work = self._stream_worker if self.streaming else self._batch_worker

        def target():
            if self.pin_cpu is not None:
                os.sched_setaffinity(0, {self.pin_cpu})
            work()

        for i in range(self.num_workers):
            t = threading.Thread(target=target, name=f"sut-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.query_timeout_s > 0:
            t = threading.Thread(target=self._watchdog, name="sut-watchdog", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, join_timeout_s: float = 30.0) -> bool:
        """Stop the workers; whether they all ended. Every query is complete (LoadGen has
        returned, or interrupt() completed them); a worker stuck in a hung backend call is a
        daemon thread and is left behind after join_timeout_s."""
        self._stopping.set()
        if self._unpin is not None and self._unpin[0] == threading.get_ident():
            os.sched_setaffinity(0, self._unpin[1])   # LoadGen issued from this thread (its own thread ends)
        if self._gc_was_enabled:
            gc.enable()
        for _ in range(self.num_workers):
            self._queue.put(_STOP)
        deadline = time.monotonic() + join_timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("thread %s did not stop within %.0f s (backend call still running)",
                            t.name, join_timeout_s)
        return not any(t.is_alive() for t in self._threads)

    def interrupt(self) -> None:
        """Complete every outstanding query as failed, and from now on every new one at issue
        (see the module docstring); harness/runner.py calls it on the first Ctrl-C or SIGTERM."""
        self._interrupted = True
        outstanding = list(self._inflight.copy().values())
        log.warning("interrupted: %d outstanding queries completed as failed", len(outstanding))
        self._complete([(item, [], INTERRUPTED) for item in outstanding])

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    # ---- completion --------------------------------------------------------------------
    def _complete(self, finished: list[tuple[_InFlight, list[int], str | None]]) -> None:
        """Report finished queries (item, ids, error or None) to LoadGen, each exactly once:
        items already completed (by the watchdog, or by a worker before it) are skipped."""
        now = time.perf_counter()
        firsts, finals = [], []
        with self._lock:
            for item, ids, error in finished:
                if item.done:
                    continue
                item.done = True
                self._inflight.pop(item.query_id, None)
                if error is None and not ids:
                    error = EMPTY_REPLY
                if error is not None:
                    ids = item.ids or self._failed_ids  # keep a first token already sent to LoadGen
                    self.errors.append(f"sample {item.sample_index}: {error}")
                    if error != INTERRUPTED:  # interrupt() logs those once
                        log.error("query for sample %d failed: %s", item.sample_index, error)
                if item.t_first is None and ids:  # nothing streamed: the whole answer arrives now
                    item.t_first = now
                    item.chunks += (now, len(ids))
                    if self.streaming:
                        firsts.append((item, ids[:1]))
                self.records.add(item.seq, item.sample_index, item.query_id, item.n_input, len(ids), item.t_issued,
                                 item.t_dispatch, item.t_first, now, item.chunks, error)
                finals.append((item, ids))
        _report(lg.FirstTokenComplete, firsts)  # LoadGen needs a query's first token before its end
        _report(lg.QuerySamplesComplete, finals)
        if self.progress is not None and finals:
            self.progress.update(len(finals))

    # ---- workers -----------------------------------------------------------------------
    def _take(self, limit: int) -> list | None:
        """Wait for a queued item, then take up to limit - 1 more of those already queued, but
        no more than this worker's share of them. None: stop."""
        item = self._queue.get()
        if item is _STOP:
            return None
        items = [item]
        for _ in range(min(limit - 1, self._queue.qsize() // self.num_workers)):
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:  # another worker's: leave it for that one
                self._queue.put(item)
                break
            items.append(item)
        return items

    def _batch_worker(self) -> None:
        while (batch := self._queue.get()) is not _STOP:
            if self._interrupted:
                self._complete([(item, [], INTERRUPTED) for item in batch])
                continue
            dispatched = time.perf_counter()
            for item in batch:
                item.t_dispatch = dispatched
            try:
                outs = self.backend.generate([self.prompts[it.sample_index] for it in batch])
                if len(outs) != len(batch):
                    raise RuntimeError(f"backend returned {len(outs)} outputs for {len(batch)} prompts")
            except Exception as e:  # noqa: BLE001 - any backend failure must still complete the queries
                outs = [e] * len(batch)
            self._complete([(item, [], f"{type(out).__name__}: {out}") if isinstance(out, BaseException)
                            else (item, list(out), None) for item, out in zip(batch, outs)])

    def _stream_worker(self) -> None:
        while (items := self._take(self.streams_per_worker)) is not None:
            if self._interrupted:
                self._complete([(item, [], INTERRUPTED) for item in items])
                continue
            streams, ended = self._first_chunks(items)
            ended += [self._rest(item, stream) for item, stream in streams]
            self._complete(ended)

    def _first_chunks(self, items: list[_InFlight]) -> tuple[list, list]:
        """Start each query's stream and wait for its first ids; the first tokens go to LoadGen in
        one call. Returns the streams that go on and the queries that ended (item, ids, error)."""
        going, ended = [], []
        for item in items:
            item.t_dispatch = time.perf_counter()
            try:
                stream = iter(self.backend.stream(self.prompts[item.sample_index]))
                chunk = next(stream, None)
                while chunk is not None and not chunk:  # empty chunks carry nothing
                    chunk = next(stream, None)
            except Exception as e:  # noqa: BLE001 - any backend failure must still complete the query
                ended.append((item, [], f"{type(e).__name__}: {e}"))
                continue
            if chunk is None:
                ended.append((item, [], None))
            else:
                going.append((item, stream, chunk, time.perf_counter()))
        firsts = []
        with self._lock:  # the watchdog may complete a query meanwhile; it then sees the first token
            for item, _, chunk, now in going:
                if not item.done:
                    item.t_first = now
                    firsts.append((item, chunk[:1]))
                    self._add_chunk(item, chunk, now)
            _report(lg.FirstTokenComplete, firsts)
        return [(item, stream) for item, stream, _, _ in going if not item.done], ended

    def _rest(self, item: _InFlight, stream: Iterator[list[int]]) -> tuple[_InFlight, list[int], str | None]:
        """The rest of a query's stream: (item, ids, error) for _complete."""
        try:
            for chunk in stream:
                now = time.perf_counter()
                with self._lock:
                    if item.done:  # completed by the watchdog
                        break
                    self._add_chunk(item, chunk, now)
        except Exception as e:  # noqa: BLE001
            return item, [], f"{type(e).__name__}: {e}"
        return item, item.ids, None

    @staticmethod
    def _add_chunk(item: _InFlight, chunk: list[int], now: float) -> None:
        if chunk:
            item.ids.extend(chunk)
            item.chunks += (now, len(chunk))

    def _watchdog(self) -> None:
        while not self._stopping.wait(0.2):
            now = time.perf_counter()
            late = [it for it in self._inflight.copy().values()
                    if now - it.t_issued > self.query_timeout_s]
            self._complete([(it, [], f"timed out after {self.query_timeout_s:g} s") for it in late])
