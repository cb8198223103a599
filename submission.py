"""Run, check and lay out an MLPerf submission of this harness (the LLM benchmarks of mlsubmit/registry.py).

    python submission.py --submitter ORG --system-name NAME --division closed --round v6.1 \
        --benchmark llama2-70b-99.9 --system-type datacenter --output-dir DIR -- [main.py flags]
    python submission.py --check DIR

Before the first run it lists what will break the round's rules (LoadGen's seeds, durations and
query counts, data set coverage); the closed division refuses then unless --allow-unsubmittable.
For each of the round's scenarios of the benchmark and system type: the performance run, the accuracy run (scored by evaluation.py) and TEST06
(compliance/TEST06/audit.config, checked by compliance.py), laid out as
DIVISION/ORG/results/NAME/BENCHMARK/SCENARIO/... with the system description, measurements.json,
user.conf, mlperf.conf and a README.md of the exact commands; accuracy logs truncated as
truncate_accuracy_log.py does, the complete run folders kept in DIR/run_logs/. A run lands in
the tree only once it has finished; running the same command again resumes. --check applies the
submission checker's rules that can be applied offline (docs/submission.md).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from accuracy.reasoning import BENCHMARKS as REASONING_BENCHMARKS
from common.errors import HarnessError, exit_on_error
from common.files import make_folder, read_text
from common.redact import RedactingArgumentParser, redact_argv
from common.times import stamp
from harness.loadgen_logs import loadgen_figures
from harness.results import environment, write_new, write_new_json
from mlsubmit import layout, preflight, registry
from mlsubmit.check import check_tree
from mlsubmit.runs import (Run, compliance_command, estimate_s, evaluation_command, fmt_duration, main_command,
                           parse_main_flags, plan, shown, unique_queries)
from mlsubmit.system import AVAILABILITIES, measurements, system_description

HERE = Path(__file__).resolve().parent
log = logging.getLogger("submission")


def get_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    own, passthrough = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = RedactingArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--check", metavar="DIR", help="check the submission under DIR and list every problem")
    p.add_argument("--submitter", help="organisation name (a folder name)")
    p.add_argument("--system-name", help="system description id (a folder name)")
    p.add_argument("--division", choices=layout.DIVISIONS)
    p.add_argument("--round", choices=registry.rounds(), default=registry.DEFAULT_ROUND,
                   help="MLPerf Inference round whose rules the submission follows")
    p.add_argument("--benchmark", default="llama2-70b-99.9",
                   help="benchmark of the round (llama2-70b-99.9, llama3.1-8b, llama3.1-8b-edge, ...)")
    p.add_argument("--system-type", choices=registry.SYSTEM_TYPES, default=None,
                   help="datacenter, edge or both (default: the first the benchmark belongs to)")
    p.add_argument("--scenarios", nargs="+", default=None,
                   help="a subset of the round's scenarios (default: all of them for the system type)")
    p.add_argument("--status", choices=AVAILABILITIES, default="available",
                   help="availability of the system, as systems/NAME.json states it")
    p.add_argument("--allow-unsubmittable", action="store_true",
                   help="closed division: run even when the preflight finds rules the runs will break")
    p.add_argument("--model-name", default=None,
                   help="the model's name (default: as evaluation.py names it from --model-path)")
    p.add_argument("--output-dir", help="submission folder: closed/ or open/ and run_logs/ go here")
    args = p.parse_args(own)
    if not args.check:
        missing = [f"--{n.replace('_', '-')}" for n in ("submitter", "system_name", "division", "output_dir")
                   if getattr(args, n) is None]
        if missing:
            p.error(f"the following arguments are required to run a submission: {', '.join(missing)}")
    return args, passthrough


class Submission:
    """One submission folder being filled: its settings, where each file goes, and its runs."""

    def __init__(self, args: argparse.Namespace, passthrough: list[str]):
        from evaluation import default_model_name
        from inputs.demo import default_dataset_path

        self.args, self.passthrough = args, passthrough
        self.flags = parse_main_flags(passthrough)
        self.user_conf = read_text(self.flags.user_conf, "user config", allow_empty=True)
        if os.path.exists("audit.conf"):
            # main.py would apply it to every run: performance and accuracy runs must not be audited.
            raise HarnessError("audit.conf in the current folder would turn every run into a compliance run; "
                               "move it away")
        self.submitter = layout.check_name("submitter", args.submitter)
        self.system = layout.check_name("system-name", args.system_name)
        self.bench = registry.benchmark(args.round, args.benchmark)
        self.benchmark = self.bench.name
        self.system_type = args.system_type or next(iter(self.bench.required))
        allowed = self.bench.scenarios(self.system_type)
        self.scenarios = args.scenarios or list(allowed)
        unknown = [s for s in self.scenarios if s not in allowed]
        if unknown:
            raise HarnessError(f"{', '.join(unknown)}: not a scenario of {self.benchmark} for a {self.system_type} "
                               f"system in {args.round} (its scenarios: {', '.join(allowed)})")
        self.model_name = args.model_name or default_model_name(self.flags.model_path)
        self.reference = self.model_name == self.bench.lg_model_name or args.division == "closed"
        # An open submission of another model names its folder after the model (model_mapping.json).
        self.folder = self.benchmark if args.division == "closed" or self.reference else \
            layout.check_name("model-name", self.model_name)
        if args.division == "closed" and self.model_name != self.bench.lg_model_name:
            log.warning("closed division with %s, not the reference model of %s: its accuracy will be judged "
                        "against the benchmark's targets", self.model_name, self.benchmark)
        self.dataset = self.flags.dataset_path or self.demo_dataset(default_dataset_path)
        self.out = Path(args.output_dir).resolve()
        self.logs = self.out / "run_logs"
        self.org = layout.submitter_dir(self.out, args.division, self.submitter)
        # the compliance tests the registry names for the benchmark (test06, test07, test09)
        self.kinds = tuple(k for k in layout.RUN_KINDS if not k.startswith("TEST") or getattr(self.bench, k.lower()))
        self.runs = plan(self.scenarios, self.kinds)
        self.total: int | None = None          # the samples the runs use (check_rules counts them)
        self.rates: dict[str, float] = {}   # samples/s measured by each scenario's performance run
        self.unsubmittable: list[str] = []  # the preflight's findings, when allowed

    def demo_dataset(self, demo_path) -> str:
        """The benchmark's shipped demo set, the one main.py picks for its --lg-model-name."""
        if self.bench.dataset.demo is None:
            raise HarnessError(f"no demo set of {self.benchmark} is shipped; give its data with --dataset-path")
        return demo_path(self.flags.model_path, demo=self.bench.dataset.demo)

    def check_rules(self) -> list[str]:
        """The preflight: said before the first run; the closed division stops on it unless allowed."""
        total = self.flags.total_sample_count
        if total is None:
            from common.tables import read_table
            total = len(read_table(self.dataset, "--dataset-path"))
        self.total = total
        found = preflight.problems(self.bench, self.scenarios, self.flags.user_conf, total)
        one_of = self.bench.one_of(self.system_type)
        if self.args.division == "closed" and one_of and not set(one_of) & set(self.scenarios):
            found.append(f"a closed {self.benchmark} submission needs {' or '.join(one_of)} besides "
                         f"{', '.join(self.scenarios)} (check_scenarios)")
        for kind in self.kinds:
            need = unique_queries(kind, self.bench) if kind.startswith("TEST") else 0
            if need > total:
                found.append(f"{kind} logs each of its {need} samples once; the data set has {total}, so its runs "
                             "cover only those (compliance_check.py reads only the verdict)")
        for line in found:
            print(f"preflight: {line}", file=sys.stderr)
        if found and self.args.division == "closed" and not self.args.allow_unsubmittable:
            raise HarnessError(f"{len(found)} rule(s) of MLPerf {self.args.round} would be broken (above); the closed "
                               "division refuses such runs unless --allow-unsubmittable is given")
        return found

    def scenario_dir(self, scenario: str) -> Path:
        return layout.scenario_dir(self.out, self.args.division, self.submitter, self.system, self.folder, scenario)

    def full_logs(self, run: Run) -> Path:
        return self.logs / self.system / self.folder / run.scenario / run.kind

    # -- settings kept for resuming ------------------------------------------------------------------
    def settings(self) -> dict:
        return {"submitter": self.submitter, "system_name": self.system, "division": self.args.division,
                "round": self.args.round, "benchmark": self.benchmark, "system_type": self.system_type,
                "status": self.args.status, "model_name": self.model_name,
                "main_flags": redact_argv(self.passthrough),
                "user_conf": self.user_conf, "cwd": os.getcwd()}

    def claim(self) -> None:
        """Lock the folder for this process; a resumed submission must use the same settings."""
        make_folder(self.out, "--output-dir")
        self.logs.mkdir(exist_ok=True)
        self._lock = open(self.logs / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HarnessError(f"another submission.py is writing {self.out}") from None
        record = self.logs / f"submission-{self.system}-{self.folder}.json"
        mine = self.settings()
        if record.exists():
            before = json.loads(record.read_text())
            changed = [k for k in mine if before.get(k) != mine[k]]
            if changed:
                raise HarnessError(f"{self.out} holds runs made with other settings ({', '.join(changed)} differ); "
                                   "use the same command to resume, or a new --output-dir")
        else:
            write_new_json(record, mine)
        shutil.rmtree(self.logs / ".staging", ignore_errors=True)  # left by an interrupted run

    # -- files written once --------------------------------------------------------------------------
    def write_static(self) -> None:
        systems = self.org / "systems" / f"{self.system}.json"
        if not systems.exists():  # once written, it is the user's to fill in
            systems.parent.mkdir(parents=True, exist_ok=True)
            desc = system_description(self.args.division, self.submitter, self.system, self.flags.backend,
                                      str(self.out), self.args.status, self.system_type)
            write_new(systems, json.dumps(desc, indent=2) + "\n")
        code = self.org / layout.SRC_DIR / self.folder / "README.md"
        if not code.exists():
            code.parent.mkdir(parents=True, exist_ok=True)
            write_new(code, code_readme(self.folder))
        if self.folder != self.benchmark:
            self.add_model_mapping()

    def add_model_mapping(self) -> None:
        path = self.org / "model_mapping.json"
        mapping = json.loads(path.read_text()) if path.exists() else {}
        if mapping.get(self.folder) == self.benchmark:
            return
        if self.folder in mapping:
            raise HarnessError(f"{path} maps {self.folder} to {mapping[self.folder]}, not {self.benchmark}")
        mapping[self.folder] = self.benchmark
        tmp = path.with_name(".model_mapping.json.tmp")
        tmp.write_text(json.dumps(mapping, indent=2) + "\n")
        os.replace(tmp, path)

    def write_scenario_files(self, scenario: str) -> None:
        folder = self.scenario_dir(scenario)
        files = {
            "user.conf": self.user_conf,
            "mlperf.conf": (HERE / "mlperf.conf").read_text(),
            "measurements.json": json.dumps(measurements(self.flags.backend, self.flags.model_path, self.model_name,
                                                         self.flags.dtype, self.flags.quant_config), indent=2) + "\n",
            "README.md": self.scenario_readme(scenario),
        }
        for name, text in files.items():
            if not (folder / name).exists():
                write_new(folder / name, text)

    # -- the runs ------------------------------------------------------------------------------------
    def commands(self, run: Run, run_dir: Path) -> list[list[str]]:
        log_file = run_dir / layout.ACCURACY_LOG
        cmds = [main_command(run, self.bench, self.passthrough, run_dir)]
        if run.kind == "accuracy":
            reasoning = self.bench.name if self.bench.name in REASONING_BENCHMARKS else None
            cmds.append(evaluation_command(log_file, self.dataset, self.flags.model_path,
                                           self.bench.lg_model_name if self.reference else None, self.bench.level,
                                           reasoning))
        elif run.kind.startswith("TEST"):
            cmds.append(compliance_command(log_file, run.scenario, run_dir, run.kind, self.bench, self.dataset,
                                           self.flags.model_path))
        return cmds

    def estimate(self, run: Run) -> tuple[float, str]:
        return estimate_s(run, self.flags.user_conf, self.bench, self.total or self.bench.dataset.size,
                          self.rates.get(run.scenario))

    def make(self, run: Run, started: float) -> None:
        final = self.scenario_dir(run.scenario) / layout.TREE_SUBDIR[run.kind]
        full = self.full_logs(run)
        if final.exists():
            print(f"{run.label}: in the tree already, kept")
            self.note_rate(run, full)
            return
        if full.exists():  # finished before an interruption, never placed: keep it aside, run again
            full.rename(full.with_name(f"{run.kind}.incomplete-{stamp()}"))
        remaining = sum(self.estimate(r)[0] for r in self.runs[run.index - 1:])
        secs, why = self.estimate(run)
        print(f"{run.label}: about {fmt_duration(secs)} ({why}); about {fmt_duration(remaining)} left in all, "
              f"{fmt_duration(time.time() - started)} so far", flush=True)
        stage = self.logs / ".staging" / f"{run.scenario}-{run.kind}"
        stage.mkdir(parents=True)
        run_dir = stage / "run"
        t0 = time.time()
        cmds = self.commands(run, run_dir)
        rc = subprocess.run(cmds[0]).returncode
        if rc != 0:
            self.fail(run, run_dir, f"main.py exited with {rc}")
        built = stage / "tree"
        self.post_process(run, run_dir, built, cmds[1:])
        full.parent.mkdir(parents=True, exist_ok=True)
        os.rename(run_dir, full)
        layout.place(built, final)
        shutil.rmtree(stage)
        self.note_rate(run, full)
        print(f"{run.label}: done in {fmt_duration(time.time() - t0)} -> {final}", flush=True)

    def post_process(self, run: Run, run_dir: Path, built: Path, cmds: list[list[str]]) -> None:
        built.mkdir()
        if run.kind == "performance":
            for name in layout.PERF_FILES:
                layout.copy_new(run_dir / name, built / name)
            verdict = loadgen_figures(run_dir)
            print(f"{run.label}: LoadGen result {verdict.get('result')} "
                  f"{'; '.join(verdict.get('invalid_reasons') or [])}".rstrip())
        elif run.kind == "accuracy":
            rc = subprocess.run(cmds[0]).returncode
            if rc not in (0, 1) or not (run_dir / "accuracy.txt").exists():
                self.fail(run, run_dir, f"evaluation.py exited with {rc}")
            for name in layout.PERF_FILES + ("accuracy.txt",):
                layout.copy_new(run_dir / name, built / name)
            # accuracy.txt holds the full log's hash; the tree gets the truncated log.
            layout.truncate_accuracy_log(run_dir / layout.ACCURACY_LOG, built / layout.ACCURACY_LOG)
        else:
            rc = subprocess.run(cmds[0]).returncode
            verify = run_dir / layout.VERIFY_FILES[run.kind]
            if rc not in (0, 1) or not verify.exists():
                self.fail(run, run_dir, f"compliance.py exited with {rc}")
            if rc == 1:
                print(f"{run.label}: {run.kind} checks FAILED (see {verify.name})")
            layout.copy_new(verify, built / verify.name)
            layout.copy_new(run_dir / layout.ACCURACY_LOG, built / "accuracy" / layout.ACCURACY_LOG)

    def note_rate(self, run: Run, full: Path) -> None:
        if run.kind == "performance" and full.is_dir():
            try:
                rate = loadgen_figures(full).get("samples_per_s")
            except HarnessError:
                rate = None
            if rate:
                self.rates[run.scenario] = float(rate)

    def fail(self, run: Run, run_dir: Path, why: str) -> None:
        kept = ""
        # main.py's folder, or the .partial-PID one it left when it failed before publishing
        found = [run_dir] if run_dir.exists() else sorted(run_dir.parent.glob(f"{run_dir.name}.partial-*"))
        if found:
            dest = self.logs / "failed" / f"{run.scenario}-{run.kind}-{stamp()}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(found[0], dest)
            kept = f"; its logs: {dest}"
        shutil.rmtree(self.logs / ".staging", ignore_errors=True)
        raise HarnessError(f"{run.label} failed ({why}){kept}; nothing was added to the submission tree, "
                           "run the same command again to resume")

    def scenario_readme(self, scenario: str) -> str:
        lines = [f"# {self.benchmark} {scenario}", "",
                 f"Made by submission.py of llm-loadgen-harness {harness_version()} (see {layout.SRC_DIR}/{self.folder}/), "
                 f"backend {self.flags.backend}, model {self.model_name}.", "",
                 f"Each run, as run in `{os.getcwd()}` (complete logs in `run_logs/` beside the submission "
                 "tree; the tree holds LoadGen's logs and the truncated accuracy log):", ""]
        for run in (r for r in self.runs if r.scenario == scenario):
            lines += [f"## {layout.TREE_SUBDIR[run.kind]}", "", "```"]
            lines += [shown(c) for c in self.commands(run, self.full_logs(run))] + ["```", ""]
        if self.unsubmittable:
            lines += ["## Not submittable as it stands", "", f"Made with --allow-unsubmittable: these runs break MLPerf "
                      f"{self.args.round}'s rules, as the preflight said before the first run:", ""]
            lines += [f"- {line}" for line in self.unsubmittable] + [""]
        lines += ["The whole submission:", "", "```", shown(["python", str(HERE / "submission.py"), *sys.argv[1:]]),
                  "```", ""]
        return "\n".join(lines)


def harness_version() -> str:
    try:
        version = metadata.version("llm-loadgen-harness")
    except metadata.PackageNotFoundError:
        version = "(not installed)"
    git = environment().get("git") or {}
    commit = git.get("commit")
    return f"{version}, commit {commit[:12]}{' with local changes' if git.get('dirty') else ''}" if commit else version


def code_readme(benchmark: str) -> str:
    return (f"# {benchmark}: code\n\nThe runs were made with llm-loadgen-harness {harness_version()}: an MLPerf-style "
            "LoadGen harness for LLM inference (main.py, SUT_offline.py, SUT_server.py, evaluation.py, "
            "compliance.py, submission.py and their packages).\nEach scenario's README.md gives the exact "
            "commands of its runs.\n")


def run_submission(args: argparse.Namespace, passthrough: list[str]) -> int:
    sub = Submission(args, passthrough)
    sub.unsubmittable = sub.check_rules()
    sub.claim()
    sub.write_static()
    started = time.time()
    print(f"{len(sub.runs)} runs for {args.division}/{sub.submitter}/results/{sub.system}/{sub.folder} "
          f"({', '.join(sub.scenarios)}, MLPerf {args.round}) in {sub.out}", flush=True)
    try:
        for run in sub.runs:
            sub.make(run, started)
            if run is sub.runs[-1] or sub.runs[run.index].scenario != run.scenario:  # its last run
                sub.write_scenario_files(run.scenario)
    finally:
        shutil.rmtree(sub.logs / ".staging", ignore_errors=True)
    problems = check_tree(sub.out, args.round)
    print(f"all {len(sub.runs)} runs in {sub.out} after {fmt_duration(time.time() - started)}; "
          f"`python submission.py --check {sub.out}` lists {len(problems)} problem(s) left")
    return 0


INTERRUPTED = "interrupted: the unfinished run was not added; run the same command again to resume"


def _interrupt(signum, frame):
    """A terminated submission is an interrupted one: clean up as for Ctrl-C."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args, passthrough = get_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _interrupt)
    if args.check:
        def check() -> int:
            problems = check_tree(Path(args.check), args.round)
            for line in problems:
                print(line)
            print(f"{len(problems)} problem(s)" if problems else "no problems found by the offline checks")
            return 1 if problems else 0
        return exit_on_error(check)
    return exit_on_error(lambda: run_submission(args, passthrough), interrupted=INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
