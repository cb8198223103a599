"""Read LoadGen's own figures from mlperf_log_detail.txt and mlperf_log_summary.txt.

The detail log is the structured source: one `:::MLLOG {json}` line per event, with keys such
as result_validity, result_completed_tokens_per_second or
result_first_token_99.00_percentile_latency_ns. The summary is the same numbers as text; it is
parsed as well because it is the file people read and quote, and because it alone carries the
"Recommendations" and early-stopping wording. When both hold a figure, the detail log wins.

Latencies are converted from LoadGen's nanoseconds to milliseconds.
"""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from common.errors import HarnessError

log = logging.getLogger(__name__)

SUMMARY_FILE = "mlperf_log_summary.txt"
DETAIL_FILE = "mlperf_log_detail.txt"
MLLOG_PREFIX = ":::MLLOG "

# detail-log key (after "result_") pattern -> our name for the latency family
_PERCENTILE_KEYS = [
    (re.compile(r"^result_(\d+\.\d+)_percentile_latency_ns$"), "latency_ms"),
    (re.compile(r"^result_first_token_(\d+\.\d+)_percentile_latency_ns$"), "ttft_ms"),
    (re.compile(r"^result_time_per_output_token_(\d+\.\d+)_percentile_ns$"), "tpot_ms"),
]
_SCALAR_LATENCY_KEYS = {
    "result_min_latency_ns": ("latency_ms", "min"),
    "result_max_latency_ns": ("latency_ms", "max"),
    "result_mean_latency_ns": ("latency_ms", "mean"),
    "result_first_token_min_latency_ns": ("ttft_ms", "min"),
    "result_first_token_max_latency_ns": ("ttft_ms", "max"),
    "result_first_token_mean_latency_ns": ("ttft_ms", "mean"),
    "result_time_to_output_token_min": ("tpot_ms", "min"),
    "result_time_to_output_token_max": ("tpot_ms", "max"),
    "result_time_to_output_token_mean": ("tpot_ms", "mean"),
}


def parse_detail(path: str | Path) -> dict[str, Any]:
    """Events of a detail log: {"values": {key: last value}, "errors": [...], "warnings": [...]}."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise HarnessError(f"cannot read LoadGen detail log {path}: {e.strerror}") from None
    values: dict[str, Any] = {}
    errors: list[str] = []
    warnings: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.startswith(MLLOG_PREFIX):
            continue
        try:
            event = _mllog_event(line[len(MLLOG_PREFIX):])
            key = event["key"]
        except (json.JSONDecodeError, KeyError, TypeError):
            # A run killed mid-write leaves a cut last line; anything else is not a LoadGen log.
            if lineno == len(text.splitlines()):
                log.warning("%s: last line is cut short (run interrupted?); ignored", path)
                continue
            raise HarnessError(f"{path}:{lineno} is not a LoadGen MLLOG line (corrupt detail log)") from None
        meta = event.get("metadata") or {}
        if meta.get("is_error"):
            errors.append(f"{key}: {event.get('value')}")
        elif meta.get("is_warning"):
            warnings.append(f"{key}: {event.get('value')}")
        values[key] = event.get("value")
    if not values:
        raise HarnessError(f"{path} holds no LoadGen MLLOG events (empty or not a detail log)")
    return {"values": values, "errors": errors, "warnings": warnings}


# LoadGen prints a figure it cannot compute (a percentile of one query's TPOT, a rate over zero
# time) with printf: `-nan`, `nan`, `inf`, which JSON does not have. Such a value is "not available".
_NOT_A_NUMBER = re.compile(r'("value":\s*)[-+]?(?:nan|inf)\b', re.IGNORECASE)


def _mllog_event(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(_NOT_A_NUMBER.sub(r"\1null", text))


def parse_summary(path: str | Path) -> dict[str, Any]:
    """The summary's `name : value` lines by section, plus its recommendation bullet lines.

    Returns {"results": {...}, "additional_stats": {...}, "test_parameters": {...},
    "recommendations": [str], "early_stopping": {"ttft": str, "tpot": str, ...}}.
    Numbers are converted to int/float; names are kept as LoadGen writes them.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise HarnessError(f"cannot read LoadGen summary {path}: {e.strerror}") from None
    if not any("MLPerf Results Summary" in ln for ln in lines):
        # Accuracy mode writes only the "... encountered during test." lines: no figures.
        if any(ln.strip().endswith("encountered during test.") for ln in lines):
            return {"results": {}, "additional_stats": {}, "test_parameters": {}, "recommendations": [],
                    "early_stopping": {}}
        raise HarnessError(f"{path} is not a LoadGen summary (no 'MLPerf Results Summary' header)")
    sections = {"MLPerf Results Summary": "results", "Additional Stats": "additional_stats",
                "Test Parameters Used": "test_parameters"}
    out: dict[str, Any] = {"results": {}, "additional_stats": {}, "test_parameters": {},
                           "recommendations": [], "early_stopping": {}}
    section = None
    bullets: list[str] | None = None
    for raw in lines:
        line = raw.strip()
        if line in sections:
            section, bullets = sections[line], None
            continue
        if not line or line.startswith("====") or section is None:
            continue
        if line == "Recommendations:":
            bullets = out["recommendations"]
            continue
        m = re.match(r"^(TTFT|TPOT)?\s*Early Stopping Result:$", line)
        if m:
            bullets = out["early_stopping"].setdefault((m.group(1) or "latency").lower(), [])
            continue
        if bullets is not None and section == "results" and (line.startswith("*") or ":" not in line):
            # A bullet, or the continuation of the previous bullet's sentence.
            if line.startswith("*") or not bullets:
                bullets.append(line.lstrip("* ").strip())
            else:
                bullets[-1] += " " + line
            continue
        if ":" in line:
            name, _, value = line.partition(":")
            out[section][name.strip()] = _number(value.strip())
    out["early_stopping"] = {k: " ".join(v) for k, v in out["early_stopping"].items()}
    return out


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        return None if value != value or value in (math.inf, -math.inf) else value  # -nan: not available
    return text


def _yes(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("yes", "no"):
        return value.lower() == "yes"
    return None


def loadgen_figures(log_dir: str | Path) -> dict[str, Any]:
    """LoadGen's verdict and figures for one run directory, in one flat, documented shape.

    Raises HarnessError when neither log exists or a log is corrupt.
    """
    log_dir = Path(log_dir)
    detail_path, summary_path = log_dir / DETAIL_FILE, log_dir / SUMMARY_FILE
    if not detail_path.exists() and not summary_path.exists():
        raise HarnessError(f"no LoadGen logs in {log_dir} (expected {SUMMARY_FILE} and {DETAIL_FILE})")
    detail = parse_detail(detail_path) if detail_path.exists() else {"values": {}, "errors": [], "warnings": []}
    summary = parse_summary(summary_path) if summary_path.exists() else None
    v = detail["values"]
    res = summary["results"] if summary else {}

    figures: dict[str, Any] = {
        "loadgen_version": v.get("loadgen_version"),
        "scenario": v.get("effective_scenario", res.get("Scenario")),
        "mode": v.get("effective_test_mode", res.get("Mode")),
        "result": v.get("result_validity", res.get("Result is")),
        "invalid_reasons": [],
        "min_duration_met": v.get("result_min_duration_met", _yes(res.get("Min duration satisfied"))),
        "min_queries_met": v.get("result_min_queries_met", _yes(res.get("Min queries satisfied"))),
        "perf_constraints_met": v.get("result_perf_constraints_met",
                                      _yes(res.get("Performance constraints satisfied"))),
        "early_stopping_met": v.get("early_stopping_met", _yes(res.get("Early stopping satisfied"))),
        "early_stopping": {},
        "samples_per_s": None,
        "tokens_per_s": None,
        "scheduled_samples_per_s": v.get("result_scheduled_samples_per_sec"),
        "query_count": v.get("result_query_count"),
        "overlatency_query_count": v.get("result_overlatency_query_count"),
        "latency_ms": {}, "ttft_ms": {}, "tpot_ms": {},
        "num_errors": v.get("num_errors"),
        "errors": detail["errors"],
        "warnings": detail["warnings"],
        "recommendations": summary["recommendations"] if summary else [],
        "test_parameters": {},
    }
    # "ttft_latency (ns)" -> "ttft_latency_ns"; LoadGen's own "WARNING: ..." line there is a warning
    for name, value in (summary["test_parameters"] if summary else {}).items():
        if name == "WARNING":
            figures["warnings"] = [*figures["warnings"], str(value)]
        else:
            figures["test_parameters"][_snake(name)] = value
    # Offline logs result_samples_per_second, Server result_completed_samples_per_sec.
    for key in ("result_completed_samples_per_sec", "result_samples_per_second"):
        if key in v:
            figures["samples_per_s"] = v[key]
            break
    else:
        figures["samples_per_s"] = res.get("Completed samples per second", res.get("Samples per second"))
    for key in ("result_completed_tokens_per_second", "result_tokens_per_second"):
        if key in v:
            figures["tokens_per_s"] = v[key]
            break
    else:
        figures["tokens_per_s"] = res.get("Completed tokens per second", res.get("Tokens per second"))

    for key, value in v.items():
        if key in _SCALAR_LATENCY_KEYS and isinstance(value, (int, float)):
            family, stat = _SCALAR_LATENCY_KEYS[key]
            figures[family][stat] = value / 1e6
            continue
        for pattern, family in _PERCENTILE_KEYS:
            m = pattern.match(key)
            if m and isinstance(value, (int, float)):
                figures[family][f"p{_pct_name(m.group(1))}"] = value / 1e6
    if not figures["latency_ms"] and summary:
        figures["latency_ms"] = _summary_latencies(summary["additional_stats"])

    # One string in the detail log for all of them: "TTFT constrain not met: ...  * TPOT constrain ..."
    reason = v.get("result_invalid_reason")
    if reason:
        figures["invalid_reasons"] += [r.strip() for r in reason.split("*") if r.strip()]
    if figures["result"] == "INVALID":
        for flag, why in (("min_duration_met", "min duration not satisfied"),
                          ("min_queries_met", "min queries not satisfied"),
                          ("perf_constraints_met", "performance constraints (latency) not satisfied"),
                          ("early_stopping_met", "early stopping not satisfied")):
            if figures[flag] is False:
                figures["invalid_reasons"].append(why)
    for kind in ("ttft", "tpot"):
        text = v.get(f"early_stopping_{kind}_result") or (summary["early_stopping"].get(kind) if summary else "")
        if text:
            # The detail log joins LoadGen's "* " bullets on one line; keep plain sentences.
            figures["early_stopping"][kind] = re.sub(r"\s*\*\s+|\s+", " ", text).strip()
    return figures


def _snake(name: str) -> str:
    """LoadGen's 'min_duration (ms)' -> 'min_duration_ms'."""
    m = re.fullmatch(r"(.*?)\s*\((\w+)\)", name.strip())
    base = f"{m.group(1)}_{m.group(2)}" if m else name.strip()
    return re.sub(r"\W+", "_", base).strip("_").lower()


def _pct_name(text: str) -> str:
    """'99.00' -> '99', '99.90' -> '99.9' (keys like p99, p99.9)."""
    return text.rstrip("0").rstrip(".")


def _summary_latencies(stats: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in stats.items():
        if not isinstance(value, (int, float)):
            continue
        m = re.match(r"^(\d+\.\d+) percentile latency \(ns\)$", name)
        if m:
            out[f"p{_pct_name(m.group(1))}"] = value / 1e6
        for stat in ("Min", "Max", "Mean"):
            if name == f"{stat} latency (ns)":
                out[stat.lower()] = value / 1e6
    return out
