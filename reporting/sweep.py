"""Throughput against latency over concurrency levels (or target QPS) and input/output lengths.

    python -m reporting.sweep --backend llamacpp --concurrency 1 2 4 8
    python -m reporting.sweep --backend openai --qps 0.5 1 2 4 --num-workers 16 \\
        -- --api-server http://127.0.0.1:8000 --api-model-name MODEL

For each length pair a synthetic dataset with exactly those lengths is made
(`python -m inputs.synthetic`) and every point runs as its own `python main.py` with
--ignore-eos, so each request produces exactly the output length:
- Server, --concurrency N: N workers (--num-workers) against a target QPS high enough
  (--target-qps, default 1000) that the workers, not the schedule, set the pace;
- Server, --qps Q1 Q2 ...: target QPS values with the workers of --num-workers;
- Offline, --concurrency N: batch size N.
Each point's LoadGen settings go in a user.conf written for it: the target QPS, min_duration
(--min-duration-ms, default 0) and min_query_count (--min-query-count, default the sample
count), so a point is as long as its queries; such short runs are INVALID for MLPerf, which is
fine for a sweep. The table (sweep.md, sweep.csv) and report.html land in --output-dir
(default: a new folder output-logs/sweep-BACKEND-DATE-TIME). Extra main.py flags go after `--`.

Latencies in sweep.csv (ttft_*, e2e_*) are measured from dispatch, the moment a worker hands the
request to the backend, as vLLM's --max-concurrency and GuideLLM's concurrent runs measure:
at --concurrency 1 every query is issued at once and waits in the SUT's queue for its turn, which
queue_p50_ms shows separately. loadgen_ttft_p99_ms is LoadGen's own figure, from its issue.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import sys
from pathlib import Path
from typing import Any

from common.errors import HarnessError, exit_on_error
from common.redact import RedactingArgumentParser
from common.times import stamp
from reporting.compare import fresh_output_dir, run_main, synthetic_dataset
from reporting.report import build_html, html_table, img_tag, line_chart, markdown_table, write_html

log = logging.getLogger(__name__)

# sweep.csv's columns: units in the names; ttft_* and e2e_* from dispatch (module docstring).
COLUMNS = ["input_len", "output_len", "concurrency", "target_qps", "requests", "failed", "output_tok_s",
           "requests_per_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "itl_p99_ms", "e2e_p50_ms",
           "e2e_p99_ms", "queue_p50_ms", "queue_p99_ms", "loadgen_result", "loadgen_ttft_p99_ms"]
# Decimals kept per unit: microseconds of latency, tenths of a token per second.
DECIMALS = {"_ms": 3, "_tok_s": 1, "_per_s": 3}
# Default INPUT/OUTPUT lengths: the llama.cpp performance study's 2560/768 where a request of that
# size takes seconds (a server, a GPU), a size a 2-core CPU answers in about a second otherwise.
LONG_LENGTHS, SHORT_LENGTHS = "2560/768", "128/64"
LONG_LENGTH_BACKENDS = ("openai",)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each flag's default in --help, and the module docstring as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default:" in (action.help or ""):   # a default that depends on something says so itself
            return action.help
        return super()._get_help_string(action)


def default_lengths(backend: str, device: str) -> str:
    return LONG_LENGTHS if backend in LONG_LENGTH_BACKENDS or device.startswith("cuda") else SHORT_LENGTHS


def parse_lengths(specs: list[str]) -> list[tuple[int, int]]:
    out = []
    for spec in specs:
        a, sep, b = spec.partition("/")
        try:
            pair = (int(a), int(b))
        except ValueError:
            pair = None
        if not sep or pair is None or min(pair) < 1:
            raise HarnessError(f"--lengths expects INPUT/OUTPUT token counts like 2560/768, got '{spec}'")
        out.append(pair)
    return out


def user_conf(scenario: str, target_qps: float, min_duration_ms: int, min_query_count: int) -> str:
    # '*' matches whatever --lg-model-name main.py uses.
    return (f"*.{scenario}.target_qps = {target_qps}\n*.{scenario}.min_duration = {min_duration_ms}\n"
            f"*.{scenario}.min_query_count = {min_query_count}\n")


def point_row(results: dict, input_len: int, output_len: int, concurrency: int | None,
              target_qps: float | None) -> dict[str, Any]:
    """One sweep.csv row from a point's results.json, rounded (DECIMALS)."""
    lg, rq = results.get("loadgen") or {}, results.get("requests") or {}

    def stat(key: str, p: str) -> float | None:
        return (rq.get(key) or {}).get(p)

    row = {"input_len": input_len, "output_len": output_len, "concurrency": concurrency, "target_qps": target_qps,
           "requests": rq.get("count"), "failed": rq.get("errors"), "output_tok_s": rq.get("output_tokens_per_s"),
           "requests_per_s": rq.get("requests_per_s"),
           "ttft_p50_ms": stat("ttft_from_dispatch_ms", "p50"), "ttft_p99_ms": stat("ttft_from_dispatch_ms", "p99"),
           "tpot_p50_ms": stat("tpot_ms", "p50"), "tpot_p99_ms": stat("tpot_ms", "p99"),
           "itl_p99_ms": stat("itl_ms", "p99"),
           "e2e_p50_ms": stat("e2e_from_dispatch_ms", "p50"), "e2e_p99_ms": stat("e2e_from_dispatch_ms", "p99"),
           "queue_p50_ms": stat("queue_ms", "p50"), "queue_p99_ms": stat("queue_ms", "p99"),
           "loadgen_result": lg.get("result") or lg.get("error"),
           "loadgen_ttft_p99_ms": (lg.get("ttft_ms") or {}).get("p99")}
    for key, value in row.items():
        digits = next((d for suffix, d in DECIMALS.items() if key.endswith(suffix)), None)
        if digits is not None and isinstance(value, float):
            row[key] = round(value, digits)
    return row


def sweep_charts(rows: list[dict], level: str) -> list[tuple[str, bytes]]:
    """Tokens/s against the swept level, and latency against tokens/s, one line per length pair."""
    pairs = sorted({(r["input_len"], r["output_len"]) for r in rows})
    charts = []

    def series(x: str, y: str) -> dict[str, tuple[list, list]]:
        out = {}
        for i, o in pairs:
            pts = sorted((r[x], r[y]) for r in rows if (r["input_len"], r["output_len"]) == (i, o)
                         and r[x] is not None and r[y] is not None)
            if pts:
                out[f"{i}/{o}"] = ([p[0] for p in pts], [p[1] for p in pts])
        return out

    charts.append(("tokens/s", line_chart(series(level, "output_tok_s"), "Output tokens/s", level,
                                          "tokens/s", logx=level == "concurrency")))
    charts.append(("throughput against TTFT p99",
                   line_chart(series("ttft_p99_ms", "output_tok_s"), "Throughput against TTFT p99 (from dispatch)",
                              "TTFT p99 from dispatch (ms)", "output tokens/s")))
    for metric, name in (("tpot_p99_ms", "TPOT p99"), ("e2e_p99_ms", "E2E p99 (from dispatch)")):
        charts.append((name, line_chart(series("output_tok_s", metric), f"{name} against throughput",
                                        "output tokens/s", f"{name} (ms)")))
    return charts


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = RedactingArgumentParser(prog="python -m reporting.sweep", description=__doc__, formatter_class=HelpFormatter,
                                epilog="Flags after `--` go to every main.py run unchanged.", allow_abbrev=False)
    p.add_argument("--backend", default="llamacpp", help="main.py --backend")
    p.add_argument("--model-path", default=None, help="main.py --model-path (default: the backend's own)")
    p.add_argument("--backend-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="main.py --backend-arg, repeatable")
    p.add_argument("--device", default="cpu", help="main.py --device (cpu, cuda or cuda:N)")
    p.add_argument("--scenario", choices=("Server", "Offline"), default="Server", help="LoadGen scenario")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8],
                   help="Server: worker threads (--num-workers); Offline: batch size")
    p.add_argument("--qps", type=float, nargs="+", default=None,
                   help="Server only: sweep these target QPS values instead of --concurrency (default: none)")
    p.add_argument("--target-qps", type=float, default=1000.0,
                   help="Server target QPS while sweeping concurrency (high: workers set the pace)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="workers while sweeping --qps (default: the backend's own)")
    p.add_argument("--lengths", nargs="+", default=None, metavar="INPUT/OUTPUT",
                   help=f"token length pairs (default: {LONG_LENGTHS} for the "
                        f"{', '.join(LONG_LENGTH_BACKENDS)} backend or --device cuda, else {SHORT_LENGTHS})")
    p.add_argument("--num-samples", type=int, default=16, help="synthetic samples per length pair")
    p.add_argument("--min-duration-ms", type=int, default=0, help="LoadGen min_duration of each point (ms)")
    p.add_argument("--min-query-count", type=int, default=None,
                   help="LoadGen min_query_count of each point (default: --num-samples)")
    p.add_argument("--output-dir", default=None,
                   help="new folder for all points and the report (default: output-logs/sweep-BACKEND-DATE-TIME)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    device = extra[extra.index("--device") + 1] if "--device" in extra[:-1] else args.device
    lengths = parse_lengths(args.lengths or [default_lengths(args.backend, device)])
    if args.qps and args.scenario != "Server":
        raise HarnessError("--qps sweeps need --scenario Server")
    if min(args.concurrency) < 1 or not all(0 < q < math.inf for q in args.qps or []) or args.num_samples < 1:
        raise HarnessError("--concurrency, --qps and --num-samples must be positive (and finite)")
    level = "target_qps" if args.qps else "concurrency"
    levels = args.qps or args.concurrency
    min_queries = args.min_query_count or args.num_samples
    # Absolute: the runs it starts work in the repository's folder, not in this one.
    out = fresh_output_dir(Path(args.output_dir or Path("output-logs") /
                                f"sweep-{args.backend}-{stamp()}").absolute())
    if args.output_dir is None:
        print(f"no --output-dir given: the sweep writes {out}", flush=True)

    from tqdm import tqdm

    rows, groups = [], {}
    with tqdm(total=len(lengths) * len(levels), desc="sweep", unit="point", disable=args.no_progress,
              file=sys.stderr) as bar:
        for input_len, output_len in lengths:
            data = synthetic_dataset({"num_samples": args.num_samples, "input_len": input_len,
                                      "output_len": output_len, "seed": 0}, out / "data")
            for value in levels:
                name = f"in{input_len}-out{output_len}-{'qps' if args.qps else 'c'}{value:g}"
                qps = value if args.qps else (args.target_qps if args.scenario == "Server" else 1.0)
                conf = out / "confs" / f"{name}.conf"
                conf.parent.mkdir(exist_ok=True)
                conf.write_text(user_conf(args.scenario, qps, args.min_duration_ms, min_queries))
                cmd = [sys.executable, str(Path(__file__).resolve().parent.parent / "main.py"),
                       "--backend", args.backend, "--scenario", args.scenario, "--output-log-dir", str(out / name),
                       "--dataset-path", str(data), "--total-sample-count", str(args.num_samples),
                       "--user-conf", str(conf), "--max-new-tokens", str(output_len), "--ignore-eos",
                       "--no-progress"]
                if args.model_path:
                    cmd += ["--model-path", args.model_path]
                if args.device != "cpu":
                    cmd += ["--device", args.device]
                for kv in args.backend_arg:
                    cmd += ["--backend-arg", kv]
                if args.qps:
                    cmd += ["--num-workers", str(args.num_workers)] if args.num_workers else []
                else:
                    cmd += ["--num-workers" if args.scenario == "Server" else "--batch-size", str(value)]
                bar.set_postfix_str(name)
                results = run_main(cmd + extra, out / name)
                bar.update(1)
                if results is None:
                    continue
                groups[name] = [results]
                rows.append(point_row(results, input_len, output_len, None if args.qps else int(value),
                                      qps if args.scenario == "Server" else None))
    if not rows:
        raise HarnessError(f"every sweep point failed; see the .log files under {out}")

    table = markdown_table(rows, COLUMNS)
    (out / "sweep.md").write_text(f"# Sweep: {args.backend}, {args.scenario}\n\n{table}", encoding="utf-8")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "sweep.csv").write_text(buf.getvalue(), encoding="utf-8")
    section = ["<h2>Sweep</h2>", html_table(rows, COLUMNS)] + [img_tag(t, png) for t, png in sweep_charts(rows, level)]
    report = write_html(out / "report.html", build_html(groups, f"Sweep: {args.backend}, {args.scenario}",
                                                         lead_sections=section))
    print(table)
    print("ttft_*, e2e_*: from dispatch (handed to the backend); queue_*: issue to dispatch; "
          "loadgen_ttft_p99_ms: LoadGen's, from its issue")
    print(f"sweep.csv, sweep.md: {out.resolve()}\nreport: {report.resolve()}")
    return 0 if len(rows) == len(lengths) * len(levels) else 1


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
