"""Replies a hostile or broken OpenAI-compatible server may send, from a real server on loopback
(FakeServer): a gzip bomb and one endless line must fail their query without growing the process
(its RSS is measured with psutil while the reply arrives), and replies that break the protocol
(two choices, bytes that are not UTF-8, a usage count that disagrees with the ids sent) fail their
query with the reason. Each time the next query on the same backend is answered as usual."""
from __future__ import annotations

import threading
import time

import psutil
import pytest

from backends.openai_client import MAX_REPLY_BYTES, RequestError
from tests.servers import FakeServer, fake_answer
from tests.test_openai import loaded

BAD, GOOD = [5, 6, 7], [9, 8]          # prompts: the fault is set for the first id of BAD
# Growth of the process allowed while a 256 MiB reply arrives; the cap is 16 MiB decompressed.
RSS_LIMIT_MB = 100


class PeakRSS:
    """The highest RSS of this process while the block runs, sampled every 5 ms."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


@pytest.fixture(scope="module")
def srv():
    with FakeServer() as s:
        yield s


@pytest.fixture(scope="module")
def backend(srv):
    be = loaded([srv.url], failover=False, timeout_s=10, deadline_s=20, deadline_per_token_s=0)
    yield be
    be.close()


def run_one(be, stream: bool, prompt: list[int]):
    """The output ids of one query, or its exception."""
    if not stream:
        return be.generate([prompt])[0]
    try:
        return [t for ids in be.stream(prompt) for t in ids]
    except RequestError as e:
        return e


def still_answers(be, stream: bool) -> None:
    assert run_one(be, stream, GOOD) == fake_answer(GOOD, 8)


@pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
@pytest.mark.parametrize("mode", ["gzip_bomb", "endless_line"])
def test_huge_replies_fail_the_query_in_bounded_memory(srv, backend, mode, stream):
    srv.mode_for = {BAD[0]: mode}
    t0 = time.monotonic()
    with PeakRSS() as rss:
        out = run_one(backend, stream, BAD)
    assert rss.growth_mb < RSS_LIMIT_MB, f"RSS grew {rss.growth_mb:.0f} MB"
    assert isinstance(out, RequestError), out
    assert f"reply larger than {MAX_REPLY_BYTES} bytes decompressed" in str(out)
    assert time.monotonic() - t0 < 15
    still_answers(backend, stream)


@pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
@pytest.mark.parametrize("mode, reason", [
    ("two_choices", r"choices? .*where one (choice )?was asked for"),
    ("bad_utf8", "not UTF-8"),
    ("bad_usage", "usage.completion_tokens is 13 but 8 token ids were sent"),
    ("bad_shape", "not a completion"),
])
def test_protocol_breaks_fail_the_query_with_the_reason(srv, backend, mode, reason, stream):
    srv.mode_for = {BAD[0]: mode}
    out = run_one(backend, stream, BAD)
    assert isinstance(out, RequestError), out
    assert "reply breaks the protocol" in str(out)
    import re
    assert re.search(reason, str(out)), str(out)
    log = backend.request_log()[-1]
    assert log["error"] == str(out)        # the reason in requests.csv and results.json
    still_answers(backend, stream)


def test_max_reply_bytes_flag(srv, tmp_path):
    """main.py --max-reply-bytes sets the cap, which holds from the first request: a cap below the
    size of the server's model list stops the run at start-up with one error line."""
    from tests.helpers import run_main
    srv.mode_for = {}
    p = run_main("--backend", "openai", "--api-server", srv.url, "--max-reply-bytes", "64",
                 "--output-log-dir", str(tmp_path / "out"), timeout=60)
    assert p.returncode == 2, p.stderr[-2000:]
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert "reply larger than 64 bytes decompressed (--max-reply-bytes)" in line


@pytest.mark.parametrize("scenario", ["Offline", "Server"])
def test_main_run_goes_on_and_results_json_gives_each_reason(tmp_path, scenario):
    """One run where five of the eight samples meet a fault: LoadGen completes every query, the
    others are answered, and results.json counts each failure under its reason."""
    from tests.helpers import results, run_main, tiny_conf, tiny_dataset
    faults = ("two_choices", "bad_utf8", "bad_usage", "endless_line", "gzip_bomb")
    prompts = [[40 + i, 6, 7] for i in range(8)]
    with FakeServer() as srv:
        srv.mode_for = {40 + i: mode for i, mode in enumerate(faults)}
        srv.flood_bytes = 32 * 2**20
        out = tmp_path / "out"
        p = run_main("--backend", "openai", "--api-server", srv.url, "--scenario", scenario,
                     "--dataset-path", str(tiny_dataset(tmp_path / "d.pkl", prompts=prompts)),
                     "--user-conf", str(tiny_conf(tmp_path / "u.conf", n=8)), "--total-sample-count", "8",
                     "--max-new-tokens", "8", "--backend-arg", "failover=false", "--no-sysmetrics",
                     "--output-log-dir", str(out), timeout=120)
    assert (out / "results.json").exists(), p.stderr[-2000:]
    stats = results(out)["requests"]
    # Offline: each sample once; Server: 300 ms at 100 QPS, samples drawn from the eight.
    assert stats["completed"] > 0 and stats["errors"] > 0 and stats["count"] == stats["completed"] + stats["errors"]
    if scenario == "Offline":
        assert (stats["count"], stats["errors"]) == (8, 5), stats
    reasons = stats["error_messages"]
    assert sum(n for why, n in reasons.items() if "reply breaks the protocol" in why) == stats["errors"], reasons
    for why in ("was asked for", "not UTF-8", "usage.completion_tokens is 13 but 8",
                "reply larger than 16777216 bytes decompressed"):
        assert any(why in r for r in reasons), (why, reasons)
