"""The submission checker's rules for the llama2-70b benchmarks that can be applied offline.

Each rule names its source in mlcommons/inference tools/submission/submission_checker (v6.0):
constants.py, checks/performance_check.py, checks/accuracy_check.py, checks/compliance_check.py,
checks/system_check.py; docs/submission.md lists them and what is not checked. check_tree()
returns one line per problem; an empty list means none of these rules found one.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from common.errors import HarnessError
from harness.loadgen_logs import DETAIL_FILE, parse_detail
from mlsubmit.layout import (ACC_FILES, ACCURACY_LOG, BENCHMARKS, MAX_ACCURACY_LOG_SIZE, PERF_FILES, REFERENCE_MODEL,
                             SCENARIO_FILES, TREE_SUBDIR, VERIFY_FILE, benchmark_level)
from mlsubmit import registry
from mlsubmit.system import (AVAILABILITIES, MEANINGFUL_FIELDS, MEASUREMENT_FIELDS, REQUIRED_FIELDS, SYSTEM_TYPES,
                             unfilled)

_LLAMA2 = registry.benchmark("v6.0", "llama2-70b-99")
TEST_DURATION_MS = _LLAMA2.min_duration_ms
SERVER_MIN_QUERIES = _LLAMA2.min_queries["Server"]
SAMPLES = _LLAMA2.dataset.size
# LLM_LATENCY_LIMITS per benchmark family and scenario
LATENCY_LIMITS_MS = {("llama2-70b", s): (lim.ttft_ms, lim.tpot_ms) for s, lim in _LLAMA2.latency.items()}
LATENCY_LIMITS_MS[("llama2-70b-interactive", "Server")] = LATENCY_LIMITS_MS[("llama2-70b", "Interactive")]
SERVER_LATENCY_NS = _LLAMA2.target_latency_ns["Server"]
REQUIRED_SCENARIOS = {"datacenter": ("Offline",)}  # required-scenarios-datacenter
KNOWN_SCENARIOS = ("Offline", "Server", "Interactive")
# ACC_PATTERN for the metrics llama2-70b is judged on
ACC_PATTERNS = {
    "rouge1": r".*'rouge1':\s+'?([\d.]+)'?.*",
    "rouge2": r".*'rouge2':\s+'?([\d.]+)'?.*",
    "rougeL": r".*'rougeL':\s+'?([\d.]+)'?.*",
    "tokens_per_sample": r".*'tokens_per_sample':\s([\d.]+).*",
}
TEST06_LINES = (("First token check pass: True", "First token check pass: Skipped"),
                ("EOS check pass: True",), ("Sample length check pass: True",))


def _json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        problems.append(f"{path}: missing")
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problems.append(f"{path}: not valid JSON ({e})")
        return None
    if not isinstance(obj, dict):
        problems.append(f"{path}: expected a JSON object")
        return None
    return obj


def _detail(folder: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        return parse_detail(folder / DETAIL_FILE)
    except HarnessError as e:
        problems.append(f"{folder / DETAIL_FILE}: {e}")
        return None


def check_system(path: Path, division: str, submitter: str, system: str) -> list[str]:
    """system_check.py: every required field, meaningful answers, availability, the right names."""
    problems: list[str] = []
    desc = _json(path, problems)
    if desc is None:
        return problems
    todo = unfilled(desc, REQUIRED_FIELDS, MEANINGFUL_FIELDS)
    if todo:
        problems.append(f"{path}: system description incomplete, fields to fill: {', '.join(todo)} "
                        "(SYSTEM_DESC_REQUIRED_FIELDS, SYSTEM_DESC_MEANINGFUL_RESPONSE_REQUIRED_FIELDS)")
    if "status" not in todo and str(desc.get("status", "")).lower() not in AVAILABILITIES:
        problems.append(f"{path}: status {desc.get('status')!r} is not one of {', '.join(AVAILABILITIES)} "
                        "(VALID_AVAILABILITIES)")
    for field, want in (("division", division), ("submitter", submitter), ("system_name", system)):
        if field not in todo and desc.get(field) != want:
            problems.append(f"{path}: {field} is {desc.get(field)!r} but the folder says {want!r} (system_check)")
    if "system_type" not in todo and str(desc.get("system_type", "")).replace(" ", "") not in SYSTEM_TYPES:
        problems.append(f"{path}: system_type {desc.get('system_type')!r} is not one of {', '.join(SYSTEM_TYPES)}")
    return problems


def check_performance(folder: Path, scenario: str, family: str, division: str) -> list[str]:
    """performance_check.py: VALID, no LoadGen errors, duration, queries, samples, token latencies."""
    problems: list[str] = []
    detail = _detail(folder, problems)
    if detail is None:
        return problems
    v = detail["values"]
    where = folder / DETAIL_FILE

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(f"{where}: {message}")

    need(v.get("result_validity") == "VALID", f"LoadGen result is {v.get('result_validity')}, not VALID")
    need(v.get("effective_scenario") == scenario, f"scenario {v.get('effective_scenario')} in a {scenario} folder")
    need(not detail["errors"], f"LoadGen errors: {'; '.join(detail['errors'][:3])} (loadgen_errors_check)")
    need(v.get("effective_min_duration_ms", 0) >= TEST_DURATION_MS,
         f"min_duration {v.get('effective_min_duration_ms')} ms < {TEST_DURATION_MS} ms (min_duration_check)")
    need(v.get("effective_performance_sample_count", 0) >= SAMPLES,
         f"performance_sample_count {v.get('effective_performance_sample_count')} < {SAMPLES} "
         "(performance_sample_count_check)")
    need(bool(v.get("requested_use_token_latencies")), "use_token_latencies is not enabled (llm_check)")
    if scenario == "Offline" and division == "closed":
        need(v.get("effective_samples_per_query", 0) >= SAMPLES,
             f"samples_per_query {v.get('effective_samples_per_query')} < {SAMPLES} (min_query_count_check, "
             "OFFLINE_MIN_SPQ_SINCE_V4)")
    if scenario in ("Server", "Interactive"):
        need(v.get("effective_min_query_count", 0) >= SERVER_MIN_QUERIES,
             f"min_query_count {v.get('effective_min_query_count')} < {SERVER_MIN_QUERIES} (min-queries)")
        need(bool(v.get("early_stopping_met")), "early stopping condition not met (latency_check)")
        need(v.get("effective_target_latency_ns", 0) <= SERVER_LATENCY_NS,
             f"target latency {v.get('effective_target_latency_ns')} ns > {SERVER_LATENCY_NS} (latency-constraint)")
        limits = LATENCY_LIMITS_MS.get((family, scenario))
        ttft = v.get("result_first_token_99.00_percentile_latency_ns")
        tpot = v.get("result_time_per_output_token_99.00_percentile_ns")
        if limits:
            need(ttft is not None and ttft < limits[0] * 1e6 and tpot is not None and tpot < limits[1] * 1e6,
                 f"TTFT p99 {ttft} ns / TPOT p99 {tpot} ns not under {limits[0]} ms / {limits[1]} ms "
                 "(LLM_LATENCY_LIMITS)")
    return problems


def accuracy_result(path: Path) -> tuple[dict[str, float], bool]:
    """The metrics the checker's ACC_PATTERN regexes read from accuracy.txt, and whether it has a hash line."""
    found: dict[str, float] = {}
    has_hash = False
    for line in path.read_text().splitlines():
        for metric, pattern in ACC_PATTERNS.items():
            m = re.match(pattern, line)
            if m and metric not in found:
                found[metric] = float(m.group(1))
        has_hash |= re.match(r"^hash=([\w\d]+)$", line) is not None
    return found, has_hash


def check_accuracy(folder: Path, benchmark: str, division: str) -> list[str]:
    """accuracy_check.py: targets (closed division), hash, truncated log, no errors, whole data set."""
    problems: list[str] = []
    result, has_hash = accuracy_result(folder / "accuracy.txt")
    if not has_hash:
        problems.append(f"{folder / 'accuracy.txt'}: no hash= line (accuracy_result_check)")
    if division == "closed":
        targets = registry.model_targets(REFERENCE_MODEL)
        missing = [m for m in targets.metrics if m not in result]
        if missing:
            problems.append(f"{folder / 'accuracy.txt'}: no value for {', '.join(missing)} (ACC_PATTERN)")
        else:
            level = targets.check(result, benchmark_level(benchmark))
            for c in level.checks:
                if not c.passed:
                    problems.append(f"{folder / 'accuracy.txt'}: {c.describe()} at the {level.level}% level "
                                    "(accuracy-target, accuracy-upper-limit)")
    size = (folder / ACCURACY_LOG).stat().st_size
    if size > MAX_ACCURACY_LOG_SIZE:
        problems.append(f"{folder / ACCURACY_LOG}: {size} bytes, not truncated to {MAX_ACCURACY_LOG_SIZE} "
                        "(accuracy_json_check)")
    detail = _detail(folder, problems)
    if detail is not None:
        v = detail["values"]
        if detail["errors"]:
            problems.append(f"{folder / DETAIL_FILE}: LoadGen errors: {'; '.join(detail['errors'][:3])}")
        count = v.get("effective_accuracy_sample_count", v.get("qsl_reported_total_count"))
        if count != SAMPLES:
            problems.append(f"{folder / DETAIL_FILE}: accuracy run covers {count} samples, not the data set's "
                            f"{SAMPLES} (dataset_check)")
    return problems


def check_test06(folder: Path) -> list[str]:
    """compliance_check.py, TEST06: first token (or Skipped for Offline), EOS and sample length pass."""
    lines = {ln.strip() for ln in (folder / VERIFY_FILE).read_text().splitlines()}
    failed = [alts[0].rsplit(":", 1)[0] for alts in TEST06_LINES if not lines & set(alts)]
    return [f"{folder / VERIFY_FILE}: TEST06 failed: {', '.join(failed)}"] if failed else []


def check_scenario(folder: Path, benchmark: str, division: str) -> list[str]:
    scenario = folder.name
    required = [folder / f for f in SCENARIO_FILES]
    required += [folder / TREE_SUBDIR["performance"] / f for f in PERF_FILES]
    required += [folder / TREE_SUBDIR["accuracy"] / f for f in ACC_FILES]
    required += [folder / "TEST06" / VERIFY_FILE, folder / "TEST06" / "accuracy" / ACCURACY_LOG]
    missing = [f"{p}: missing (REQUIRED_*_FILES, TEST06_ACC_PATH)" for p in required if not p.is_file()]
    if missing:
        return missing
    problems: list[str] = []
    measurements = _json(folder / "measurements.json", problems)
    if measurements is not None:
        todo = unfilled(measurements, MEASUREMENT_FIELDS, MEASUREMENT_FIELDS)
        if todo:
            problems.append(f"{folder / 'measurements.json'}: fields to fill: {', '.join(todo)} "
                            "(SYSTEM_IMP_REQUIRED_FILES)")
    family = benchmark.rsplit("-", 1)[0]
    problems += check_performance(folder / TREE_SUBDIR["performance"], scenario, family, division)
    problems += check_accuracy(folder / "accuracy", benchmark, division)
    problems += check_test06(folder / "TEST06")
    return problems


def check_tree(root: Path) -> list[str]:
    """Every problem these rules find under root (the folder holding closed/ and open/)."""
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"no submission folder at {root}")
    divisions = [d for d in ("closed", "open") if (root / d).is_dir()]
    if not divisions:
        return [f"{root}: no closed/ or open/ folder (VALID_DIVISIONS)"]
    problems: list[str] = []
    for division in divisions:
        for org in sorted(p for p in (root / division).iterdir() if p.is_dir()):
            problems += _check_submitter(org, division)
    return problems


def _check_submitter(org: Path, division: str) -> list[str]:
    problems = [f"{org / d}: missing (submission_structure.md)" for d in ("results", "systems", "code")
                if not (org / d).is_dir()]
    if problems:
        return problems
    mapping: dict[str, Any] = {}
    if (org / "model_mapping.json").exists():
        mapping = _json(org / "model_mapping.json", problems) or {}
        if division == "closed":
            problems.append(f"{org / 'model_mapping.json'}: the closed division runs the reference model only")
    for system in sorted(p for p in (org / "results").iterdir() if p.is_dir()):
        problems += check_system(org / "systems" / f"{system.name}.json", division, org.name, system.name)
        try:
            system_type = json.loads((org / "systems" / f"{system.name}.json").read_text()).get("system_type", "")
        except (OSError, json.JSONDecodeError, AttributeError):
            system_type = ""
        for bench_dir in sorted(p for p in system.iterdir() if p.is_dir()):
            benchmark = mapping.get(bench_dir.name, bench_dir.name) if division == "open" else bench_dir.name
            if benchmark not in BENCHMARKS:
                problems.append(f"{bench_dir}: {bench_dir.name!r} is not a benchmark this harness runs "
                                f"({', '.join(BENCHMARKS)}) nor mapped to one in model_mapping.json")
                continue
            if not (org / "code" / bench_dir.name).is_dir():
                problems.append(f"{org / 'code' / bench_dir.name}: missing (submission_structure.md)")
            scenarios = sorted(p.name for p in bench_dir.iterdir() if p.is_dir())
            for name in scenarios:
                if name not in KNOWN_SCENARIOS:
                    problems.append(f"{bench_dir / name}: unknown scenario (SCENARIO_MAPPING)")
                else:
                    problems += check_scenario(bench_dir / name, benchmark, division)
            for required in REQUIRED_SCENARIOS.get(str(system_type).split(",")[0].strip(), ()):
                if required not in scenarios:
                    problems.append(f"{bench_dir}: required scenario {required} missing "
                                    "(required-scenarios-datacenter)")
    return problems
