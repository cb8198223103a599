"""Harness overhead: our SUTs with the null backend vs a bare LoadGen SUT that answers inline.

Server: for each target QPS, a run of each SUT; prints completed QPS, TTFT p99 and LoadGen's
verdict. Goal: ours sustains >= 50% of the bare QPS with TTFT p99 < 5 ms. --bare-qps adds runs
of the bare SUT alone, to find its maximum without waiting for ours to drain a saturated run.
--coalesce turns on LoadGen's server_coalesce_queries (user.conf: *.Server.coalesce_queries = 1)
for both SUTs: when LoadGen's issuing thread is late it issues every query already due in one
call, each still timed from its own scheduled time. --pin-cpu N runs our SUT with pin_cpu=N
(LoadGen's issuing thread and our worker on CPU N, main.py --pin-cpu); the bare SUT, whose one
thread hands the GIL to no other, is left unpinned.
Memory: every Server run also prints the peak growth of the process's resident memory during
LoadGen's test, per issued query (/proc/self/status VmHWM after the run minus VmRSS before it,
the peak reset through /proc/self/clear_refs and freed heap handed back with malloc_trim first).
The bare SUT's figure is what LoadGen itself holds per query; ours minus bare is what our SUT
adds (records, queue, in-flight state). Linux only; elsewhere the column says n/a.
CPU: every Server run also prints the process's CPU time (user + system, every thread: LoadGen's
and ours) per issued query. On a busy machine it varies far less than TTFT p99 does, so it shows
a change in the per-query work that the latency figures would hide in their noise.
Offline: 24,576 samples through our Offline SUT; prints the wall time.

    python benchmarks/null_server.py --qps 5000 10000 20000 --bare-qps 80000 160000 --duration-ms 10000
"""
from __future__ import annotations

import argparse
import array
import ctypes
import ctypes.util
import gc
import os
import re
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mlperf_loadgen as lg  # noqa: E402

from backends.base import GenerationParams  # noqa: E402
from backends.null import NullBackend  # noqa: E402
from SUT_offline import SUT  # noqa: E402
from SUT_server import SUTServer  # noqa: E402

N_TOKENS = 32
TTFT_P99 = r"99.00 percentile first token latency \(ns\)"


class TinyDataset:
    def __init__(self, n):
        self.input_ids = [[3 + i % 100, 5, 6] for i in range(n)]
        self.total_sample_count = self.perf_count = n

    def LoadSamplesToRam(self, s):  # noqa: N802
        pass

    def UnloadSamplesFromRam(self, s):  # noqa: N802
        pass


def settings_for(scenario, qps, duration_ms, min_queries, coalesce=False):
    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, scenario)
    # llama2-70b's token-latency settings, set directly: LoadGen reads its embedded mlperf.conf
    # only on the first FromConfig call of a process, and this script makes several runs.
    s.use_token_latencies = True
    s.ttft_latency = int(2e9)
    s.tpot_latency = int(2e8)
    s.mode = lg.TestMode.PerformanceOnly
    s.min_duration_ms = duration_ms
    s.min_query_count = min_queries
    if scenario == "Server":
        s.server_target_qps = qps
        s.server_coalesce_queries = coalesce
    else:
        s.offline_expected_qps = qps
    return s


def run_loadgen(issue, flush, n_samples, settings, qsl=None):
    out = tempfile.mkdtemp(prefix="lg-bench-")
    lo = lg.LogOutputSettings()
    lo.outdir = out
    ls = lg.LogSettings()
    ls.log_output = lo
    ls.enable_trace = False
    sut = lg.ConstructSUT(issue, flush)
    own_qsl = qsl is None
    if own_qsl:
        qsl = lg.ConstructQSL(n_samples, n_samples, lambda x: None, lambda x: None)
    t0 = time.perf_counter()
    lg.StartTestWithLogSettings(sut, qsl, settings, ls, "audit.conf-none")
    wall = time.perf_counter() - t0
    lg.DestroySUT(sut)
    if own_qsl:
        lg.DestroyQSL(qsl)
    text = open(os.path.join(out, "mlperf_log_summary.txt")).read()
    return text, wall


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def memory_baseline():
    """Resident bytes now, after handing freed heap back to the OS and resetting the peak (Linux);
    None where that is not possible. Without the trim, memory freed by an earlier run would be
    reused without showing as growth."""
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: reset the peak resident set size (VmHWM) to the current one
        return _status_kb("VmRSS") * 1024
    except (OSError, AttributeError):
        return None


def peak_growth_per_query(baseline, queries):
    """Peak resident growth since memory_baseline(), in bytes per query (None: not measurable)."""
    if baseline is None or not queries:
        return None
    return (_status_kb("VmHWM") * 1024 - baseline) / queries


def cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def figure(text, pattern):
    m = re.search(pattern + r"\s*:\s*([\d.]+)", text)
    return float(m.group(1)) if m else float("nan")


def bare_issue(issued):
    tokens = array.array("i", [7] * N_TOKENS)
    ptr, n = tokens.buffer_info()
    first = array.array("i", [7])
    fptr, _ = first.buffer_info()

    def issue(qs):
        issued[0] += len(qs)
        lg.FirstTokenComplete([lg.QuerySampleResponse(q.id, fptr, 4, 1) for q in qs])
        lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, ptr, n * 4, n) for q in qs])
    return issue


def ours(scenario, n_samples, workers, batch_size=64, pin_cpu=None):
    backend = NullBackend(params=GenerationParams(max_new_tokens=N_TOKENS), options={"tokens": str(N_TOKENS)})
    backend.load()
    cls = SUTServer if scenario == "Server" else SUT
    sut = cls(backend, TinyDataset(n_samples), batch_size=batch_size, workers=workers, pin_cpu=pin_cpu)
    return sut


def run_server(qps, with_ours, args):
    """One Server run; (completed QPS, TTFT p99 in ms, VALID, peak memory growth in bytes per query,
    CPU time in microseconds per query)."""
    settings = settings_for("Server", qps, args.duration_ms, 100, args.coalesce)
    if not with_ours:
        issued = [0]
        baseline = memory_baseline()
        cpu0 = cpu_s()
        text, _ = run_loadgen(bare_issue(issued), lambda: None, args.samples, settings)
        cpu, n = cpu_s() - cpu0, issued[0]
        per_query = peak_growth_per_query(baseline, n)
    else:
        sut = ours("Server", args.samples, args.workers, pin_cpu=args.pin_cpu)
        baseline = memory_baseline()
        cpu0 = cpu_s()
        sut.start()
        text, _ = run_loadgen(sut.issue_queries, sut.flush_queries, args.samples, settings, sut.qsl)
        sut.stop()
        cpu, n = cpu_s() - cpu0, len(sut.core.records)
        per_query = peak_growth_per_query(baseline, n)  # records still held: counted
        del sut  # its records go before the next run
    return (figure(text, "Completed samples per second"), figure(text, TTFT_P99) / 1e6,
            "Result is : VALID" in text, per_query, 1e6 * cpu / n if n else float("nan"))


def highest_under(p99s, bound_ms):
    """The highest target QPS up to which every target's median TTFT p99 is under the bound."""
    best = 0.0
    for qps in sorted(p99s):
        if statistics.median(p99s[qps]) >= bound_ms:
            break
        best = qps
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--qps", type=float, nargs="+", default=[5000, 10000, 20000])
    ap.add_argument("--bare-qps", type=float, nargs="*", default=[], help="target QPS for the bare SUT only")
    ap.add_argument("--duration-ms", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each SUT at each target, interleaved")
    ap.add_argument("--bound-ms", type=float, default=5.0, help="TTFT p99 bound for the summary")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--pin-cpu", type=int, default=None, help="our SUT's pin_cpu (the bare SUT is not pinned)")
    ap.add_argument("--coalesce", action="store_true", help="LoadGen's server_coalesce_queries, for both SUTs")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    print(f"\nServer scenario, null backend, {N_TOKENS} tokens per response, {args.duration_ms} ms per run, "
          f"server_coalesce_queries {'on' if args.coalesce else 'off'}, our SUT pinned to CPU "
          f"{args.pin_cpu if args.pin_cpu is not None else '(none)'}, {args.repeats} run(s) each")
    print("| repeat | target QPS | SUT | completed QPS | TTFT p99 (ms) | result | peak RSS growth (B/query) "
          "| CPU (us/query) |")
    print("|---|---|---|---|---|---|---|---|")
    plan = [(q, True) for q in args.qps] + [(q, False) for q in args.bare_qps]
    our_name = f"ours ({args.workers} worker{', pinned' if args.pin_cpu is not None else ''})"
    p99s = {"bare LoadGen": {}, our_name: {}}
    memory = {"bare LoadGen": {}, our_name: {}}
    cpu_us = {"bare LoadGen": {}, our_name: {}}
    for rep in range(1, args.repeats + 1):
        for qps, with_ours in plan:
            for name, is_ours in [("bare LoadGen", False)] + ([(our_name, True)] if with_ours else []):
                done, p99, valid, per_query, us = run_server(qps, is_ours, args)
                p99s[name].setdefault(qps, []).append(p99)
                cpu_us[name].setdefault(qps, []).append(us)
                if per_query is not None:
                    memory[name].setdefault(qps, []).append(per_query)
                mem = "n/a" if per_query is None else f"{per_query:.0f}"
                print(f"| {rep} | {qps:g} | {name} | {done:.0f} | {p99:.2f} | {'VALID' if valid else 'INVALID'} "
                      f"| {mem} | {us:.1f} |", flush=True)

    print(f"\nMedian TTFT p99 (ms) over the runs; highest target with median under {args.bound_ms:g} ms:")
    ceiling = {name: highest_under(by_qps, args.bound_ms) for name, by_qps in p99s.items()}
    for name, by_qps in p99s.items():
        cells = ", ".join(f"{q:g}: {statistics.median(v):.2f}" for q, v in sorted(by_qps.items()))
        print(f"  {name}: {cells} -> {ceiling[name]:g}")
    if ceiling["bare LoadGen"]:
        print(f"  ours / bare = {ceiling[our_name] / ceiling['bare LoadGen']:.0%} (goal: >= 50%)")
    print("\nMedian peak RSS growth (bytes per query) at the targets both SUTs ran:")
    for qps in sorted(set(memory["bare LoadGen"]) & set(memory[our_name])):
        bare, our = (statistics.median(memory[n][qps]) for n in ("bare LoadGen", our_name))
        print(f"  {qps:g} QPS: bare LoadGen {bare:.0f}, ours {our:.0f}, ours - bare {our - bare:.0f} "
              f"(goal: <= 200)")
    print("\nMedian CPU time (us per query, all threads):")
    for name, by_qps in cpu_us.items():
        print(f"  {name}: " + ", ".join(f"{q:g}: {statistics.median(v):.1f}" for q, v in sorted(by_qps.items())))

    n = 24576
    sut = ours("Offline", n, workers=1, batch_size=1024)
    settings = settings_for("Offline", 1e6, 0, n)
    sut.start()
    text, wall = run_loadgen(sut.issue_queries, sut.flush_queries, n, settings, sut.qsl)
    sut.stop()
    print(f"\nOffline, null backend: {n} samples issued, completed in {wall:.2f} s "
          f"({figure(text, 'Samples per second'):.0f} samples/s by LoadGen)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
