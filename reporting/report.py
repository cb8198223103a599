"""One static HTML report over finished runs.

    python -m reporting.report RUN_DIR [RUN_DIR ...] --output report.html

Each RUN_DIR holds a results.json (harness/results.py). The report has a table comparing the
runs (status, LoadGen's verdict, throughput, TTFT/TPOT/E2E, goodput, energy, ROUGE and the
accuracy verdict), bar charts of the same, and per run its status, LoadGen's verdict and why,
the accuracy checks of an accuracy run (its accuracy.json, written by evaluation.py), and the
charts of reporting/charts.py: tokens/s and latency over time, TTFT/TPOT distributions, CPU,
memory and GPU. Charts are PNGs embedded as base64, so the HTML is one file that opens
anywhere. reporting.compare and reporting.sweep build their reports with the same functions.

Runs are grouped: a group is one configuration measured one or more times (repeats) plus,
optionally, an accuracy run; bar heights are the mean over the repeats, whiskers the min/max.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common.errors import HarnessError, exit_on_error
from common.files import make_folder
from harness.results import fmt_num, load_results
from harness.summary import loadgen_reasons
from reporting.charts import bar_chart, run_charts
from reporting.charts import line_chart  # noqa: F401  (reporting.sweep imports it from here)

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
# Bar charts of the comparison: a title and the metrics drawn side by side in it.
BAR_CHARTS = (("Throughput", ("LoadGen tokens/s", "output tokens/s"), "tokens/s"),
              ("TTFT p99", ("TTFT p99",), "ms"), ("TPOT p99", ("TPOT p99",), "ms"))


def is_accuracy(results: dict) -> bool:
    mode = str(_get(results, "run", "mode") or _get(results, "loadgen", "mode") or "").lower()
    return mode.startswith("accuracy")


def loadgen_verdict(results: dict) -> str:
    """VALID/INVALID, "accuracy mode" (LoadGen gives no performance verdict there), or why
    LoadGen's figures are missing."""
    lg = results.get("loadgen") or {}
    if lg.get("result"):
        return str(lg["result"])
    if is_accuracy(results):
        return "accuracy mode"
    return f"no figures ({lg['error']})" if lg.get("error") else "no figures"


def accuracy_verdict(results: dict) -> dict[str, Any] | None:
    """The verdict evaluation.py wrote into accuracy.json: "PASS"/"FAIL" at its accuracy level
    against the model's targets, or "no verdict" when it had none (scores only); None without
    an accuracy.json."""
    acc = results.get("accuracy")
    if not isinstance(acc, dict):
        return None
    level = str(acc.get("accuracy_level") or "99")
    passed = acc.get("passed")
    if isinstance(passed, dict) and isinstance(passed.get(level), bool):
        verdict = "PASS" if passed[level] else "FAIL"
    else:
        verdict = "no verdict"
    checks = (acc.get("checks") or {}).get(level) if verdict != "no verdict" else None
    return {"verdict": verdict, "level": level, "model_name": acc.get("model_name"),
            "targets": acc.get("targets"), "targets_source": acc.get("targets_source"),
            "checks": checks or [], "scores": acc.get("result", acc)}


def accuracy_label(verdict: dict[str, Any] | None) -> str | None:
    if verdict is None:
        return None
    if verdict["verdict"] == "no verdict":
        return "no verdict (no targets)"
    return f"{verdict['verdict']} ({verdict['level']}%)"


def group_row(name: str, group: list[dict]) -> dict[str, Any]:
    """One table row for a group: means over its performance runs (over its accuracy runs when it
    has none), ROUGE and the accuracy verdict from its accuracy run."""
    measured = [r for r in group if not is_accuracy(r)] or group
    first = measured[0]
    backend = _get(first, "run", "backend")
    backend = backend if isinstance(backend, dict) else {"backend": backend}
    row: dict[str, Any] = {
        "run": name,
        "scenario": _get(first, "run", "scenario"),
        "backend": backend.get("backend"),
        "model": os.path.basename(str(_get(first, "run", "model_path") or backend.get("model_path") or "default")),
        "dtype": _get(first, "run", "dtype"),
        "repeats": len(measured),  # an int: printed without decimals
        "status": "/".join(sorted({str(_get(r, "run", "status") or "?") for r in group})),
        "LoadGen result": "/".join(sorted({loadgen_verdict(r) for r in measured})),
    }
    for metric, get, _unit in METRICS:
        values = [v for v in (get(r) for r in measured) if isinstance(v, (int, float))]
        row[metric] = float(np.mean(values)) if values else None
        row[f"{metric} range"] = (min(values), max(values)) if len(values) > 1 else None
    rouge = next((s for s in (rouge_scores(r) for r in group) if s), None)
    for k in ROUGE_KEYS:
        row[k] = rouge.get(k) if rouge else None
    row["accuracy"] = next((accuracy_label(v) for v in map(accuracy_verdict, group) if v), None)
    return row


TABLE_COLUMNS = (["run", "scenario", "backend", "model", "dtype", "repeats", "status", "LoadGen result"]
                 + [m for m, _, _ in METRICS] + ["rouge1", "rougeL", "accuracy"])


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
    # Wide tables scroll inside their box instead of running off the page.
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def comparison_charts(rows: list[dict]) -> list[tuple[str, bytes]]:
    labels = [r["run"] for r in rows]
    charts = []
    for title, metrics, unit in BAR_CHARTS:
        metrics = [m for m in metrics if any(r.get(m) is not None for r in rows)]
        if metrics:
            charts.append((title, bar_chart(labels, {m: [r.get(m) for r in rows] for m in metrics}, title, unit,
                                            {m: [r.get(f"{m} range") for r in rows] for m in metrics})))
    for key in ("rouge1", "rougeL"):  # only the runs that were scored
        scored = [r for r in rows if r.get(key) is not None]
        if scored:
            charts.append((key, bar_chart([r["run"] for r in scored], {key: [r[key] for r in scored]}, key.upper(),
                                          "score x 100")))
    return charts


# -- HTML ------------------------------------------------------------------------------------------------
CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.wide{overflow-x:auto}table{border-collapse:collapse;margin:1em 0;font-size:12px}td{white-space:nowrap}th,td{border:1px solid #ccc;padding:2px 5px;
text-align:right}th{background:#eef}td:first-child,th:first-child{text-align:left}
img{margin:4px;border:1px solid #eee;max-width:100%}.bad{color:#b00}.ok{color:#070}.none{color:#666}
details{margin:.5em 0}code{background:#f4f4f4;padding:1px 3px}ul{margin:.2em 0}"""


def img_tag(title: str, png: bytes) -> str:
    return (f'<img alt="{html.escape(title)}" title="{html.escape(title)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def _accuracy_section(results: dict) -> str:
    """The accuracy verdict of an accuracy run with its checks, metric by metric."""
    v = accuracy_verdict(results)
    if v is None:
        return ("<p>Accuracy: <b class='none'>not scored</b> (no accuracy.json: run evaluation.py on "
                "mlperf_log_accuracy.json)</p>") if is_accuracy(results) else ""
    cls = {"PASS": "ok", "FAIL": "bad"}.get(v["verdict"], "none")
    if v["verdict"] == "no verdict":
        head = ("<p>Accuracy: <b class='none'>no verdict</b>: evaluation.py had no targets for "
                f"{html.escape(str(v['model_name']))}; scores only.</p>")
    else:
        head = (f"<p>Accuracy: <b class='{cls}'>{v['verdict']}</b> at the {html.escape(v['level'])}% level "
                f"against the targets of {html.escape(str(v['model_name']))}"
                + (f" <span class='none'>({html.escape(str(v['targets_source']))})</span>"
                   if v["targets_source"] else "") + "</p>")
    rows = []
    targets = v["targets"] or {}
    for c in v["checks"]:
        target = c.get("target", targets.get(c.get("metric")))
        bound = (f">= {fmt_num(c['low'])}" if c.get("high") is None
                 else f"{fmt_num(c['low'])} to {fmt_num(c['high'])}")
        share = c["value"] / target if isinstance(target, (int, float)) and target else None
        rows.append({"metric": c.get("metric"), "score": c.get("value"), "target": target,
                     "% of target": None if share is None else 100 * share, "needed": bound,
                     "check": "ok" if c.get("passed") else "FAIL"})
    if not rows:  # no targets: the scores alone
        rows = [{"metric": k, "score": s} for k, s in v["scores"].items() if isinstance(s, (int, float))]
    return head + html_table(rows, ["metric", "score", "target", "% of target", "needed", "check"])


def _run_section(name: str, results: dict) -> str:
    lg = results.get("loadgen") or {}
    verdict = loadgen_verdict(results)
    cls = {"VALID": "ok", "accuracy mode": "none"}.get(verdict, "bad")
    reasons = loadgen_reasons(lg) if verdict == "INVALID" else []
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
             + (" (no performance verdict in accuracy mode)" if verdict == "accuracy mode" else "") + "</p>"
             + ("<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in reasons) + "</ul>" if reasons else ""),
             _accuracy_section(results)]
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
    make_folder(path.parent, "the folder of --output")
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
    p = argparse.ArgumentParser(description="Static HTML report (tables + charts) over finished runs.",
                                allow_abbrev=False)
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
