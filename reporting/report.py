"""Plots and one static HTML report over finished runs.

    python -m reporting.report RUN_DIR [RUN_DIR ...] --output report.html

Each RUN_DIR holds a results.json (harness/results.py). The report has a table comparing the
runs (LoadGen's verdict, throughput, TTFT/TPOT/E2E, goodput, ROUGE, energy), bar charts of
the same, and per run the tokens/s, CPU, memory and GPU over time. Charts are PNGs embedded as
base64, so the HTML is one file that opens anywhere. reporting.compare and reporting.sweep build
their reports with the same functions.

Runs are grouped: a group is one configuration measured one or more times (repeats) plus,
optionally, an accuracy run; bar heights are the mean over the repeats, whiskers the min/max.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common.errors import HarnessError, exit_on_error
from harness.results import fmt_num, load_requests, load_results

log = logging.getLogger(__name__)

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


# -- figures pulled out of one results.json ----------------------------------------------------------
def _get(d: dict | None, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def rouge_scores(results: dict) -> dict[str, float] | None:
    """ROUGE from the run's accuracy.json (evaluation.py writes {"result": {"rouge1": ...}})."""
    acc = results.get("accuracy")
    if not isinstance(acc, dict):
        return None
    scores = acc.get("result", acc)
    found = {k: scores[k] for k in ROUGE_KEYS if isinstance(scores.get(k), (int, float))}
    return found or None


# name, how to get it from a results dict, unit; the columns of the comparison table.
def _pct(fraction: Any) -> Any:
    return 100 * fraction if isinstance(fraction, (int, float)) else None


METRICS: list[tuple[str, Callable[[dict], Any], str]] = [
    ("LoadGen tokens/s", lambda r: _get(r, "loadgen", "tokens_per_s"), "tok/s"),
    ("LoadGen samples/s", lambda r: _get(r, "loadgen", "samples_per_s"), "samples/s"),
    ("output tokens/s", lambda r: _get(r, "requests", "output_tokens_per_s"), "tok/s"),
    ("TTFT p50", lambda r: _get(r, "requests", "ttft_ms", "p50"), "ms"),
    ("TTFT p99", lambda r: _get(r, "requests", "ttft_ms", "p99"), "ms"),
    ("TPOT p50", lambda r: _get(r, "requests", "tpot_ms", "p50"), "ms"),
    ("TPOT p99", lambda r: _get(r, "requests", "tpot_ms", "p99"), "ms"),
    # Speculative decoding (backends/speculative.py); empty for runs without it.
    ("draft acceptance", lambda r: _pct(_get(r, "run", "backend", "speculative", "acceptance_rate")), "%"),
    ("accepted/step", lambda r: _get(r, "run", "backend", "speculative", "mean_accepted_per_step"), ""),
    ("E2E p50", lambda r: _get(r, "requests", "e2e_ms", "p50"), "ms"),
    ("E2E p99", lambda r: _get(r, "requests", "e2e_ms", "p99"), "ms"),
    ("goodput", lambda r: None if _get(r, "goodput", "fraction") is None else 100 * r["goodput"]["fraction"], "%"),
    ("errors", lambda r: _get(r, "requests", "errors"), ""),
    ("J/token", lambda r: _get(r, "sysmetrics", "aggregates", "gpu_joules_per_output_token"), "J"),
]
BAR_CHARTS = ("LoadGen tokens/s", "output tokens/s", "TTFT p99", "TPOT p99")


def is_accuracy(results: dict) -> bool:
    mode = str(_get(results, "run", "mode") or _get(results, "loadgen", "mode") or "").lower()
    return mode.startswith("accuracy")


def group_row(name: str, group: list[dict]) -> dict[str, Any]:
    """One table row for a group: means over its performance runs, ROUGE from its accuracy run."""
    perf = [r for r in group if not is_accuracy(r)]
    first = (perf or group)[0]
    backend = _get(first, "run", "backend")
    backend = backend if isinstance(backend, dict) else {"backend": backend}
    verdicts = sorted({str(_get(r, "loadgen", "result") or "?") for r in perf})
    row: dict[str, Any] = {
        "run": name,
        "scenario": _get(first, "run", "scenario"),
        "backend": backend.get("backend"),
        "model": os.path.basename(str(_get(first, "run", "model_path") or backend.get("model_path") or "default")),
        "dtype": _get(first, "run", "dtype"),
        "repeats": len(perf),  # an int: printed without decimals
        "status": "/".join(sorted({str(_get(r, "run", "status") or "?") for r in group})),
        "LoadGen result": "/".join(verdicts) if perf else "-",
    }
    for metric, get, _unit in METRICS:
        values = [v for v in (get(r) for r in perf) if isinstance(v, (int, float))]
        row[metric] = float(np.mean(values)) if values else None
        row[f"{metric} range"] = (min(values), max(values)) if len(values) > 1 else None
    rouge = next((s for s in (rouge_scores(r) for r in group) if s), None)
    for k in ROUGE_KEYS:
        row[k] = rouge.get(k) if rouge else None
    return row


TABLE_COLUMNS = (["run", "scenario", "backend", "model", "dtype", "repeats", "status", "LoadGen result"]
                 + [m for m, _, _ in METRICS] + ["rouge1", "rougeL"])


def _header(col: str) -> str:
    unit = next((u for m, _, u in METRICS if m == col), "")
    # "tokens/s" and "J/token" already say their unit.
    return f"{col} ({unit})" if unit and unit not in col and not col.endswith("/s") else col


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    head = "| " + " | ".join(_header(c) for c in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt_num(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def html_table(rows: list[dict], columns: list[str]) -> str:
    cols = [c for c in columns if any(r.get(c) is not None for r in rows)]  # drop empty columns
    head = "".join(f"<th>{html.escape(_header(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt_num(r.get(c)))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# -- charts ---------------------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise HarnessError("plots need matplotlib: pip install -e '.[plots]'") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def bar_chart(labels: list[str], values: list[float | None], title: str, ylabel: str,
              ranges: list[tuple[float, float] | None] | None = None) -> bytes:
    """PNG bars, one per label; missing values leave a gap; ranges draw min/max whiskers."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 2), 3.2))
    x = np.arange(len(labels))
    heights = [v if v is not None else 0.0 for v in values]
    bars = ax.bar(x, heights, color="#4c72b0")
    if ranges:
        for xi, v, rg in zip(x, values, ranges):
            if v is not None and rg is not None:
                ax.errorbar(xi, v, yerr=[[v - rg[0]], [rg[1] - v]], color="black", capsize=4)
    for bar, v in zip(bars, values):
        ax.annotate(fmt_num(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels, rotation=20 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    return _png(fig)


def line_chart(series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str, ylabel: str,
               logx: bool = False, from_zero: bool = False) -> bytes:
    """PNG with one line per named (x, y) series; from_zero starts the y axis at 0 (so a
    few kilobytes of drift do not look like a leak)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if len(xs) <= 20 else None, markersize=4, label=name)
    if logx:  # concurrency 1, 2, 4, 8: evenly spaced, labelled with the plain values
        ax.set_xscale("log", base=2)
        ticks = sorted({x for xs, _ in series.values() for x in xs})
        ax.set_xticks(ticks, [fmt_num(t) for t in ticks])
        ax.minorticks_off()
    if from_zero:
        ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def scatter_chart(series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str,
                  ylabel: str) -> bytes:
    """PNG with one set of points per named (x, y) series."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for name, (xs, ys) in series.items():
        ax.scatter(xs, ys, s=8, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def tokens_over_time(rows: list[dict], bins: int | None = None) -> tuple[list[float], list[float]]:
    """Output tokens/s over the run from requests.csv rows: each request's first token counts
    at its first-token time, the rest spread evenly until it finished (what a streaming client
    sees; Offline batches show up as steps)."""
    rows = [r for r in rows if r.get("first_token_s") is not None and r.get("done_s") is not None
            and (r.get("output_tokens") or 0) > 0]
    if not rows:
        return [], []
    # About two requests per bin, 5 to 40 bins: few requests would otherwise draw only spikes.
    bins = bins or min(40, max(5, len(rows) // 2))
    first = np.array([r["first_token_s"] for r in rows], dtype=float)
    done = np.array([r["done_s"] for r in rows], dtype=float)
    n = np.array([r["output_tokens"] for r in rows], dtype=float)
    end = float(done.max())
    if end <= 0:
        return [], []
    edges = np.linspace(0.0, end, bins + 1)
    counts = np.histogram(first, bins=edges, weights=np.ones_like(n))[0]
    span = np.maximum(done - first, 1e-12)
    lo, hi = edges[:-1][None, :], edges[1:][None, :]
    overlap = np.clip(np.minimum(hi, done[:, None]) - np.maximum(lo, first[:, None]), 0.0, None)
    counts = counts + ((n - 1)[:, None] * overlap / span[:, None]).sum(axis=0)
    width = edges[1] - edges[0]
    centers = (edges[:-1] + edges[1:]) / 2
    return centers.tolist(), (counts / width).tolist()


def run_charts(results: dict) -> list[tuple[str, bytes]]:
    """Over-time charts of one run: tokens/s, CPU, memory and each GPU's utilisation/power."""
    charts: list[tuple[str, bytes]] = []
    rows = load_requests(results["_dir"])
    t, tps = tokens_over_time(rows)
    if t:
        charts.append(("output tokens/s over time", line_chart({"tokens/s": (t, tps)}, "Output tokens/s",
                                                               "time since first query (s)", "tokens/s")))
        # Each request's latency at its issue time: queueing and warm-up show as trends.
        lat = {name: ([r["issued_s"] for r in rows if r.get(col) is not None],
                      [r[col] for r in rows if r.get(col) is not None])
               for name, col in (("TTFT", "ttft_ms"), ("E2E", "e2e_ms"))}
        charts.append(("latency per request", scatter_chart(lat, "Latency per request", "issued at (s)", "ms")))
    samples = _get(results, "sysmetrics", "samples") or {}
    ts = samples.get("t_s") or []
    if len(ts) >= 2:
        charts.append(("CPU", line_chart({"process": (ts, samples["cpu_process_pct"]),
                                          "system": (ts, samples["cpu_system_pct"])},
                                         "CPU utilisation", "time (s)", "% (100 = one core for process)")))
        charts.append(("memory", line_chart({"process RSS": (ts, [b / 2**30 for b in samples["rss_bytes"]])},
                                            "Memory", "time (s)", "GiB", from_zero=True)))
        gpus = sorted({k.split("_")[0] for k in samples if k.startswith("gpu")})
        if gpus:
            util = {g: (ts, _nan(samples[f"{g}_util_pct"])) for g in gpus}
            mem = {g: (ts, _nan([None if b is None else b / 2**30 for b in samples[f"{g}_mem_used_bytes"]]))
                   for g in gpus}
            power = {g: (ts, _nan(samples[f"{g}_power_w"])) for g in gpus}
            charts.append(("GPU utilisation", line_chart(util, "GPU utilisation", "time (s)", "%")))
            charts.append(("GPU memory", line_chart(mem, "GPU memory used", "time (s)", "GiB", from_zero=True)))
            charts.append(("GPU power", line_chart(power, "GPU power", "time (s)", "W")))
    return charts


def _nan(xs: list) -> list[float]:
    return [float("nan") if x is None else x for x in xs]


def comparison_charts(rows: list[dict]) -> list[tuple[str, bytes]]:
    labels = [r["run"] for r in rows]
    charts = []
    for metric in BAR_CHARTS:
        if any(r.get(metric) is not None for r in rows):
            unit = next(u for m, _, u in METRICS if m == metric)
            charts.append((metric, bar_chart(labels, [r.get(metric) for r in rows], metric, unit,
                                             [r.get(f"{metric} range") for r in rows])))
    for key in ("rouge1", "rougeL"):
        if any(r.get(key) is not None for r in rows):
            charts.append((key, bar_chart(labels, [r.get(key) for r in rows], key.upper(), "score x 100")))
    return charts


# -- HTML ------------------------------------------------------------------------------------------------
CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#eef}td:first-child,th:first-child{text-align:left}
img{margin:4px;border:1px solid #eee;max-width:100%}.bad{color:#b00}.ok{color:#070}
details{margin:.5em 0}code{background:#f4f4f4;padding:1px 3px}"""


def img_tag(title: str, png: bytes) -> str:
    return (f'<img alt="{html.escape(title)}" title="{html.escape(title)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def _run_section(name: str, results: dict) -> str:
    lg = results.get("loadgen") or {}
    verdict = lg.get("result") or lg.get("error") or "?"
    cls = "ok" if verdict == "VALID" else "bad"
    reasons = "; ".join(lg.get("invalid_reasons") or [])
    run = results.get("run") or {}
    status = str(run.get("status") or "?")
    # The run's status comes first: LoadGen's verdict counts no failed query.
    parts = [f"<h3>{html.escape(name)}</h3>",
             f"<p>Run status: <b class='{'ok' if status == 'ok' else 'bad'}'>{html.escape(status)}</b>"
             + "".join(f"<br>{html.escape(r)}" for r in run.get("status_reasons") or [])
             + "".join(f"<br>LoadGen error x{n}: {html.escape(e)}"
                       for e, n in (run.get("loadgen_errors") or {}).items())
             + "</p>",
             f"<p>{html.escape(str(run.get('scenario')))} {html.escape(str(run.get('mode')))}, folder "
             f"<code>{html.escape(results['_dir'])}</code>. LoadGen: <b class='{cls}'>{html.escape(verdict)}</b>"
             + (f" ({html.escape(reasons)})" if reasons else "") + "</p>"]
    if lg.get("early_stopping"):
        parts.append("<p>Early stopping: " + html.escape("; ".join(f"{k}: {v}" for k, v in
                                                                  lg["early_stopping"].items())) + "</p>")
    for title, png in run_charts(results):
        parts.append(img_tag(f"{name}: {title}", png))
    return "\n".join(parts)


def build_html(groups: dict[str, list[dict]], title: str = "LLM LoadGen report",
               lead_sections: list[str] | None = None) -> str:
    """The report for named groups of loaded results (see load_results); lead_sections (HTML)
    go first, after the title."""
    rows = [group_row(name, g) for name, g in groups.items()]
    body = [f"<h1>{html.escape(title)}</h1>", *(lead_sections or []),
            "<h2>Comparison</h2>", html_table(rows, TABLE_COLUMNS),
            "<p>Throughput and latencies are means over repeats; TTFT/TPOT/E2E are the harness's "
            "per-request figures (vLLM definitions), LoadGen's own are in each run's results.json.</p>"]
    body += [img_tag(t, png) for t, png in comparison_charts(rows)]
    body.append("<h2>Runs</h2>")
    for name, group in groups.items():
        for i, results in enumerate(group):
            label = name if len(group) == 1 else f"{name} [{os.path.basename(results['_dir'])}]"
            body.append(_run_section(label, results))
    first = next(iter(groups.values()))[0]
    env = first.get("environment") or {}
    body.append("<h2>Environment</h2><details><summary>of the first run</summary><pre>"
                + html.escape(_pretty(env)) + "</pre></details>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'>{REPORT_MARK}<title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _pretty(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)


# In every report's head: write_html replaces an existing file only when it carries this mark.
REPORT_MARK = "<meta name='generator' content='llm-loadgen-harness report'>"


def write_html(path: str | Path, text: str) -> Path:
    """Write the report atomically (a reader never sees half a file). An existing file is
    replaced only if it is a report written here (results.json, say, never is)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                head = f.read(1024)
        except OSError as e:
            head = ""
            if not path.is_dir():
                raise HarnessError(f"cannot read {path} to check it is a report: {e.strerror}") from None
        if path.is_dir() or REPORT_MARK not in head:
            raise HarnessError(f"{path} exists and is not a report written by this harness; "
                               "not overwriting it (choose another --output)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def group_dirs(run_dirs: list[str]) -> dict[str, list[dict]]:
    """One group per run folder, named by the folder (parent/folder when names repeat).

    A folder without results.json but with runs below it (a reporting.compare output) gives one
    group per configuration: its repeats and accuracy run, warm-ups left out.
    """
    groups: dict[str, list[dict]] = {}
    singles = []
    for d in map(Path, run_dirs):
        below = sorted(d.glob("*/*/results.json")) if d.is_dir() and not (d / "results.json").exists() else []
        below = [p for p in below if not p.parent.name.startswith("warmup-")]
        if not below:
            singles.append(load_results(d))
        for p in below:
            groups.setdefault(p.parent.parent.name, []).append(load_results(p))
    names = [Path(r["_dir"]).name for r in singles]
    for r, name in zip(singles, names):
        if names.count(name) > 1:
            name = f"{Path(r['_dir']).parent.name}/{name}"
        groups.setdefault(name, []).append(r)
    return groups


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Static HTML report (tables + charts) over finished runs.")
    p.add_argument("run_dirs", nargs="+", help="run folders holding results.json, or reporting.compare "
                   "output folders")
    p.add_argument("--output", default="report.html", help="HTML file to write")
    p.add_argument("--title", default="LLM LoadGen report")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = write_html(args.output, build_html(group_dirs(args.run_dirs), args.title))
    print(f"report: {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
