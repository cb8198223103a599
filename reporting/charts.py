"""The report's charts as PNG bytes (matplotlib, drawn off-screen).

Generic figures (bars, grouped bars, lines, points, CDFs) and the charts of one run: output
tokens/s over time, latency per request and the TTFT/TPOT distributions (all from
requests.csv), CPU, memory and GPU over time (from results.json's system metrics samples).
reporting.report lays them out in HTML; reporting.sweep draws its own lines with line_chart.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np

from common.errors import HarnessError
from harness.results import fmt_num, load_requests

BAR_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")


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


# -- generic figures --------------------------------------------------------------------------------------
def bar_chart(labels: list[str], series: dict[str, list[float | None]], title: str, ylabel: str,
              ranges: dict[str, list[tuple[float, float] | None]] | None = None) -> bytes:
    """PNG bars: one group per label, one bar per named series in it (a legend when more than
    one); a missing value leaves a gap marked '-'; ranges draw min/max whiskers. The axis starts
    at 0 so bar heights compare."""
    plt = _pyplot()
    n = len(series)
    fig, ax = plt.subplots(figsize=(max(4.0, (0.7 + 0.45 * n) * len(labels) + 2), 3.2))
    x = np.arange(len(labels))
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        xs = x - 0.4 + width * (i + 0.5)
        bars = ax.bar(xs, [v if v is not None else 0.0 for v in values], width * 0.95,
                      color=BAR_COLOURS[i % len(BAR_COLOURS)], label=name)
        for xi, v, rg in zip(xs, values, (ranges or {}).get(name) or [None] * len(values)):
            if v is not None and rg is not None:
                ax.errorbar(xi, v, yerr=[[v - rg[0]], [rg[1] - v]], color="black", capsize=4)
        for bar, v in zip(bars, values):
            ax.annotate(fmt_num(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels, rotation=20 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    top = max([v for vs in series.values() for v in vs if v is not None] + [0.0])
    # Headroom for the value labels; an all-zero chart (ROUGE of a null backend) still gets an axis.
    ax.set_ylim(0, top * 1.2 if top > 0 else 1.0)
    if n > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def line_chart(series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str, ylabel: str,
               logx: bool = False, from_zero: bool = False, ylim: tuple[float, float] | None = None,
               legend: bool | None = None) -> bytes:
    """PNG with one line per named (x, y) series. from_zero starts the y axis at 0 with headroom
    above the highest point (so a flat line is not drawn on the frame, nor a few kilobytes of drift
    made to look like a leak); ylim fixes both ends. A legend by default when there is more than
    one series."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if len(xs) <= 20 else None, markersize=4, label=name)
    if logx:  # concurrency 1, 2, 4, 8: evenly spaced, labelled with the plain values
        ax.set_xscale("log", base=2)
        ticks = sorted({x for xs, _ in series.values() for x in xs})
        ax.set_xticks(ticks, [fmt_num(t) for t in ticks])
        ax.minorticks_off()
    if ylim is not None:
        ax.set_ylim(*ylim)
    elif from_zero:
        top = np.nanmax([np.nanmax(np.asarray(ys, dtype=float)) if len(ys) else np.nan
                         for _, ys in series.values()] + [0.0])
        ax.set_ylim(0, top * 1.25 if top > 0 else 1.0)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend or (legend is None and len(series) > 1):
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
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def cdf_chart(panels: dict[str, dict[str, list[float]]], title: str) -> bytes:
    """PNG of empirical CDFs (the share of requests at or below each latency), one panel per
    metric ("TTFT (ms)": {series name: values}); each series' p50/p90/p99 are dots on its curve
    and numbers in the legend."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 3.6), squeeze=False)
    for ax, (metric, series) in zip(axes[0], panels.items()):
        for name, values in series.items():
            xs = np.sort(np.asarray(values, dtype=float))
            if xs.size == 0:
                continue
            ys = np.arange(1, xs.size + 1) / xs.size
            pcts = {p: float(np.percentile(xs, p)) for p in (50, 90, 99)}
            line, = ax.step(np.concatenate([[0.0], xs]), np.concatenate([[0.0], ys]), where="post",
                            label=f"{name}, n={xs.size}\n" + ", ".join(f"p{p} {fmt_num(v)}" for p, v in pcts.items()))
            ax.plot(list(pcts.values()), [p / 100 for p in pcts], "o", color=line.get_color(), markersize=4)
        ax.set_xlim(left=0)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(metric)
        ax.set_ylabel("share of requests")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    return _png(fig)


# -- one run's charts ---------------------------------------------------------------------------------------
# requests.csv columns of runs written before the header carried units -> today's names (and
# the factor to today's unit), so reports still read older run folders.
_OLD_COLUMNS = {"t_issued_s": ("issued_s", 1.0), "t_first_s": ("first_token_s", 1.0), "t_done_s": ("done_s", 1.0),
                "n_output": ("output_tokens", 1), "n_input": ("input_tokens", 1), "ttft_s": ("ttft_ms", 1000.0),
                "tpot_s": ("tpot_ms", 1000.0), "e2e_s": ("e2e_ms", 1000.0)}


def request_rows(run_dir: str) -> list[dict[str, Any]]:
    """requests.csv of a run (harness.results.load_requests), older column names renamed."""
    rows = load_requests(run_dir)
    if rows and not any(k in rows[0] for k in _OLD_COLUMNS):
        return rows
    out = []
    for row in rows:
        new = {}
        for k, v in row.items():
            name, factor = _OLD_COLUMNS.get(k, (k, 1))
            new[name] = v * factor if isinstance(v, (int, float)) else v
        out.append(new)
    return out


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


# The distributions drawn per metric: requests.csv column (ms) and the name of its series.
# TTFT from the issue includes the wait for a worker; from dispatch it is the backend's alone.
LATENCY_COLUMNS = {"TTFT": (("ttft_ms", "from issue"), ("ttft_from_dispatch_ms", "from dispatch")),
                   "TPOT": (("tpot_ms", "TPOT"),)}


def latencies_ms(rows: list[dict], metric: str) -> dict[str, list[float]]:
    """The successful requests' values of one metric in ms, per series (a failed request's
    latencies say nothing about the model)."""
    out = {}
    for column, name in LATENCY_COLUMNS[metric]:
        values = [r[column] for r in rows if isinstance(r.get(column), (int, float)) and not r.get("error")]
        if values:
            out[name] = values
    return out


def request_charts(rows: list[dict]) -> list[tuple[str, bytes]]:
    """Charts from requests.csv: tokens/s over time, latency per request, TTFT/TPOT CDFs."""
    charts: list[tuple[str, bytes]] = []
    t, tps = tokens_over_time(rows)
    if t:
        charts.append(("output tokens/s over time", line_chart({"tokens/s": (t, tps)}, "Output tokens/s",
                                                               "time since first query (s)", "tokens/s",
                                                               from_zero=True)))
    issued = [r["issued_s"] for r in rows if r.get("issued_s") is not None]
    # Each request's latency at its issue time: queueing and warm-up show as trends. Not drawn
    # when every query was issued at once (Offline): the points would stand in one column.
    if t and issued and max(issued) - min(issued) > 0.01 * t[-1]:
        # TTFT is drawn last, over E2E, which it equals when all tokens come at once.
        lat = {name: ([r["issued_s"] for r in rows if r.get(col) is not None],
                      [r[col] for r in rows if r.get(col) is not None])
               for name, col in (("E2E", "e2e_ms"), ("TTFT", "ttft_ms"))}
        charts.append(("latency per request", scatter_chart(lat, "Latency per request", "issued at (s)", "ms")))
    panels = {f"{metric} (ms)": series for metric in ("TTFT", "TPOT") if (series := latencies_ms(rows, metric))}
    title = "Latency distributions (CDF)"
    # Without streaming (Offline) every token arrives with the last: TPOT is 0 throughout.
    tpot = panels.get("TPOT (ms)")
    if tpot and not any(v for values in tpot.values() for v in values):
        del panels["TPOT (ms)"]
        title += "; TPOT is 0: all tokens arrived at once"
    if panels:
        charts.append(("latency distributions", cdf_chart(panels, title)))
    return charts


def _bytes_unit(values: list[float]) -> tuple[float, str]:
    """GiB for gigabytes of memory, MiB below, so the axis reads in plain numbers."""
    return (2**30, "GiB") if max(values, default=0) >= 2**30 else (2**20, "MiB")


def cpu_pct_of_all_cores(samples: dict[str, list], cores: int) -> dict[str, list[float]]:
    """The harness process's and the whole system's CPU, both in % of all cores. psutil gives
    the process in % of one core (up to 100 x cores) and the system in % of all cores: the
    process is scaled to the system's measure so both share one 0-100 axis."""
    return {"harness process": [v / cores for v in _nan(samples["cpu_process_pct"])],
            "whole system": _nan(samples["cpu_system_pct"])}


def system_charts(samples: dict[str, list], cpu_count: int | None) -> list[tuple[str, bytes]]:
    """CPU, memory and per-GPU charts from the system metrics samples (two or more)."""
    charts: list[tuple[str, bytes]] = []
    ts = samples.get("t_s") or []
    if len(ts) < 2:
        return charts
    cores = cpu_count or 1
    cpu = {name: (ts, values) for name, values in cpu_pct_of_all_cores(samples, cores).items()}
    charts.append(("CPU", line_chart(cpu, f"CPU utilisation, both in % of all {cores} logical cores", "time (s)",
                                     f"% of {cores} cores", ylim=(0, 105), legend=True)))
    mem = {"harness process (RSS)": samples.get("rss_bytes") or [],
           "whole system (used)": samples.get("mem_system_used_bytes") or []}
    mem = {k: v for k, v in mem.items() if any(b is not None for b in v)}
    if mem:
        scale, unit = _bytes_unit([b for v in mem.values() for b in v if b is not None])
        charts.append(("memory", line_chart({k: (ts, _nan([None if b is None else b / scale for b in v]))
                                             for k, v in mem.items()},
                                            "Memory", "time (s)", unit, from_zero=True, legend=True)))
    gpus = sorted({k.split("_")[0] for k in samples if k.startswith("gpu")})
    if gpus:
        util = {g: (ts, _nan(samples[f"{g}_util_pct"])) for g in gpus}
        used = [b for g in gpus for b in samples[f"{g}_mem_used_bytes"] if b is not None]
        scale, unit = _bytes_unit(used)
        mem = {g: (ts, _nan([None if b is None else b / scale for b in samples[f"{g}_mem_used_bytes"]]))
               for g in gpus}
        power = {g: (ts, _nan(samples[f"{g}_power_w"])) for g in gpus}
        charts.append(("GPU utilisation", line_chart(util, "GPU utilisation", "time (s)", "%", ylim=(0, 105),
                                                     legend=True)))
        charts.append(("GPU memory", line_chart(mem, "GPU memory used", "time (s)", unit, from_zero=True,
                                                legend=True)))
        charts.append(("GPU power", line_chart(power, "GPU power", "time (s)", "W", from_zero=True, legend=True)))
    return charts


def run_charts(results: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Every chart of one loaded run (harness.results.load_results), in report order."""
    env = results.get("environment") or {}
    samples = (results.get("sysmetrics") or {}).get("samples") or {}
    return request_charts(request_rows(results["_dir"])) + system_charts(samples, env.get("cpu_count_logical"))


def _nan(xs: list) -> list[float]:
    return [float("nan") if x is None else x for x in xs]
