"""Accuracy targets per model name and the pass/fail rule of the MLPerf submission checker.

Targets live in `accuracy_targets.yaml` at the top of the repository: for each model name the
reference scores (as the evaluation prints them) and where they came from. The rule, as in the
MLPerf submission checker for llama2-70b:

- a score metric (rouge1, rouge2, rougeL, rougeLsum) passes when value >= target * level,
  level 0.99 ("99") or 0.999 ("99.9");
- a length metric (tokens_per_sample, gen_len) passes when target * 0.9 <= value <= target * 1.1,
  at both levels (the checker's lower target and its "accuracy-upper-limit").

Values are compared as printed (rounded), as the checker reads them back from accuracy.txt.
"""
import datetime
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from common.errors import HarnessError
from common.files import parse_yaml, read_text, temp_file_beside

log = logging.getLogger(__name__)

TARGETS_FILE = Path(__file__).resolve().parent.parent / "accuracy_targets.yaml"
LEVELS = {"99": 0.99, "99.9": 0.999}
LENGTH_METRICS = ("tokens_per_sample", "gen_len")
LENGTH_BAND = (0.9, 1.1)
# The metrics the llama2-70b reference checks; a recorded run stores the same set.
RECORDED_METRICS = ("rouge1", "rouge2", "rougeL", "tokens_per_sample")

_HEADER = """\
# Accuracy targets per model name, read by evaluation.py (--model-name picks one).
# Rule (MLPerf submission checker): a ROUGE metric passes when value >= target * 0.99 (or 0.999);
# tokens_per_sample / gen_len pass when 0.9 * target <= value <= 1.1 * target.
# The MLPerf benchmarks' own targets (llama2-70b, llama3_1-8b, ...) live in mlsubmit/registry.py.
# New entries are written by `evaluation.py --record-targets NAME` from a real run's own scores.
"""


@dataclass(frozen=True)
class MetricCheck:
    metric: str
    value: float
    target: float
    low: float
    high: float | None  # None: no upper limit
    passed: bool

    def describe(self) -> str:
        bound = f">= {self.low:.4f}" if self.high is None else f"in [{self.low:.4f}, {self.high:.4f}]"
        share = f" ({self.value / self.target:.1%} of {self.target:g})" if self.target else ""
        return f"{self.metric} {self.value}{share} {bound} {'ok' if self.passed else 'FAIL'}"


@dataclass(frozen=True)
class LevelResult:
    level: str
    checks: list[MetricCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


@dataclass(frozen=True)
class ModelTargets:
    name: str
    metrics: dict[str, float]
    source: str
    sample_count: int | None = None

    def check(self, result: dict, level: str) -> LevelResult:
        """Compare a result dict (as printed) against these targets at one level ("99" / "99.9")."""
        ratio = LEVELS[level]
        checks = []
        for metric, target in self.metrics.items():
            if metric not in result:
                raise HarnessError(f"targets for {self.name} name metric {metric!r}, which the evaluation "
                                   f"does not produce (it gives {', '.join(result)})")
            value = float(result[metric])
            if metric in LENGTH_METRICS:
                low, high = target * LENGTH_BAND[0], target * LENGTH_BAND[1]
                passed = low <= value <= high
            else:
                low, high = target * ratio, None
                passed = value >= low
            checks.append(MetricCheck(metric, value, target, low, high, passed))
        return LevelResult(level, checks)


def _read_file(path: Path, models_required: bool = True) -> dict:
    """The targets file's top-level mapping; a HarnessError for an unreadable file, bad YAML, or
    no 'models:' mapping (a missing one is allowed when not `models_required`)."""
    text = read_text(path, "accuracy targets file", allow_empty=True)
    data = parse_yaml(text, f"accuracy targets file {path}") or {}
    if not isinstance(data, dict) or not isinstance(data.get("models", None if models_required else {}), dict):
        raise HarnessError(f"accuracy targets file {path} has no 'models:' mapping")
    return data


def load_targets(path: Path = TARGETS_FILE) -> dict[str, ModelTargets]:
    """All model targets in the file (an unreadable file is a HarnessError)."""
    models = _read_file(path)["models"]
    out = {}
    for name, entry in models.items():
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        if not isinstance(metrics, dict) or not metrics or \
                not all(isinstance(v, (int, float)) and v > 0 for v in metrics.values()):
            raise HarnessError(f"accuracy targets file {path}: model {name!r} needs 'metrics:' with positive numbers")
        out[str(name)] = ModelTargets(str(name), {str(k): float(v) for k, v in metrics.items()},
                                      str(entry.get("source", "")), entry.get("sample_count"))
    return out


def get_targets(name: str, path: Path = TARGETS_FILE) -> ModelTargets:
    """Targets for one model name; an unknown name is an error, never a silent pass."""
    targets = load_targets(path)
    if name not in targets:
        raise HarnessError(f"no accuracy targets for model {name!r} in {path} (known: {', '.join(sorted(targets))}); "
                           f"pick one with --model-name, or record this run's scores with --record-targets {name}")
    return targets[name]


def record_targets(name: str, result: dict, source: str, path: Path = TARGETS_FILE,
                   metrics: tuple[str, ...] = RECORDED_METRICS) -> ModelTargets:
    """Add `name` with this run's scores of `metrics` to the targets file (atomic; an existing name
    is refused)."""
    path = Path(path)
    # An existing file that is not a targets file is refused, never replaced.
    data = _read_file(path, models_required=False) if path.exists() else {}
    models = data.setdefault("models", {})
    if name in models:
        raise HarnessError(f"{path} already has targets for {name!r}; remove that entry first to re-record it")
    metrics = {m: float(result[m]) for m in metrics}
    models[name] = {
        "metrics": metrics,
        "sample_count": int(result["gen_num"]),
        "source": source,
        "recorded": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with temp_file_beside(path) as tmp:
        with open(tmp, "w") as f:
            f.write(_HEADER)
            yaml.safe_dump(data, f, sort_keys=False, width=110)
        os.replace(tmp, path)
    log.info("recorded accuracy targets for %s in %s", name, path)
    return ModelTargets(name, metrics, source, int(result["gen_num"]))
