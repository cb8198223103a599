"""The official submission checker's rules for the LLM benchmarks of mlsubmit/registry.py, per round.

Each rule names its source in mlcommons/inference tools/submission/submission_checker (v6.0, v6.1):
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
from common.files import parse_json
from harness.loadgen_logs import DETAIL_FILE, parse_detail
from mlsubmit.layout import (ACC_FILES, ACCURACY_LOG, MAX_ACCURACY_LOG_SIZE, PERF_FILES, SCENARIO_FILES, SRC_DIR,
                             TREE_SUBDIR, VERIFY_FILE, VERIFY_FILES)
from mlsubmit.registry import Benchmark, get_round
from mlsubmit.system import (AVAILABILITIES, MEANINGFUL_FIELDS, MEASUREMENT_FIELDS, REQUIRED_FIELDS, SYSTEM_TYPES)

KNOWN_SCENARIOS = ("Offline", "Server", "Interactive", "SingleStream", "MultiStream")
EARLY_STOPPING = ("Server", "SingleStream", "MultiStream")   # Config.uses_early_stopping
# ACC_PATTERN, by the checker's metric names
ACC_PATTERNS = {
    "ROUGE1": r".*'rouge1':\s+'?([\d.]+)'?.*",
    "ROUGE2": r".*'rouge2':\s+'?([\d.]+)'?.*",
    "ROUGEL": r".*'rougeL':\s+'?([\d.]+)'?.*",
    "ROUGELSUM": r".*'rougeLsum':\s+'?([\d.]+)'?.*",
    "GEN_LEN": r".*'gen_len':\s([\d.]+).*",
    "TOKENS_PER_SAMPLE": r".*'tokens_per_sample':\s([\d.]+).*",
    "exact_match": r".*'exact_match':\s([\d.]+).*",
}
# compliance_check.py: TEST07 and TEST09 pass when their verify file says so
LATER_TESTS = ("TEST07", "TEST09")
TEST06_LINES = (("First token check pass: True", "First token check pass: Skipped"),
                ("EOS check pass: True",), ("Sample length check pass: True",))


def _json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        obj = parse_json(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        problems.append(f"{path}: missing")
        return None
    except UnicodeDecodeError as e:
        problems.append(f"{path}: not valid JSON ({e})")
        return None
    except HarnessError as e:
        problems.append(str(e))
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
    # The official checker asks for the fields and an answer in some; "TO FILL" hints are the user's.
    todo = [f for f in REQUIRED_FIELDS if f not in desc] + \
        [f for f in MEANINGFUL_FIELDS if f in desc and not str(desc[f]).strip()]
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


def check_performance(folder: Path, scenario: str, bench: Benchmark, division: str) -> list[str]:
    """performance_check.py: LoadGen errors, sample count, seeds, latency (early stopping), query
    counts, duration, token latencies. LoadGen's VALID/INVALID itself is not a rule of it."""
    problems: list[str] = []
    detail = _detail(folder, problems)
    if detail is None:
        return problems
    v = detail["values"]
    where = folder / DETAIL_FILE
    # As the official checker, the rules of the scenario LoadGen ran: an Interactive run is a Server run.
    scenario = v.get("effective_scenario", scenario)

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(f"{where}: {message}")

    need(not detail["errors"], f"LoadGen errors: {'; '.join(detail['errors'][:3])} (loadgen_errors_check)")
    need(v.get("effective_performance_sample_count", 0) >= bench.performance_sample_count,
         f"performance_sample_count {v.get('effective_performance_sample_count')} < {bench.performance_sample_count} "
         "(performance_sample_count_check)")
    for key, want in get_round(bench.round).seeds.items():
        need(v.get(f"effective_{key}") == want, f"{key} {v.get(f'effective_{key}')} is not {bench.round}'s {want} "
             "(seeds_check)")
    if scenario in EARLY_STOPPING:
        if not v.get("early_stopping_met"):
            need(False, "early stopping condition not met (latency_check)")
        elif scenario in bench.target_latency_ns:
            need(v.get("effective_target_latency_ns", 0) <= bench.target_latency_ns[scenario],
                 f"target latency {v.get('effective_target_latency_ns')} ns > {bench.target_latency_ns[scenario]} "
                 "(latency_check, latency-constraint)")
    else:
        want = bench.min_queries.get(scenario)
        need(not want or v.get("effective_min_query_count", 0) >= want,
             f"min_query_count {v.get('effective_min_query_count')} < {want} (min_query_count_check)")
    if scenario == "Offline" and division == "closed":
        need(v.get("effective_samples_per_query", 0) >= bench.offline_min_samples_per_query,
             f"samples_per_query {v.get('effective_samples_per_query')} < {bench.offline_min_samples_per_query} "
             "(min_query_count_check, OFFLINE_MIN_SPQ_SINCE_V4)")
    need(v.get("effective_min_duration_ms", 0) >= bench.min_duration_ms,
         f"min_duration {v.get('effective_min_duration_ms')} ms < {bench.min_duration_ms} ms (min_duration_check)")
    if not v.get("requested_use_token_latencies"):
        need(False, "use_token_latencies is not enabled (llm_check)")
    elif scenario in ("Server", "Interactive"):
        lim = bench.latency.get(scenario)
        ttft = v.get("result_first_token_99.00_percentile_latency_ns")
        tpot = v.get("result_time_per_output_token_99.00_percentile_ns")
        need(lim is not None and ttft is not None and tpot is not None
             and ttft < lim.ttft_ms * 1e6 and tpot < lim.tpot_ms * 1e6,
             f"TTFT p99 {ttft} ns / TPOT p99 {tpot} ns not under "
             f"{lim.ttft_ms if lim else '?'} ms / {lim.tpot_ms if lim else '?'} ms (llm_check, LLM_LATENCY_LIMITS)")
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


def check_accuracy(folder: Path, bench: Benchmark, division: str) -> list[str]:
    """accuracy_check.py: targets (closed division), hash, truncated log, no errors, whole data set."""
    problems: list[str] = []
    result, has_hash = accuracy_result(folder / "accuracy.txt")
    if not has_hash:
        problems.append(f"{folder / 'accuracy.txt'}: no hash= line (accuracy_result_check)")
    if division == "closed":
        for m in bench.metrics:
            if m.checker not in result:
                problems.append(f"{folder / 'accuracy.txt'}: no value for {m.name} (ACC_PATTERN)")
            elif not m.passes(result[m.checker]):
                lo, hi = m.bounds
                bound = f">= {lo:.4f}" if hi is None else f"in [{lo:.4f}, {hi:.4f}]"
                problems.append(f"{folder / 'accuracy.txt'}: {m.name} {result[m.checker]} not {bound} "
                                f"({bench.name}: accuracy-target, accuracy-upper-limit)")
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
        if count != bench.dataset.accuracy_count:
            problems.append(f"{folder / DETAIL_FILE}: accuracy run covers {count} samples, not "
                            f"{bench.dataset.accuracy_count} (dataset_check: accuracy-sample-count, dataset-size)")
    return problems


def check_test06(folder: Path) -> list[str]:
    """compliance_check.py, TEST06: first token (or Skipped for Offline), EOS and sample length pass."""
    lines = {ln.strip() for ln in (folder / VERIFY_FILE).read_text().splitlines()}
    failed = [alts[0].rsplit(":", 1)[0] for alts in TEST06_LINES if not lines & set(alts)]
    return [f"{folder / VERIFY_FILE}: TEST06 failed: {', '.join(failed)}"] if failed else []


def check_test_pass(folder: Path, kind: str) -> list[str]:
    """compliance_check.py, TEST07 / TEST09: "TEST PASS" in the verify file."""
    path = folder / VERIFY_FILES[kind]
    return [] if "TEST PASS" in path.read_text() else [f"{path}: {kind} failed (no TEST PASS)"]


def check_scenario(folder: Path, bench: Benchmark, division: str) -> list[str]:
    scenario = folder.name
    required = [folder / f for f in SCENARIO_FILES]
    required += [folder / TREE_SUBDIR["performance"] / f for f in PERF_FILES]
    required += [folder / TREE_SUBDIR["accuracy"] / f for f in ACC_FILES]
    if bench.test06:
        required += [folder / "TEST06" / VERIFY_FILE, folder / "TEST06" / "accuracy" / ACCURACY_LOG]
    later = [k for k in LATER_TESTS if getattr(bench, k.lower())]
    required += [folder / k / VERIFY_FILES[k] for k in later]
    missing = [f"{p}: missing (REQUIRED_*_FILES, TEST06_ACC_PATH)" for p in required if not p.is_file()]
    if missing:
        return missing
    problems: list[str] = []
    measurements = _json(folder / "measurements.json", problems)
    if measurements is not None:
        todo = [f for f in MEASUREMENT_FIELDS if f not in measurements]
        if todo:
            problems.append(f"{folder / 'measurements.json'}: fields to fill: {', '.join(todo)} "
                            "(SYSTEM_IMP_REQUIRED_FILES)")
    problems += check_performance(folder / TREE_SUBDIR["performance"], scenario, bench, division)
    problems += check_accuracy(folder / "accuracy", bench, division)
    if bench.test06:
        problems += check_test06(folder / "TEST06")
    for kind in later:
        problems += check_test_pass(folder / kind, kind)
    return problems


def check_tree(root: Path, round_name: str | None = None) -> list[str]:
    """Every problem these rules of MLPerf round_name (default: the newest) find under root (the
    folder holding closed/ and open/)."""
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"no submission folder at {root}")
    divisions = [d for d in ("closed", "open") if (root / d).is_dir()]
    if not divisions:
        return [f"{root}: no closed/ or open/ folder (VALID_DIVISIONS)"]
    problems: list[str] = []
    for division in divisions:
        for org in sorted(p for p in (root / division).iterdir() if p.is_dir()):
            problems += _check_submitter(org, division, get_round(round_name).benchmarks)
    return problems


def _check_submitter(org: Path, division: str, benchmarks: dict[str, Benchmark]) -> list[str]:
    problems = [f"{org / d}: missing (submission_structure.md, SRC_PATH)" for d in ("results", "systems", SRC_DIR)
                if not (org / d).is_dir()]
    if problems:
        return problems
    mapping: dict[str, Any] = {}
    if division == "open" and (org / "model_mapping.json").exists():  # the closed division's is not read
        mapping = _json(org / "model_mapping.json", problems) or {}
    for system in sorted(p for p in (org / "results").iterdir() if p.is_dir()):
        problems += check_system(org / "systems" / f"{system.name}.json", division, org.name, system.name)
        try:
            system_type = json.loads((org / "systems" / f"{system.name}.json").read_text()).get("system_type", "")
        except (OSError, json.JSONDecodeError, AttributeError):
            system_type = ""
        for bench_dir in sorted(p for p in system.iterdir() if p.is_dir()):
            name = mapping.get(bench_dir.name, bench_dir.name)
            if name not in benchmarks:
                problems.append(f"{bench_dir}: {bench_dir.name!r} is not a benchmark of this round that this harness "
                                f"runs ({', '.join(benchmarks)}) nor mapped to one in model_mapping.json")
                continue
            bench = benchmarks[name]
            scenarios = sorted(p.name for p in bench_dir.iterdir() if p.is_dir())
            for scen in scenarios:
                if scen not in KNOWN_SCENARIOS:
                    problems.append(f"{bench_dir / scen}: unknown scenario (SCENARIO_MAPPING)")
                else:
                    problems += check_scenario(bench_dir / scen, bench, division)
            if division == "closed":  # check_scenarios: the open division may submit any
                for required in bench.required.get(str(system_type).replace(" ", ""), ()):
                    if required not in scenarios:
                        problems.append(f"{bench_dir}: required scenario {required} missing "
                                        f"(required-scenarios-{str(system_type).replace(',', '-')})")
                one_of = bench.one_of(str(system_type))
                if one_of and not set(one_of) & set(scenarios):
                    problems.append(f"{bench_dir}: neither {' nor '.join(one_of)} (check_scenarios: one of them is "
                                    "required where both are optional)")
    return problems
