"""The part of the System-Under-Test shared by the Offline and Server scenarios.

LoadGen calls issue_queries() from its own thread; we queue the samples and worker threads
run them on the backend, then report back:

- Offline (streaming=False): workers take batches of up to `batch_size` samples (sorted by prompt
  length, so a batching backend pads little) and call backend.generate().
- Server (streaming=True): each worker takes one sample and iterates backend.stream(); the first
  generated id goes to lg.FirstTokenComplete as soon as it exists, and the whole response
  (first token included) to lg.QuerySamplesComplete with n_tokens = number of ids.

Every query LoadGen issues is completed exactly once, also when the backend raises or hangs:
a failed query is answered with the ids streamed before the failure, or else a one-token EOS
response (empty when the backend has no EOS); its error is recorded and the run is marked failed. With `query_timeout_s` a watchdog
completes queries that run too long, so the run ends in bounded time.
"""
from __future__ import annotations

import array
import gc
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import mlperf_loadgen as lg

from backends.base import Backend
from harness.records import RequestRecord

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class _InFlight:
    """One issued query; `done` guards against completing it twice (worker vs watchdog)."""
    sample: object          # lg.QuerySample (id, index)
    record: RequestRecord
    done: bool = False
    ids: list = field(default_factory=list)   # ids streamed so far (Server); the first one went to LoadGen


class SUTCore:
    def __init__(self, backend: Backend, prompts: list[list[int]], streaming: bool, num_workers: int = 1,
                 batch_size: int = 1, query_timeout_s: float = 0.0, progress=None):
        self.backend = backend
        self.prompts = prompts
        self.streaming = streaming
        self.num_workers = max(1, num_workers)
        self.batch_size = max(1, batch_size)
        self.query_timeout_s = query_timeout_s
        self.progress = progress          # optional tqdm-like object, .update(n)
        self.records: list[RequestRecord] = []
        self.errors: list[str] = []
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # C-implemented: the hot path at 10k+ QPS
        self._lock = threading.Lock()
        self._inflight: dict[int, _InFlight] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._gc_was_enabled = False
        fallback = min(backend.eos_token_ids) if backend.eos_token_ids else None
        self._failed_ids = [] if fallback is None else [fallback]

    # ---- LoadGen callbacks -------------------------------------------------------------
    def issue_queries(self, query_samples) -> None:
        now = time.perf_counter()
        items = []
        watched = self.query_timeout_s > 0  # only the watchdog needs the in-flight table
        with self._lock:
            for qs in query_samples:
                rec = RequestRecord(sample_index=qs.index, query_id=qs.id,
                                    n_input=len(self.prompts[qs.index]), t_issued=now)
                item = _InFlight(qs, rec)
                if watched:
                    self._inflight[qs.id] = item
                self.records.append(rec)
                items.append(item)
        if self.streaming:
            for item in items:
                self._queue.put(item)
        else:
            items.sort(key=lambda it: it.record.n_input)
            for i in range(0, len(items), self.batch_size):
                self._queue.put(items[i:i + self.batch_size])

    def flush_queries(self) -> None:
        pass

    # ---- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        # Python's cyclic garbage collector pauses every thread while it walks all live objects,
        # and the per-request records grow by thousands per second: at 20k QPS its collections
        # alone pushed TTFT p99 from 1 ms to over 100 ms. The hot path makes no reference cycles
        # (reference counting frees everything), so the collector is off while LoadGen runs.
        gc.collect()
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        target = self._stream_worker if self.streaming else self._batch_worker
        for i in range(self.num_workers):
            t = threading.Thread(target=target, name=f"sut-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.query_timeout_s > 0:
            t = threading.Thread(target=self._watchdog, name="sut-watchdog", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, join_timeout_s: float = 30.0) -> None:
        """Stop the workers. LoadGen has returned, so every query is complete; a worker stuck in
        a hung backend call is a daemon thread and is left behind after join_timeout_s."""
        self._stopping.set()
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

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    # ---- completion --------------------------------------------------------------------
    def _send_first(self, item: _InFlight, token: int) -> None:
        buf = array.array("i", [token])
        ptr, _ = buf.buffer_info()
        lg.FirstTokenComplete([lg.QuerySampleResponse(item.sample.id, ptr, 4, 1)])

    def _complete(self, item: _InFlight, ids: list[int], error: str | None = None) -> None:
        """Report one query to LoadGen exactly once (later calls for it are ignored)."""
        with self._lock:
            if item.done:
                return
            item.done = True
            self._inflight.pop(item.sample.id, None)
            if error is not None:
                self.errors.append(f"sample {item.sample.index}: {error}")
        now = time.perf_counter()
        rec = item.record
        if error is not None:
            ids = item.ids or self._failed_ids  # keep a first token already sent to LoadGen
            rec.error = error
            log.error("query for sample %d failed: %s", item.sample.index, error)
        if self.streaming and not item.ids and ids:  # nothing streamed yet: send the first token now
            self._send_first(item, ids[0])
        if rec.t_first is None and ids:
            rec.t_first = now
            rec.chunk_times.append(now)
            rec.chunk_sizes.append(len(ids))
        rec.t_done = now
        rec.n_output = len(ids)
        buf = array.array("i", ids)
        ptr, n = buf.buffer_info()
        lg.QuerySamplesComplete([lg.QuerySampleResponse(item.sample.id, ptr, n * buf.itemsize, n)])
        if self.progress is not None:
            self.progress.update(1)

    # ---- workers -----------------------------------------------------------------------
    def _batch_worker(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is _STOP:
                return
            try:
                outs = self.backend.generate([self.prompts[it.sample.index] for it in batch])
                if len(outs) != len(batch):
                    raise RuntimeError(f"backend returned {len(outs)} outputs for {len(batch)} prompts")
            except Exception as e:  # noqa: BLE001 - any backend failure must still complete the queries
                outs = [e] * len(batch)
            for item, out in zip(batch, outs):
                if isinstance(out, BaseException):
                    self._complete(item, [], error=f"{type(out).__name__}: {out}")
                else:
                    self._complete(item, list(out))

    def _stream_worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            rec = item.record
            try:
                for chunk in self.backend.stream(self.prompts[item.sample.index]):
                    if not chunk:
                        continue
                    now = time.perf_counter()
                    with self._lock:  # the watchdog may complete the query meanwhile
                        if item.done:
                            break
                        if not item.ids:
                            rec.t_first = now
                            self._send_first(item, chunk[0])
                        item.ids.extend(chunk)
                    rec.chunk_times.append(now)
                    rec.chunk_sizes.append(len(chunk))
                self._complete(item, item.ids)
            except Exception as e:  # noqa: BLE001
                self._complete(item, [], error=f"{type(e).__name__}: {e}")

    def _watchdog(self) -> None:
        while not self._stopping.wait(0.2):
            now = time.perf_counter()
            with self._lock:
                late = [it for it in self._inflight.values()
                        if now - it.record.t_issued > self.query_timeout_s]
            for it in late:
                self._complete(it, [], error=f"timed out after {self.query_timeout_s:g} s")
