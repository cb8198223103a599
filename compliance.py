"""MLPerf compliance checks on a LoadGen accuracy log (mlperf_log_accuracy.json): TEST06, and the
TEST07 / TEST09 of gpt-oss-120b (below).

The checks of compliance/TEST06/run_verification.py of mlcommons/inference, for any model:
  1. first token check (all scenarios but Offline): the tokens sent with FirstTokenComplete
     (`token_data`) are the start of the final response (`data`);
  2. EOS check: a response ends with at most one EOS token;
  3. sample length check: `token_count` (the n_tokens reported to LoadGen) == len(data).
Ours is stricter in three cases the official script lets pass (docs/accuracy.md): an empty
`token_data` or `data` in the first token check, `token_data` longer than `data`, and a response
that is exactly two EOS tokens. EOS ids come from --eos-token-id, else from results.json beside the
log (written by main.py), else Llama-2's 2 as in the official script.

    python compliance.py --accuracy-log output-logs/mlperf_log_accuracy.json --scenario Server
Writes verify_accuracy.txt into --output-dir when given. Exit status: 0 all checks pass, 1 a check
failed, 2 bad input (one `error:` line: a missing or malformed log or entry, an existing output).
For a full TEST06 run, pass --audit-conf compliance/TEST06/audit.config to main.py.

TEST07 (accuracy in performance mode) grades the log of a performance run made with
compliance/TEST07/BENCHMARK/audit.config by exact match (as evaluation.py --benchmark) and passes
when the score reaches the audit config's test07_accuracy_threshold; TEST09 (output length in
performance mode) passes when the mean output length lies within its test09_min/max_output_tokens.
They write verify_accuracy.txt / verify_output_len.txt with the official scripts' lines ("TEST PASS"
or "TEST FAIL", which the submission checker reads):

    python compliance.py --test TEST07 --accuracy-log LOG --dataset-file DATA.pkl --checkpoint-path MODEL
    python compliance.py --test TEST09 --accuracy-log LOG
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from accuracy.mlperf_log import DTYPES, decode_ids, read_entries
from common.errors import HarnessError, exit_on_error
from common.files import make_folder, parse_json, temp_file_beside

LLAMA2_EOS = 2


def eos_ids_for(log_path: str, given: list[int] | None) -> set[int]:
    if given:
        return set(given)
    results = os.path.join(os.path.dirname(os.path.abspath(log_path)), "results.json")
    if os.path.isfile(results):
        try:
            with open(results, encoding="utf-8") as f:
                ids = (parse_json(f.read(), results).get("run") or {}).get("eos_token_ids")
        except (HarnessError, ValueError, AttributeError) as e:  # not JSON, or not results.json's shape
            raise HarnessError(f"cannot read the EOS ids from {results} ({e}); pass --eos-token-id") from None
        if ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            return set(ids)
        if ids:
            raise HarnessError(f"{results}: eos_token_ids {ids} are not integers; pass --eos-token-id")
    return {LLAMA2_EOS}


def trailing_eos(data: np.ndarray, eos_ids: set[int]) -> int:
    n = 0
    for t in data[::-1]:
        if int(t) not in eos_ids:
            break
        n += 1
    return n


def first_tokens_problem(first: np.ndarray, data: np.ndarray) -> str | None:
    """Why `first` (token_data) is not the start of `data`, or None."""
    if len(first) == 0 or len(data) == 0:
        return f"token_data {first.tolist()} or data {data[:8].tolist()} is empty"
    if len(first) > len(data) or not np.array_equal(first, data[:len(first)]):
        return f"token_data {first[:8].tolist()} is not the start of data {data[:8].tolist()}"
    return None


def check(entries: list[dict], scenario: str, eos_ids: set[int], dtype: str = "int32") -> dict:
    """Return {"first_token": bool|None, "eos": bool, "token_count": bool, "failures": [...]}.
    `entries` come from read_entries (shape checked)."""
    failures: list[str] = []
    first_ok, eos_ok, count_ok = True, True, True
    for e in entries:
        idx = e["qsl_idx"]
        try:
            data = decode_ids(e["data"], dtype)
            first = decode_ids(e["token_data"], dtype) if "token_data" in e else None
        except HarnessError as err:
            raise HarnessError(f"accuracy log entry for qsl_idx {idx}: {err}") from None
        trailing = trailing_eos(data, eos_ids)
        if trailing > 1:
            eos_ok = False
            failures.append(f"qsl_idx {idx}: {trailing} trailing EOS tokens")
        if e.get("token_count") != len(data):
            count_ok = False
            failures.append(f"qsl_idx {idx}: token_count {e.get('token_count')} != {len(data)} ids")
        if scenario != "Offline":
            problem = "no token_data (first token never reported)" if first is None else first_tokens_problem(first, data)
            if problem:
                first_ok = False
                failures.append(f"qsl_idx {idx}: {problem}")
    return {"first_token": first_ok if scenario != "Offline" else None, "eos": eos_ok,
            "token_count": count_ok, "failures": failures}


def report_text(result: dict) -> str:
    ft = "Skipped" if result["first_token"] is None else result["first_token"]
    ok = passed(result)
    return (f"First token check pass: {ft}\nEOS check pass: {result['eos']}\n"
            f"Sample length check pass: {result['token_count']}\n"
            f"TEST06 verification {'complete' if ok else 'failed'}\n")


def passed(result: dict) -> bool:
    return result["first_token"] is not False and result["eos"] and result["token_count"]


VERIFY_FILES = {"TEST06": "verify_accuracy.txt", "TEST07": "verify_accuracy.txt", "TEST09": "verify_output_len.txt"}


def audit_value(path: str, key: str) -> float:
    """The `*.*.key = value` of a compliance audit.config (checked line by line first)."""
    from harness.loadgen_conf import check_conf

    check_conf(path, "*", audit=True)
    found = None
    with open(path) as f:
        for line in f:
            tokens = line.split()
            if len(tokens) == 3 and tokens[1] == "=" and tokens[0].split(".")[-1] == key:
                found = float(tokens[2])
    if found is None:
        raise HarnessError(f"{path} has no '*.*.{key} = VALUE' line")
    return found


def test07(args) -> tuple[bool, str]:
    from evaluation import grade_reasoning_log, load_accuracy_log

    threshold = audit_value(args.audit_conf, "test07_accuracy_threshold")
    responses = load_accuracy_log(args.accuracy_log, args.dtype)
    score = grade_reasoning_log(args.benchmark, responses, args.dataset_file, args.checkpoint_path, args.dtype)
    ok = score.exact_match >= threshold
    return ok, (f"{score.checker_line()}\n{score.table()}\n\n{'=' * 80}\nTEST07 Verification Summary\n{'=' * 80}\n"
                f"Accuracy score: {score.exact_match}\nAccuracy threshold: {threshold}\n"
                f"Accuracy check pass: {ok}\n{'TEST PASS' if ok else 'TEST FAIL'}\n")


def test09(args) -> tuple[bool, str]:
    low = audit_value(args.audit_conf, "test09_min_output_tokens")
    high = audit_value(args.audit_conf, "test09_max_output_tokens")
    lengths = [len(decode_ids(e["data"], args.dtype)) for e in read_entries(args.accuracy_log)]
    mean = sum(lengths) / len(lengths)
    ok = low <= mean <= high
    return ok, (f"{'=' * 80}\nTEST09: Verify Output Token Length in Performance Mode\n{'=' * 80}\n\n"
                f"Total samples: {len(lengths)}\nMean output tokens: {mean:.2f}\nMin output tokens: {min(lengths)}\n"
                f"Max output tokens: {max(lengths)}\nMin threshold: {low}\nMax threshold: {high}\n"
                f"Min check pass: {mean >= low}\nMax check pass: {mean <= high}\n\n"
                f"{'TEST PASS' if ok else 'TEST FAIL'}\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="MLPerf compliance checks on mlperf_log_accuracy.json", allow_abbrev=False)
    p.add_argument("--test", default="TEST06", choices=sorted(VERIFY_FILES))
    p.add_argument("--accuracy-log", required=True, help="mlperf_log_accuracy.json")
    # Every scenario but Offline reports first tokens (Interactive is a Server run).
    p.add_argument("--scenario", choices=["Offline", "Server", "SingleStream", "MultiStream", "Interactive"],
                   help="TEST06: the run's scenario (required)")
    p.add_argument("--benchmark", default="gpt-oss-120b", help="TEST07/TEST09: the benchmark (default gpt-oss-120b)")
    p.add_argument("--audit-conf", default=None,
                   help="TEST07/TEST09: the audit.config with the thresholds (default compliance/TESTxx/BENCHMARK/)")
    p.add_argument("--dataset-file", default=None, help="TEST07: the data set with the ground truths")
    p.add_argument("--checkpoint-path", default=None, help="TEST07: the tokenizer that decodes the outputs")
    p.add_argument("--dtype", default="int32", choices=sorted(DTYPES))
    p.add_argument("--eos-token-id", type=int, action="append", help="EOS id (repeatable)")
    p.add_argument("--output-dir", default=None, help="write verify_accuracy.txt (TEST09: verify_output_len.txt) here")
    args = p.parse_args(argv)
    if args.test == "TEST06" and not args.scenario:
        p.error("TEST06 needs --scenario")
    if args.test == "TEST07" and not args.dataset_file:
        p.error("TEST07 needs --dataset-file (the ground truths)")
    if args.test != "TEST06" and args.audit_conf is None:
        args.audit_conf = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compliance", args.test,
                                       args.benchmark, "audit.config")

    def run() -> int:
        target = os.path.join(args.output_dir, VERIFY_FILES[args.test]) if args.output_dir else None
        if target and os.path.exists(target):
            raise HarnessError(f"{target} exists; results are never overwritten")
        if target:
            make_folder(args.output_dir, "--output-dir")  # before the report: a bad folder is bad input
        if args.test != "TEST06":
            if not os.path.isfile(args.audit_conf):
                raise HarnessError(f"no {args.test} audit.config for {args.benchmark}: {args.audit_conf}")
            ok, text = (test07 if args.test == "TEST07" else test09)(args)
        else:
            entries = read_entries(args.accuracy_log)
            result = check(entries, args.scenario, eos_ids_for(args.accuracy_log, args.eos_token_id), args.dtype)
            text, ok = report_text(result), passed(result)
            for line in result["failures"][:10]:
                print("  " + line)
        print(text, end="")
        if target:
            try:
                with temp_file_beside(target) as tmp:
                    with open(tmp, "w") as f:
                        f.write(text)
                    os.link(tmp, target)  # whole file or none, and never over an existing one
            except FileExistsError:
                raise HarnessError(f"{target} exists; results are never overwritten") from None
        return 0 if ok else 1

    return exit_on_error(run)


if __name__ == "__main__":
    sys.exit(main())
