"""The runs of a submission: which ones (performance, accuracy, TEST06 per scenario), the exact
commands that make them (main.py, evaluation.py, compliance.py, run as users run them), and how
long each should take according to LoadGen's settings.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from common.errors import HarnessError
from common.redact import redact_argv
from mlsubmit.preflight import settings
from mlsubmit.registry import LOADGEN_SCENARIO, Benchmark

ROOT = Path(__file__).resolve().parent.parent
TEST06_AUDIT = ROOT / "compliance" / "TEST06" / "audit.config"
# submission.py chooses these for each run; given after '--' they would contradict the layout.
RESERVED_FLAGS = ("--scenario", "--accuracy", "--output-log-dir", "--audit-conf", "--lg-model-name")


@dataclass(frozen=True)
class Run:
    scenario: str
    kind: str       # performance | accuracy | TEST06 | TEST07 | TEST09
    index: int      # 1-based, in the order the runs are made
    total: int

    @property
    def label(self) -> str:
        return f"[{self.index}/{self.total}] {self.scenario} {self.kind}"


def audit_conf(kind: str, bench: Benchmark) -> Path:
    """A compliance test's audit.config: TEST06's is shared, TEST07's and TEST09's are per benchmark."""
    return TEST06_AUDIT if kind == "TEST06" else ROOT / "compliance" / kind / bench.name / "audit.config"


def unique_queries(kind: str, bench: Benchmark) -> int:
    """The samples a compliance test issues once each (TEST07: 990, TEST09: 6,396); 0 for a test
    that samples with repeats (TEST06)."""
    path = audit_conf(kind, bench)
    return int(_audit_value("min_query_count", 0, path)) if _audit_value("performance_issue_unique", 0, path) else 0


def plan(scenarios: list[str], kinds: tuple[str, ...]) -> list[Run]:
    pairs = [(s, k) for s in scenarios for k in kinds]
    return [Run(s, k, i, len(pairs)) for i, (s, k) in enumerate(pairs, 1)]


def parse_main_flags(passthrough: list[str]) -> argparse.Namespace:
    """The main.py flags submission.py itself needs (model, data, backend, LoadGen config); the
    rest pass through untouched and main.py judges them."""
    for arg in passthrough:
        name = arg.split("=", 1)[0]
        if name in RESERVED_FLAGS:
            raise HarnessError(f"{name} is set by submission.py for each run; leave it out of the main.py flags")
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--model-path")
    p.add_argument("--dataset-path")
    p.add_argument("--backend", default="llamacpp")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--quant-config")
    p.add_argument("--user-conf", default=str(ROOT / "user.conf"))
    p.add_argument("--total-sample-count", type=int, default=None)
    known, _ = p.parse_known_args(passthrough)
    return known


def main_command(run: Run, bench: Benchmark, passthrough: list[str], out_dir: Path) -> list[str]:
    cmd = [sys.executable, str(ROOT / "main.py"), "--scenario", run.scenario, "--lg-model-name", bench.lg_model_name]
    if run.kind == "accuracy":
        cmd.append("--accuracy")
    elif run.kind.startswith("TEST"):
        cmd += ["--audit-conf", str(audit_conf(run.kind, bench))]
    return cmd + list(passthrough) + ["--output-log-dir", str(out_dir)]


def evaluation_command(accuracy_log: Path, dataset: str, checkpoint: str | None, model_name: str | None,
                       level: str, benchmark: str | None = None) -> list[str]:
    """benchmark: a reasoning benchmark's name, graded by exact match instead of ROUGE."""
    cmd = [sys.executable, str(ROOT / "evaluation.py"), "--mlperf-accuracy-file", str(accuracy_log),
           "--dataset-file", dataset, "--accuracy-level", level]
    if benchmark:
        cmd += ["--benchmark", benchmark]
    if checkpoint:
        cmd += ["--checkpoint-path", checkpoint]
    if model_name:
        cmd += ["--model-name", model_name]
    return cmd


def compliance_command(accuracy_log: Path, scenario: str, out_dir: Path, kind: str = "TEST06",
                       bench: Benchmark | None = None, dataset: str | None = None,
                       checkpoint: str | None = None) -> list[str]:
    cmd = [sys.executable, str(ROOT / "compliance.py"), "--accuracy-log", str(accuracy_log)]
    if kind == "TEST06":
        cmd += ["--scenario", scenario]
    else:
        cmd += ["--test", kind, "--benchmark", bench.name, "--audit-conf", str(audit_conf(kind, bench))]
    if kind == "TEST07":  # graded by exact match: the ground truths and the tokenizer
        cmd += ["--dataset-file", dataset] + (["--checkpoint-path", checkpoint] if checkpoint else [])
    return cmd + ["--output-dir", str(out_dir)]


def shown(cmd: list[str]) -> str:
    """A command as a person types it in the current folder: `python main.py ...`."""
    words = ["python" if w == sys.executable else w for w in redact_argv(cmd)]
    words = [os.path.relpath(w) if w.startswith(str(ROOT) + "/") else w for w in words]
    return shlex.join(words)


# -- time estimates -----------------------------------------------------------------------------------
def _audit_value(key: str, default: float, path: Path = TEST06_AUDIT) -> float:
    for line in path.read_text().splitlines():
        k, sep, v = line.split("#", 1)[0].partition("=")
        if sep and k.strip().endswith(f".{key}"):
            return float(v)
    return default


def estimate_s(run: Run, user_conf: str, bench: Benchmark, total_samples: int,
               measured_rate: float | None) -> tuple[float, str]:
    """Seconds the run should take and why: LoadGen's minimum duration and query count from
    user.conf (mlperf.conf underneath), at the rate a finished performance run measured or
    else at the QPS the config expects."""
    lg_scenario = LOADGEN_SCENARIO.get(run.scenario, run.scenario)
    s = settings(user_conf, bench.loadgen_model(run.scenario), lg_scenario)
    if lg_scenario == "Offline":
        qps = s.offline_expected_qps
    elif lg_scenario == "Server":
        qps = s.server_target_qps
    else:  # SingleStream / MultiStream: one query after another, at the expected latency
        qps = 1e9 / max(s.single_stream_expected_latency_ns if lg_scenario == "SingleStream"
                        else s.multi_stream_expected_latency_ns, 1)
    rate = measured_rate or qps
    source = "measured" if measured_rate else "expected by user.conf"
    if run.kind == "performance":
        # Server issues at the target QPS whatever the system does; Offline as fast as it can.
        rate = qps if lg_scenario == "Server" else rate
        secs = max(s.min_duration_ms / 1000, s.min_query_count / rate)
        why = f"min_duration {s.min_duration_ms / 1000:g} s, min_query_count {s.min_query_count} at {rate:g} QPS"
    elif run.kind == "accuracy":
        secs = total_samples / rate
        why = f"up to {total_samples} samples at {rate:g} samples/s ({source})"
    else:
        path = audit_conf(run.kind, bench)
        n = _audit_value("min_query_count", s.min_query_count, path)
        if _audit_value("performance_issue_unique", 0, path):  # each sample once, however many are asked for
            n = min(n, total_samples)
        secs = max(_audit_value("min_duration", 0, path) / 1000, n / rate)
        why = f"{run.kind}: {n:g} queries at {rate:g} QPS ({source})"
    return secs, why


def fmt_duration(secs: float) -> str:
    if secs < 90:
        return f"{secs:.0f} s"
    if secs < 5400:
        return f"{secs / 60:.0f} min"
    return f"{secs / 3600:.1f} h"
