"""Checks LoadGen config files (user.conf, audit.config) line by line before LoadGen reads them.

LoadGen's parser (TestSettings::FromConfig) reads any key it does not know, a scenario name it does
not know (`*.Ofline.target_qps`) and `key=value` without spaces as nothing at all; it wraps `-1`
to 2^64-1, cuts `2.5` to 2 for integer keys, reads `010` as octal 8, and takes a zero
min_query_count (a crash) or target_qps (a hang) as given. Its own errors (an inline `# comment`,
a word as value) come back as a bare -EINVAL. So every line is checked here first and the first
bad one is refused with one line naming file:line.

Inline comments are refused rather than stripped: the file LoadGen reads and logs stays the file
the user wrote. What LoadGen 6.0.17 reads, and for which scenarios, was measured on its Python
bindings (docs/loadgen_conf.md says how).
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass

from common.errors import HarnessError

log = logging.getLogger(__name__)

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
UINT64_MAX = 2**64 - 1
# LoadGen configs are a few KB (mlperf.conf, the largest, about 10 KB): a bigger file is a mistake,
# and is refused before it is read into memory.
MAX_CONF_BYTES = 1 << 20
MAX_SHOWN = 80  # characters of a bad line or value an error message quotes
_INTEGER = re.compile(r"\+?(0|[1-9][0-9]*)")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Rule:
    """What one key accepts: an integer or any number, its range, and the scenarios LoadGen reads
    it for (elsewhere LoadGen ignores the line)."""
    integer: bool
    minimum: float
    maximum: float = math.inf
    minimum_excluded: bool = False
    scenarios: tuple[str, ...] = SCENARIOS
    unit: str = ""

    def describe(self) -> str:
        if self.integer and (self.minimum, self.maximum) == (0, 1):
            return "0 or 1"
        kind = "an integer" if self.integer else "a number"
        low = f"> {self.minimum:g}" if self.minimum_excluded else f">= {self.minimum:g}"
        high = "" if self.maximum == math.inf else f" and <= {self.maximum:g}"
        return f"{kind} {low}{high}{self.unit}"


def _count(minimum: int = 0, **kw) -> Rule:
    return Rule(True, minimum, **kw)


_BOOL = Rule(True, 0, 1)
_MS = _count()  # durations and latency bounds, integer milliseconds
_LATENCY_SCENARIOS = ("SingleStream", "MultiStream", "Server")

RULES: dict[str, Rule] = {
    "mode": Rule(True, 0, 3),  # 0 submission, 1 accuracy, 2 performance, 3 find peak performance
    "min_duration": _MS,
    "max_duration": _MS,  # 0: no limit
    "min_query_count": _count(1),  # 0 crashes LoadGen
    "max_query_count": _count(),  # 0: no limit
    "accuracy_log_rng_seed": _count(),
    "accuracy_log_sampling_target": _count(),
    "print_timestamps": _BOOL,
    "performance_issue_unique": _BOOL,
    "performance_issue_same": _BOOL,
    "performance_issue_same_index": _count(),
    "performance_sample_count_override": _count(),  # 0: the QSL's own count
    "accuracy_sample_count_override": _count(),
    "sample_concatenate_permutation": _BOOL,
    "use_token_latencies": _BOOL,
    "infer_token_latencies": _BOOL,
    "token_latency_scaling_factor": _count(1),
    # In percent, as mlperf.conf writes it (LoadGen multiplies by 0.01): 99 is p99, 0.99 would be
    # p0.99, which is always a mistake.
    "target_latency_percentile": Rule(False, 1, 100, minimum_excluded=True, scenarios=_LATENCY_SCENARIOS,
                                      unit=" (in percent: 99 is p99)"),
    "target_latency": _count(scenarios=_LATENCY_SCENARIOS),  # 0: only TTFT/TPOT bound (LLMs)
    "target_qps": Rule(False, 0, minimum_excluded=True, scenarios=("Server", "Offline")),  # 0 hangs
    "samples_per_query": _count(1, scenarios=("MultiStream",)),
    "max_async_queries": _count(scenarios=("Server",)),
    "coalesce_queries": Rule(True, 0, 1, scenarios=("Server",)),
    "ttft_latency": _count(scenarios=("Server",)),
    "tpot_latency": _count(scenarios=("Server",)),
}

# Keys LoadGen 6.0.17 knows but does not take from user.conf or audit.config (measured: the line has
# no effect), so writing one there is a mistake worth a clear line.
NOT_READ_HERE = {
    "qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed", "test05", "test05_qsl_rng_seed",
    "test05_sample_index_rng_seed", "test05_schedule_rng_seed", "accuracy_log_probability",
    "target_duration", "server_num_issue_query_threads",
}

# Keys of audit.config that the compliance verification reads and LoadGen ignores (TEST07, TEST09).
VERIFICATION_KEYS = {"test07_accuracy_threshold", "test09_min_output_tokens", "test09_max_output_tokens"}


def _verification_value(key: str, value: str) -> str | None:
    try:
        number = float(value)
    except ValueError:
        return f"{key} must be a number, got {value!r}"
    return None if math.isfinite(number) and number >= 0 else f"{key} must be a finite number >= 0, got {value!r}"


def check_value(key: str, value: str) -> str | None:
    """Why LoadGen would mishandle `value` for `key`, or None when it reads it as written."""
    rule = RULES[key]
    if rule.integer:
        if not _INTEGER.fullmatch(value):
            if len(value) > MAX_SHOWN:
                return f"must be {rule.describe()}, got '{_clip(value)}'"
            if _NUMBER.fullmatch(value) or value.lower().startswith(("0x", "-")):
                return (f"must be {rule.describe()}, written in decimal "
                        f"(LoadGen would read '{value}' as {_loadgen_integer(value)})")
            return f"must be {rule.describe()}, got '{value}'"
        # The length first: int() of more than 4,300 digits raises instead of answering.
        if len(value.lstrip("+0")) > len(str(UINT64_MAX)) or int(value) > UINT64_MAX:
            return f"must be {rule.describe()} and below 2^64, got {_clip(value)}"
        number = float(int(value))
    else:
        if not _NUMBER.fullmatch(value):
            return f"must be {rule.describe()}, got '{_clip(value)}'"
        number = float(value)
        if not math.isfinite(number):
            return f"must be {rule.describe()}, got {_clip(value)} (too large)"
    too_low = number <= rule.minimum if rule.minimum_excluded else number < rule.minimum
    if too_low or number > rule.maximum:
        return f"must be {rule.describe()}, got {value}"
    return None


def _clip(text: str) -> str:
    """`text` as an error message shows it: a line of megabytes is not echoed back whole."""
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}... ({len(text):,} characters)"


def _loadgen_integer(value: str) -> str:
    """What C's strtoull(value, 0) gives, as LoadGen reads integer keys (for the error message)."""
    text = value.strip().lower()
    negative = text.startswith("-")
    text = text.lstrip("+-")
    base = 16 if text.startswith("0x") else 8 if text.startswith("0") and len(text) > 1 else 10
    digits = re.match({16: r"0x([0-9a-f]*)", 8: r"([0-7]*)", 10: r"([0-9]*)"}[base], text).group(1) or "0"
    n = int(digits, base)
    return str((-n) % 2**64 if negative else n)


def check_line(line: str, audit: bool = False) -> str | None:
    """Why LoadGen would mishandle this line, or None when it is a comment, blank or a good setting."""
    tokens = line.split()
    if not tokens or tokens[0] == "#":
        return None
    if tokens[0].startswith("#"):
        # LoadGen ends a line at a '#' token only: '#note' alone is read as a key without value
        # (harmless), '#two words' is a parse error.
        return None if len(tokens) == 1 else "a comment needs a space after '#' (LoadGen reads '#word' as a key)"
    if len(tokens) < 3 or tokens[1] != "=":
        return "expected 'model.scenario.key = value' with spaces around '='"
    if len(tokens) > 3:
        if tokens[3].startswith("#"):
            return "inline comments are not allowed (LoadGen refuses them): put the comment on a line of its own"
        return f"one value per line, got {_clip(' '.join(tokens[2:]))!r}"
    name, value = tokens[0], tokens[2]
    parts = name.split(".")
    if len(parts) < 3 or not all(parts):
        return f"expected 'model.scenario.key = value', got key '{_clip(name)}'"
    line_model, scenario, key = ".".join(parts[:-2]), parts[-2], parts[-1]
    if scenario != "*" and scenario not in SCENARIOS:
        return f"unknown scenario '{_clip(scenario)}' (expected '*' or one of {', '.join(SCENARIOS)})"
    if audit and line_model != "*":
        return f"LoadGen reads audit.config for model '*' only; the line for '{line_model}' would be ignored"
    if key in NOT_READ_HERE:
        return f"LoadGen does not read '{key}' from user.conf or audit.config; the line would be ignored"
    if key in VERIFICATION_KEYS:
        if not audit:
            return f"'{key}' belongs in a compliance test's audit.config, which its verification reads"
        return _verification_value(key, value)
    if key not in RULES:
        return f"unknown LoadGen key '{_clip(key)}'"
    rule = RULES[key]
    if scenario != "*" and scenario not in rule.scenarios:
        return f"LoadGen reads '{key}' only for {', '.join(rule.scenarios)}; for {scenario} it would be ignored"
    problem = check_value(key, value)
    return f"{key} {problem}" if problem else None


def check_conf(path: str, model: str, audit: bool = False) -> None:
    """Refuse, with one line naming path:line, the first line LoadGen would mishandle. `model` is the
    run's --lg-model-name: lines for other models are allowed (one user.conf often serves several)
    and logged once, since LoadGen skips them."""
    try:
        size = os.path.getsize(path)
        if size > MAX_CONF_BYTES:
            raise HarnessError(f"LoadGen config {path} is {size:,} bytes; a user.conf or audit.config is a few KB "
                               f"(limit {MAX_CONF_BYTES:,} bytes): is it the right file?")
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"cannot read LoadGen config {path}: {e}") from e
    other_models = set()
    for n, line in enumerate(lines, 1):
        problem = check_line(line, audit)
        if problem:
            raise HarnessError(f"{path}:{n}: {problem}: {_clip(line.strip())}")
        tokens = line.split()
        if tokens and not tokens[0].startswith("#"):
            line_model = tokens[0].rsplit(".", 2)[0]
            if line_model not in ("*", model):
                other_models.add(line_model)
    if other_models:
        log.info("%s: lines for %s do not apply to --lg-model-name %s", path, ", ".join(sorted(other_models)), model)


def check_loadgen_confs(user_conf: str, audit_conf: str | None, model: str) -> None:
    """The user config (required) and the audit config (when given)."""
    check_conf(user_conf, model)
    if audit_conf is not None:
        check_conf(audit_conf, model, audit=True)
