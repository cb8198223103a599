"""results.json and requests.csv: everything about one run in files people and scripts can read.

results.json (schema below) sits next to LoadGen's logs and gathers
- "run": what the caller passed (scenario, mode, backend info, model, dataset, LoadGen settings,
  command line, start/end time, status, errors);
- "environment": versions, CPU, RAM, GPU, git commit;
- "loadgen": LoadGen's own verdict and figures parsed from its summary and detail logs
  (see harness/loadgen_logs.py), or {"error": ...} when they cannot be read;
- "requests": our statistics over the per-request records (TTFT, TPOT, ITL, E2E in ms;
  token counts; throughput; errors), with the vLLM/GuideLLM definitions of harness/records.py;
- "goodput": share and rate of requests meeting every SLO given (optional);
- "sysmetrics": CPU/memory/GPU samples and aggregates from harness/sysmetrics.py (optional).
requests.csv has one row per request (ids, token counts, start time, times relative to the
first issue, latencies in ms). Both are written to a temporary file and then linked into place, so a reader
never sees half a file and an existing result is never replaced.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from common.errors import HarnessError
from common.files import parse_json, temp_file_beside
from common.times import iso_utc
from harness.loadgen_logs import loadgen_figures
from harness.records import RequestColumns, RequestLog
from harness.sysmetrics import add_energy_per_token, gpu_names

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: ISO-8601 times, snake_case LoadGen parameters, dtype as run
RESULTS_FILE = "results.json"
REQUESTS_FILE = "requests.csv"
# Expected accuracy output next to the logs (evaluation.py --output); read by compare/report.
ACCURACY_FILE = "accuracy.json"
PERCENTILES = (50, 90, 99)
GOODPUT_METRICS = ("ttft", "tpot", "e2e")
REPO_ROOT = Path(__file__).resolve().parent.parent


# -- statistics over records -------------------------------------------------------------------
def distribution_ms(values_s: Iterable[float | None] | np.ndarray) -> dict[str, float | int | None]:
    """count, mean, min, max and p50/p90/p99 (numpy's linear interpolation, as vLLM) in ms;
    None and NaN values are left out."""
    if not isinstance(values_s, np.ndarray):
        values_s = np.array([np.nan if v is None else v for v in values_s], dtype=float)
    xs = values_s[~np.isnan(values_s)] * 1000.0
    out: dict[str, float | int | None] = {"count": int(xs.size)}
    if xs.size == 0:
        out.update({"mean": None, "min": None, "max": None, **{f"p{p}": None for p in PERCENTILES}})
        return out
    out.update({"mean": float(xs.mean()), "min": float(xs.min()), "max": float(xs.max())})
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(xs, p))
    return out


def _duration_s(cols: RequestColumns) -> float | None:
    """From the first issue to the last completion."""
    done = cols.t_done[~np.isnan(cols.t_done)]
    return float(done.max() - cols.t_issued.min()) if done.size else None


def request_stats(records: RequestLog) -> dict[str, Any]:
    """Our figures over the per-request records. Failed requests count as errors and are left
    out of the latency distributions (their times say nothing about the model)."""
    cols = records.columns()
    ok = cols.ok
    n_ok = int(ok.sum())
    duration = _duration_s(cols)
    out_tokens = int(cols.n_output[ok].sum())
    in_tokens = int(cols.n_input[ok].sum())
    error_counts: dict[str, int] = {}
    for e in cols.errors:
        if e is not None:
            error_counts[e] = error_counts.get(e, 0) + 1
    return {
        "count": len(cols),
        "completed": n_ok,
        "errors": len(cols) - n_ok,
        "error_messages": dict(sorted(error_counts.items(), key=lambda kv: -kv[1])[:10]),
        "duration_s": duration,
        "input_tokens": {"total": in_tokens, "mean": in_tokens / n_ok if n_ok else None},
        "output_tokens": {"total": out_tokens, "mean": out_tokens / n_ok if n_ok else None},
        "requests_per_s": n_ok / duration if duration else None,
        "output_tokens_per_s": out_tokens / duration if duration else None,
        "total_tokens_per_s": (in_tokens + out_tokens) / duration if duration else None,
        "ttft_ms": distribution_ms(cols.ttft()[ok]),
        "tpot_ms": distribution_ms(cols.tpot()[ok]),
        "itl_ms": distribution_ms(cols.itl(ok)),
        "e2e_ms": distribution_ms(cols.e2e()[ok]),
        "queue_ms": distribution_ms(cols.queue()[ok]),
        "ttft_from_dispatch_ms": distribution_ms(cols.ttft_from_dispatch()[ok]),
        "e2e_from_dispatch_ms": distribution_ms(cols.e2e_from_dispatch()[ok]),
    }


# -- goodput -------------------------------------------------------------------------------------
def parse_goodput(specs: list[str] | str | None) -> dict[str, float] | None:
    """`["ttft:500", "tpot:50"]` (or one space-separated string) -> {"ttft": 500.0, "tpot": 50.0} (ms)."""
    if not specs:
        return None
    if isinstance(specs, str):
        specs = specs.split()
    slo: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition(":")
        name = name.strip().lower()
        if not sep or name not in GOODPUT_METRICS:
            raise HarnessError(f"--goodput expects METRIC:MS with METRIC in {', '.join(GOODPUT_METRICS)}, "
                               f"got '{spec}'")
        try:
            ms = float(value)
        except ValueError:
            raise HarnessError(f"--goodput {name}: '{value}' is not a number of milliseconds") from None
        if not ms > 0:
            raise HarnessError(f"--goodput {name}: the limit must be > 0 ms, got {ms}")
        slo[name] = ms
    return slo


def goodput_stats(records: RequestLog, slo: dict[str, float]) -> dict[str, Any]:
    """Requests that succeeded and met every SLO: their share of all requests and their rate.

    As in vLLM, a one-token output has no TPOT and passes a TPOT limit.
    """
    cols = records.columns()
    duration = _duration_s(cols)
    good = cols.ok
    for name, limit_ms in slo.items():
        values_ms = getattr(cols, name)() * 1000.0
        missing = np.isnan(values_ms)
        with np.errstate(invalid="ignore"):
            good = good & ((missing & (name == "tpot")) | (~missing & (values_ms <= limit_ms)))
    n_good, n = int(good.sum()), len(cols)
    return {"slo_ms": dict(slo), "good_requests": n_good, "total_requests": n,
            "fraction": n_good / n if n else None,
            "requests_per_s": n_good / duration if duration else None,
            "output_tokens_per_s": int(cols.n_output[good].sum()) / duration if duration else None}


# -- environment -----------------------------------------------------------------------------------
def environment() -> dict[str, Any]:
    """Versions and hardware; anything missing is None, never an error."""
    import psutil

    packages = {}
    for dist in ("torch", "transformers", "llama-cpp-python", "mlcommons-loadgen", "numpy", "pandas",
                 "nvidia-ml-py"):
        try:
            packages[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            packages[dist] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "packages": packages,
        "cpu_model": _cpu_model(),
        "cpu_count_logical": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "ram_bytes": psutil.virtual_memory().total,
        "gpus": gpu_names(),
        "git": _git_state(),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git_state() -> dict[str, Any] | None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


# -- writing and reading ------------------------------------------------------------------------------
def write_run_results(out_dir: str | Path, run: dict, records: RequestLog,
                      sysmetrics: dict | None, goodput: dict | None = None) -> Path:
    """Write results.json and requests.csv into out_dir (the LoadGen log folder); return the
    results.json path. Refuses (HarnessError) when out_dir already holds either file."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise HarnessError(f"results folder does not exist: {out_dir}")
    for name in (RESULTS_FILE, REQUESTS_FILE):
        if (out_dir / name).exists():
            raise HarnessError(f"{out_dir / name} already exists; results are never overwritten "
                               "(choose a new --output-log-dir)")
    try:
        figures: dict[str, Any] = loadgen_figures(out_dir)
    except HarnessError as e:
        # A run that failed before LoadGen finished still gets its results.json.
        log.warning("LoadGen figures unavailable: %s", e)
        figures = {"error": str(e)}
    stats = request_stats(records)
    settle_status(run, stats, figures)
    if sysmetrics is not None:
        add_energy_per_token(sysmetrics, stats["output_tokens"]["total"])
    results = {
        "schema_version": SCHEMA_VERSION,
        "run": run,
        "environment": environment(),
        "loadgen": figures,
        "requests": stats,
        "goodput": goodput_stats(records, goodput) if goodput else None,
        "sysmetrics": sysmetrics,
        "files": {"requests": REQUESTS_FILE},
    }
    write_new(out_dir / REQUESTS_FILE, _requests_csv(records))
    path = out_dir / RESULTS_FILE
    write_new_json(path, results)
    log.info("results written to %s", path)
    return path


def settle_status(run: dict, stats: dict, figures: dict) -> None:
    """The run's final "status" and why ("status_reasons"): "interrupted" (by a signal) stays;
    otherwise failed queries, LoadGen's own ERROR lines or unreadable LoadGen logs make it
    "failed", whatever LoadGen's verdict; else "ok"."""
    reasons = []
    if run.get("status") == "interrupted":
        reasons.append(f"interrupted by {run.get('signal') or 'a signal'}")
    if stats["errors"]:
        reasons.append(f"{stats['errors']} of {stats['count']} queries failed")
    lg_errors = figures.get("errors") or []
    n_lg_errors = figures.get("num_errors") or len(lg_errors)
    if n_lg_errors:
        counts: dict[str, int] = {}
        for e in lg_errors:
            counts[e] = counts.get(e, 0) + 1
        run["loadgen_errors"] = dict(sorted(counts.items(), key=lambda kv: -kv[1])[:10])
        reasons.append(f"LoadGen logged {n_lg_errors} errors")
    if "error" in figures:
        reasons.append(f"LoadGen's logs unreadable: {figures['error']}")
    if run.get("status") != "interrupted":
        run["status"] = "failed" if reasons else "ok"
    run["status_reasons"] = reasons


REQUESTS_COLUMNS = ("request_id", "seq", "sample_index", "loadgen_query_id", "input_tokens", "output_tokens",
                    "start_time_utc", "issued_s", "dispatched_s", "first_token_s", "done_s", "queue_ms", "ttft_ms",
                    "ttft_from_dispatch_ms", "tpot_ms", "e2e_ms", "error")


def _requests_csv(records: RequestLog) -> str:
    """One row per request in issue order; `*_s` times are relative to the first issue,
    `start_time_utc` is the issue as wall-clock time."""
    cols = records.columns()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(REQUESTS_COLUMNS)
    if not len(cols):
        return buf.getvalue()
    t0 = float(cols.t_issued.min())
    width = len(str(len(cols) - 1))   # ids sort as text too

    def fmt(values: np.ndarray, scale: float, digits: int) -> list[str]:
        # Microsecond resolution in both units; absent values stay empty.
        return ["" if np.isnan(v) else f"{v * scale:.{digits}f}" for v in values.tolist()]

    relative = [fmt(t - t0, 1.0, 6) for t in (cols.t_issued, cols.t_dispatch, cols.t_first, cols.t_done)]
    latencies = [fmt(x, 1000.0, 3) for x in (cols.queue(), cols.ttft(), cols.ttft_from_dispatch(), cols.tpot(),
                                              cols.e2e())]
    starts = [iso_utc(t) for t in cols.wall_time(cols.t_issued).tolist()]
    for i, (seq, sample) in enumerate(zip(cols.seq.tolist(), cols.sample_index.tolist())):
        writer.writerow([f"r{seq:0{width}d}-s{sample}", seq, sample, int(cols.query_id[i]), int(cols.n_input[i]),
                         int(cols.n_output[i]), starts[i], *(c[i] for c in relative), *(c[i] for c in latencies),
                         cols.errors[i] or ""])
    return buf.getvalue()


def write_new_json(path: Path, obj: Any) -> None:
    """Write `obj` as JSON to a new file (never replacing one); NaN/inf become null."""
    write_new(path, json.dumps(_clean(obj), indent=1, default=str, allow_nan=False) + "\n")


def write_new(path: Path, text: str) -> None:
    """Create `path` with `text` atomically; fail if it exists (a hard link never replaces)."""
    with temp_file_beside(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise HarnessError(f"{path} already exists; results are never overwritten") from None
        except OSError:
            # File systems without hard links: checked above, replace is the next best thing.
            if path.exists():
                raise HarnessError(f"{path} already exists; results are never overwritten") from None
            os.replace(tmp, path)


def _clean(obj: Any) -> Any:
    """NaN/inf -> None so results.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _clean(obj.item())
    return obj


def check_shape(results: dict[str, Any], where: str) -> None:
    """Refuse, with one line, a results.json whose sections or the fields the summary and the report
    read have the wrong type (an edited or foreign file), instead of failing deep inside them. The
    models live here so that pydantic is imported only when a results.json is read."""
    from pydantic import BaseModel, ConfigDict

    from common.schema import parse_model

    Numbers = Optional[dict[str, Optional[float]]]

    class Section(BaseModel):
        model_config = ConfigDict(extra="allow")

    class Run(Section):
        scenario: Optional[str] = None
        mode: Optional[str] = None
        backend: Optional[dict[str, Any]] = None
        status: Optional[str] = None
        status_reasons: Optional[list[str]] = None
        errors: Optional[list[str]] = None

    class LoadGen(Section):
        result: Optional[str] = None
        invalid_reasons: Optional[list[str]] = None
        samples_per_s: Optional[float] = None
        tokens_per_s: Optional[float] = None
        ttft_ms: Numbers = None
        tpot_ms: Numbers = None
        latency_ms: Numbers = None
        early_stopping: Optional[dict[str, Any]] = None

    class Requests(Section):
        count: Optional[int] = None
        completed: Optional[int] = None
        errors: Optional[int] = None
        ttft_ms: Numbers = None
        tpot_ms: Numbers = None
        itl_ms: Numbers = None
        e2e_ms: Numbers = None
        queue_ms: Numbers = None
        ttft_from_dispatch_ms: Numbers = None

    class Sysmetrics(Section):
        aggregates: Optional[dict[str, Any]] = None
        samples: Optional[dict[str, Any]] = None

    class Goodput(Section):
        slo_ms: dict[str, float]
        fraction: Optional[float] = None
        requests_per_s: Optional[float] = None

    class Shape(Section):
        schema_version: int
        run: Optional[Run] = None
        loadgen: Optional[LoadGen] = None
        requests: Optional[Requests] = None
        environment: Optional[dict[str, Any]] = None
        goodput: Optional[Goodput] = None
        sysmetrics: Optional[Sysmetrics] = None
        accuracy: Optional[dict[str, Any]] = None
        files: Optional[dict[str, Any]] = None

    parse_model(Shape, results, f"{where}: not the shape of a results.json")


def load_results(path: str | Path) -> dict[str, Any]:
    """results.json of a run (give the file or its folder); adds "_dir" (the folder) and, when
    an accuracy file is present, "accuracy"."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    try:
        results = parse_json(file.read_text(encoding="utf-8"), str(file))
    except FileNotFoundError:
        raise HarnessError(f"no {RESULTS_FILE} in {path} (not a finished run folder?)") from None
    except UnicodeDecodeError as e:
        raise HarnessError(f"{file} is not valid JSON (not UTF-8 text: byte {e.start})") from None
    if not isinstance(results, dict) or "schema_version" not in results:
        raise HarnessError(f"{file} is not a results.json written by this harness")
    check_shape(results, str(file))
    results["_dir"] = str(file.parent)
    accuracy = file.parent / ACCURACY_FILE
    if accuracy.exists() and "accuracy" not in results:
        try:
            results["accuracy"] = parse_json(accuracy.read_text(encoding="utf-8"), str(accuracy))
        except UnicodeDecodeError:
            raise HarnessError(f"{accuracy} is not valid JSON (not UTF-8 text)") from None
    return results


def load_requests(run_dir: str | Path) -> list[dict[str, Any]]:
    """requests.csv rows with numbers as floats/ints ([] when the file is absent)."""
    path = Path(run_dir) / REQUESTS_FILE
    if not path.exists():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows.append({k: _csv_value(v) for k, v in row.items()})
    return rows


def _csv_value(v: str) -> Any:
    if v == "":
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


# -- human summary ------------------------------------------------------------------------------------
def fmt_num(x: Any) -> str:
    """Numbers for tables: 3-4 significant digits, '-' for missing."""
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int) and abs(x) < 1e6:
        return f"{x:,}" if abs(x) >= 10000 else str(x)
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 1e6 or ax < 1e-3:
        return f"{x:.3g}"
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.4f}"
