"""Per-request records and the latency metrics derived from them.

Definitions follow vLLM's benchmarks and GuideLLM:
- TTFT = time of the first generated token - time the query was issued;
- E2E  = time of the last token - time issued;
- TPOT = (E2E - TTFT) / (n_out - 1), undefined for one-token outputs;
- ITL  = gaps between successive token arrivals (a chunk of k tokens arriving at once counts
  as one gap followed by k-1 zero gaps, so len(ITL) == n_out - 1).
Times are seconds from time.perf_counter().
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)  # one per query, made on LoadGen's issuing thread: slots make it cheaper
class RequestRecord:
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

    def as_row(self) -> dict:
        """Flat dict for CSV/parquet (seconds)."""
        return {"sample_index": self.sample_index, "query_id": self.query_id, "n_input": self.n_input,
                "n_output": self.n_output, "ttft_s": self.ttft, "tpot_s": self.tpot, "e2e_s": self.e2e,
                "error": self.error}
