"""The short run summary printed at the end of main.py (LoadGen's own 80-line summary stays in
mlperf_log_summary.txt; `main.py --print-loadgen-summary` echoes it too).

    Server performance: backend llamacpp, 18 queries in 31.2 s
    Status: ok (18 of 18 queries answered)
    LoadGen: INVALID
      - early stopping (TPOT): 18 queries processed, at least 441 more needed ...
    Throughput: 0.57 req/s, 19.2 output tok/s (LoadGen: 0.57 samples/s, 19.2 tok/s)
    Latency (ms)      p50      p90      p99     mean
      TTFT ...
"""
from __future__ import annotations

import re
from typing import Any

from harness.results import fmt_num

# LoadGen's early-stopping text: "Processed 18 queries. Would need to run at least 441 more queries"
DISPATCH_KEYS = ("ttft_from_dispatch_ms", "queue_ms")
_EARLY_STOP = re.compile(r"Processed (\d+) queries\.\s*Would need to run at least (\d+) more")


def loadgen_reasons(lg: dict[str, Any]) -> list[str]:
    """Why LoadGen called a run INVALID, one plain sentence each, with what would fix it."""
    reasons = []
    params = lg.get("test_parameters") or {}
    for name, flag in (("min duration", "min_duration_met"), ("min query count", "min_queries_met")):
        if lg.get(flag) is False:
            fix = "--min-duration" if name == "min duration" else "--min-query-count"
            reasons.append(f"{name} not reached (LoadGen's settings; {fix} or user.conf sets it)")
    if lg.get("perf_constraints_met") is False:
        limits = []
        for kind in ("ttft", "tpot"):
            limit_ns = params.get(f"{kind}_latency_ns")
            p99 = (lg.get(f"{kind}_ms") or {}).get("p99")
            if limit_ns and p99 is not None and p99 > limit_ns / 1e6:
                limits.append(f"{kind.upper()} p99 {fmt_num(p99)} ms > limit {fmt_num(limit_ns / 1e6)} ms")
        reasons.append("latency constraint not met" + (f" ({'; '.join(limits)})" if limits else "")
                       + ": lower the target QPS (--target-qps)")
    for kind, text in (lg.get("early_stopping") or {}).items():
        m = _EARLY_STOP.search(text or "")
        if m:
            done, more = int(m.group(1)), int(m.group(2))
            reasons.append(f"early stopping ({kind.upper()}): {done} queries processed; the p99 bound needs at "
                           f"least {done + more} with every extra one under the latency limit "
                           f"(--min-query-count {done + more})")
        elif "unsuccessful" in (text or "").lower():
            reasons.append(f"early stopping ({kind.upper()}): {text}")
    if not reasons:  # LoadGen said INVALID for a reason not covered above: show its own words
        reasons = list(lg.get("invalid_reasons") or ["(no reason given)"])
    return reasons


def run_summary(results: dict[str, Any]) -> str:
    run, lg, rq = results.get("run") or {}, results.get("loadgen") or {}, results.get("requests") or {}
    backend = run.get("backend") or {}
    lines = [f"{run.get('scenario', '?')} {run.get('mode', '?')}: backend {backend.get('backend', '?')}, "
             f"{rq.get('count', 0)} queries in {fmt_num(rq.get('duration_s'))} s"]
    status = run.get("status", "?")
    if status == "ok":
        lines.append(f"Status: ok ({rq.get('completed', 0)} of {rq.get('count', 0)} queries answered)")
    else:  # above LoadGen's verdict, which counts no failed query
        lines.append(f"RUN {str(status).upper()}: " + "; ".join(run.get("status_reasons") or []))
        lines += [f"  LoadGen error x{n}: {e}" for e, n in (run.get("loadgen_errors") or {}).items()]
        for error, n in (rq.get("error_messages") or {}).items():
            lines.append(f"  failed query x{n}: {error}")

    if "error" in lg:
        lines.append(f"LoadGen: no figures ({lg['error']})")
    elif lg.get("mode") == "AccuracyOnly":
        lines.append("LoadGen: accuracy mode, no performance verdict (score it with evaluation.py)")
    else:
        lines.append(f"LoadGen result: {lg.get('result') or '?'}")
        if lg.get("result") == "INVALID":
            lines += [f"  - {r}" for r in loadgen_reasons(lg)]

    lines.append(f"Throughput: {fmt_num(rq.get('requests_per_s'))} req/s, "
                 f"{fmt_num(rq.get('output_tokens_per_s'))} output tok/s"
                 + (f" (LoadGen: {fmt_num(lg.get('samples_per_s'))} samples/s, "
                    f"{fmt_num(lg.get('tokens_per_s'))} tok/s)" if lg.get("samples_per_s") is not None else ""))
    lines.append(f"{'Latency (ms)':14}" + "".join(f"{h:>10}" for h in ("p50", "p90", "p99", "mean")))
    for name, key in (("TTFT", "ttft_ms"), ("  dispatched", "ttft_from_dispatch_ms"), ("  queued", "queue_ms"),
                      ("TPOT", "tpot_ms"), ("ITL", "itl_ms"), ("E2E", "e2e_ms")):
        if key in DISPATCH_KEYS and key not in rq:  # results written before dispatch times were kept
            continue
        dist = rq.get(key) or {}
        lines.append(f"  {name:12}" + "".join(f"{fmt_num(dist.get(s)):>10}" for s in ("p50", "p90", "p99", "mean")))
    lg_ttft = lg.get("ttft_ms") or {}
    if lg_ttft.get("p50") is not None:
        lines.append(f"  (TTFT and E2E from when the SUT received each query; 'dispatched': TTFT from when a worker "
                     f"handed it to the backend, as vLLM's --max-concurrency and GuideLLM measure; 'queued': the wait "
                     f"in between. LoadGen times from each query's scheduled issue: TTFT p50 "
                     f"{fmt_num(lg_ttft.get('p50'))}, p99 {fmt_num(lg_ttft.get('p99'))})")
    spec = backend.get("speculative")
    if spec:
        drafter = spec.get("draft_model") or spec.get("kind", "?")
        rate = spec.get("acceptance_rate")
        lines.append(f"Speculative ({drafter}, K={spec.get('num_draft_tokens')}): draft acceptance "
                     f"{fmt_num(None if rate is None else 100 * rate)}%, "
                     f"{fmt_num(spec.get('mean_accepted_per_step'))} accepted/step over {spec.get('steps', 0)} "
                     f"steps (draft {fmt_num(spec.get('draft_s'))} s, verify {fmt_num(spec.get('verify_s'))} s)")
    gp = results.get("goodput")
    if gp:
        slo = ", ".join(f"{k}<={v:g}ms" for k, v in gp["slo_ms"].items())
        lines.append(f"Goodput ({slo}): {fmt_num(100 * gp['fraction'] if gp['fraction'] is not None else None)}%"
                     f" of requests, {fmt_num(gp['requests_per_s'])} req/s")
    agg = (results.get("sysmetrics") or {}).get("aggregates") or {}
    if agg.get("gpu_joules_per_output_token") is not None:
        lines.append(f"GPU energy: {fmt_num(agg['gpu_energy_j'])} J, "
                     f"{fmt_num(agg['gpu_joules_per_output_token'])} J/output token"
                     + (f" (power limit {fmt_num(agg['gpu0_power_limit_w'])} W)"
                        if agg.get("gpu0_power_limit_w") is not None else ""))
    return "\n".join(lines)
