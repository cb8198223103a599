"""Run several configurations through main.py and write one report comparing them.

    python -m reporting.compare examples/compare_demo.yaml --output-dir results/compare-demo

The spec (YAML or JSON) lists runs; `defaults` fills what a run leaves out:

    defaults:
      scenario: Offline
      data: {synthetic: {num_samples: 8, input_len: 64, output_len: 16}}
      main_args: ["--max-new-tokens", "16"]
    runs:
      - name: fp16                 # folder name, unique
        backend: hf
        model: /models/llama-7b
        dtype: float16
      - name: llamacpp-q4
        backend: llamacpp          # model omitted: the embedded Gemma GGUF
        backend_args: {n_threads: 2}
        repeats: 3
        accuracy: true

Each run is a fresh `python main.py` process: `warmup_runs` unreported runs first, then
`repeats` measured ones (OUT/NAME/rep-K), then, with `accuracy: true`, one accuracy-mode run
(OUT/NAME/accuracy) scored by evaluation.py, whose accuracy.json gives the ROUGE columns
(`eval_args` passes it more flags: evaluation.py needs accuracy targets for the model, from
accuracy_targets.yaml or `--model-name`; the scores are reported whether or not they pass).
Each process's console output goes to a .log file beside its folder. The comparison lands in
OUT/report.html, OUT/comparison.md and OUT/comparison.csv.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from common.errors import HarnessError, exit_on_error
from common.files import make_folder, parse_json, parse_yaml, read_text
from common.redact import RedactingArgumentParser, redact_data, shown_command
from common.schema import parse_model
from harness.results import RESULTS_FILE, load_results

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "main.py"
EVALUATION = ROOT / "evaluation.py"


# A run's folder in the output folder: one plain name, not hidden, not '.' or '..'.
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]*$")]
# What the comparison itself writes beside the run folders (and the spec's copy).
OWN_FILES = ("data", "comparison.md", "comparison.csv", "report.html")


class SyntheticData(BaseModel):
    """`data: {synthetic: {...}}`: the flags of `python -m inputs.synthetic`, by name."""
    model_config = ConfigDict(extra="forbid")
    synthetic: dict[str, Any]


class RunSpec(BaseModel):
    """One configuration to measure; fields match the spec file's keys."""
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    name: Name
    backend: str = Field(min_length=1)
    model: str | None = None                 # --model-path (None: the backend's default)
    dtype: str | None = None
    device: str | None = None
    quant_config: str | None = None
    backend_args: dict[str, Any] = {}
    scenario: Literal["Offline", "Server"] = "Offline"
    data: str | SyntheticData | None = None  # .pkl/.parquet/.jsonl, or {"synthetic": {inputs.synthetic flags}}
    user_conf: str | None = None
    warmup_runs: int = Field(0, ge=0)
    repeats: int = Field(1, ge=1)
    accuracy: bool = False
    goodput: list[str] = []                  # e.g. ["ttft:2000", "tpot:200"]
    main_args: list[str | int | float] = []  # any further main.py flags
    eval_args: list[str | int | float] = []  # further evaluation.py flags, e.g. --model-name


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runs: list[dict[str, Any]] = Field(min_length=1)
    defaults: dict[str, Any] = {}
    output_dir: str | None = None
    title: str | None = None


def load_spec(path: str | Path) -> tuple[list[RunSpec], dict[str, Any]]:
    """Runs from a YAML/JSON spec, defaults merged in and every field checked (one line per problem)."""
    path = Path(path)
    text = read_text(path, "comparison spec")
    raw = parse_json(text, str(path)) if path.suffix == ".json" else parse_yaml(text, str(path))
    spec = parse_model(Spec, raw, str(path))
    runs, names = [], set()
    for i, entry in enumerate(spec.runs):
        where = f"{path}: run #{i + 1}" + (f" ({entry['name']})" if isinstance(entry.get("name"), str) else "")
        if "backend" in entry and entry["backend"] is None:
            raise HarnessError(f"{where}: backend: write \"null\" in quotes (a bare null is YAML for nothing)")
        run = parse_model(RunSpec, {**spec.defaults, **entry}, where)
        if run.name in names:
            raise HarnessError(f"{where}: run name '{run.name}' is used twice")
        if run.name in (*OWN_FILES, path.name):
            raise HarnessError(f"{where}: run name '{run.name}' is taken by the comparison's own files "
                               f"({', '.join(OWN_FILES)} and the spec's copy)")
        names.add(run.name)
        runs.append(run)
    return runs, spec.model_dump()


# -- running main.py ----------------------------------------------------------------------------------
def run_logged(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Run a command with its output in log_path; return its exit status."""
    log.debug("running %s", shown_command(cmd))
    with open(log_path, "w", encoding="utf-8") as f:
        f.write("$ " + shown_command(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, **(env or {})})
    return proc.returncode


def log_tail(log_path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def synthetic_dataset(options: dict[str, Any], data_dir: Path) -> Path:
    """Pickle from `python -m inputs.synthetic` for these options (made once, reused)."""
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    out = data_dir / f"synthetic-{key}.pkl"
    if out.exists():
        return out
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "inputs.synthetic", "--output", str(out)]
    for k, v in options.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    log_path = data_dir / f"synthetic-{key}.log"
    if run_logged(cmd, log_path) != 0 or not out.exists():
        raise HarnessError(f"inputs.synthetic failed for {options}: {log_tail(log_path)}")
    return out


def dataset_args(data: str | SyntheticData | None, data_dir: Path) -> list[str]:
    if data is None:
        return []
    if isinstance(data, str):
        return ["--dataset-path", data]
    opts = data.synthetic
    args = ["--dataset-path", str(synthetic_dataset(opts, data_dir))]
    if "num_samples" in opts:
        args += ["--total-sample-count", str(opts["num_samples"])]
    return args


def main_command(run: RunSpec, out_dir: Path, data: list[str], accuracy: bool = False) -> list[str]:
    cmd = [sys.executable, str(MAIN), "--backend", run.backend, "--scenario", run.scenario,
           "--output-log-dir", str(out_dir), "--no-progress", *data]
    for flag, value in (("--model-path", run.model), ("--dtype", run.dtype), ("--device", run.device),
                        ("--quant-config", run.quant_config), ("--user-conf", run.user_conf)):
        if value is not None:
            cmd += [flag, str(value)]
    for k, v in run.backend_args.items():
        cmd += ["--backend-arg", f"{k}={v}"]
    if run.goodput:
        cmd += ["--goodput", *run.goodput]
    if accuracy:
        cmd.append("--accuracy")
    return cmd + [str(a) for a in run.main_args]


def run_main(cmd: list[str], out_dir: Path) -> dict | None:
    """One main.py process; its results, or None (logged) when it failed."""
    log_path = out_dir.with_suffix(".log")
    status = run_logged(cmd, log_path)
    if not (out_dir / RESULTS_FILE).exists():
        log.error("%s failed (exit %d): %s (full log: %s)", out_dir.name, status, log_tail(log_path), log_path)
        return None
    if status != 0:
        log.warning("%s exited with %d (results kept; see %s)", out_dir, status, log_path)
    return load_results(out_dir)


def score_accuracy(acc_dir: Path, results: dict, run: RunSpec) -> dict:
    """Run evaluation.py on an accuracy run; reload its results so "accuracy" is filled in."""
    dataset = (results.get("run") or {}).get("dataset_path")
    cmd = [sys.executable, str(EVALUATION), "--mlperf-accuracy-file", str(acc_dir / "mlperf_log_accuracy.json"),
           "--dataset-file", str(dataset)]
    if run.model:
        cmd += ["--checkpoint-path", run.model]
    cmd += [str(a) for a in run.eval_args]
    log_path = acc_dir.parent / "evaluation.log"
    status = run_logged(cmd, log_path)
    # Exit 1 only means "below the accuracy target": the scores are still written.
    if status not in (0, 1):
        log.error("evaluation of %s failed (exit %d): %s", acc_dir, status, log_tail(log_path))
    return load_results(acc_dir)


def fresh_output_dir(path: Path) -> Path:
    if path.is_dir() and any(path.iterdir()):
        raise HarnessError(f"output dir {path} is not empty; choose a new --output-dir (results are never overwritten)")
    return make_folder(path, "--output-dir")


def run_all(runs: list[RunSpec], out: Path, progress: bool = True) -> dict[str, list[dict]]:
    """Run every configuration; returns name -> loaded results (failed runs left out)."""
    from tqdm import tqdm

    total = sum(r.warmup_runs + r.repeats + int(r.accuracy) for r in runs)
    groups: dict[str, list[dict]] = {}
    # The bar moves between processes only, so it never competes with a measured run.
    with tqdm(total=total, desc="compare", unit="run", disable=not progress, file=sys.stderr) as bar:
        for run in runs:
            run_dir = out / run.name
            run_dir.mkdir()
            data = dataset_args(run.data, out / "data")
            steps = ([("warmup", k) for k in range(1, run.warmup_runs + 1)]
                     + [("rep", k) for k in range(1, run.repeats + 1)] + ([("accuracy", 0)] if run.accuracy else []))
            for kind, k in steps:
                target = run_dir / (f"{kind}-{k}" if k else kind)
                bar.set_postfix_str(f"{run.name}/{target.name}")
                results = run_main(main_command(run, target, data, accuracy=kind == "accuracy"), target)
                bar.update(1)
                if results is None or kind == "warmup":
                    continue
                if kind == "accuracy":
                    results = score_accuracy(target, results, run)
                groups.setdefault(run.name, []).append(results)
    return groups


def write_comparison(groups: dict[str, list[dict]], out: Path, title: str) -> Path:
    """report.html, comparison.md and comparison.csv in out; returns the HTML path."""
    from reporting.report import TABLE_COLUMNS, build_html, group_row, markdown_table, write_html

    rows = [group_row(name, g) for name, g in groups.items()]
    (out / "comparison.md").write_text(f"# {title}\n\n" + markdown_table(rows, TABLE_COLUMNS), encoding="utf-8")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TABLE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "comparison.csv").write_text(buf.getvalue(), encoding="utf-8")
    return write_html(out / "report.html", build_html(groups, title))


def write_spec_copy(path: Path, spec: dict[str, Any], out: Path) -> None:
    """The spec beside the runs, as written; where it holds a secret (an api_key, a password in a
    URL), its parsed content with the secrets hidden instead, since results folders get shared."""
    shown = redact_data(spec)
    if shown == spec:
        text = path.read_text(encoding="utf-8")
    elif path.suffix == ".json":
        text = json.dumps(shown, indent=2) + "\n"
    else:
        import yaml
        text = "# secrets replaced by ***\n" + yaml.safe_dump(shown, sort_keys=False)
    (out / path.name).write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = RedactingArgumentParser(description="Run several configurations through main.py and compare them.",
                                allow_abbrev=False)
    p.add_argument("spec", help="YAML or JSON file listing the runs")
    p.add_argument("--output-dir", default=None, help="new folder for all runs and the report "
                   "(default: the spec's output_dir)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    runs, spec = load_spec(args.spec)
    out_arg = args.output_dir or spec.get("output_dir")
    if not out_arg:
        raise HarnessError("give --output-dir (or output_dir in the spec)")
    out = fresh_output_dir(Path(out_arg))
    write_spec_copy(Path(args.spec), spec, out)
    groups = run_all(runs, out, progress=not args.no_progress)
    failed = [r.name for r in runs if r.name not in groups]
    if not groups:
        raise HarnessError(f"every run failed; see the .log files under {out}")
    report = write_comparison(groups, out, spec.get("title") or f"Comparison: {Path(args.spec).stem}")
    print((out / "comparison.md").read_text(encoding="utf-8"))
    print(f"report: {report.resolve()}")
    if failed:
        print(f"failed runs (see their .log files): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(exit_on_error(main))
