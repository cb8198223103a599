"""Offline scenario SUT: LoadGen issues every sample at once; we run them in batches.

The threading and completion logic is shared with the Server SUT in harness/core.py.
"""
from __future__ import annotations

import mlperf_loadgen as lg

from backends.base import Backend
from dataset import Dataset
from harness.core import SUTCore


class SUT:
    """Holds the QSL and a SUTCore; `issue_queries`/`flush_queries` are LoadGen's callbacks."""

    streaming = False

    def __init__(self, backend: Backend, dataset: Dataset, batch_size: int = 1, workers: int = 1,
                 query_timeout_s: float = 0.0, progress=None, pin_cpu: int | None = None):
        self.data_object = dataset
        self.qsl = lg.ConstructQSL(dataset.total_sample_count, dataset.perf_count,
                                   dataset.LoadSamplesToRam, dataset.UnloadSamplesFromRam)
        self.core = SUTCore(backend, dataset.input_ids, streaming=self.streaming, num_workers=workers,
                            batch_size=batch_size, query_timeout_s=query_timeout_s, progress=progress,
                            pin_cpu=pin_cpu)

    def start(self) -> None:
        self.core.start()

    def stop(self, join_timeout_s: float = 30.0) -> bool:
        return self.core.stop(join_timeout_s)

    def issue_queries(self, query_samples) -> None:
        self.core.issue_queries(query_samples)

    def flush_queries(self) -> None:
        self.core.flush_queries()
