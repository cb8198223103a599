"""MLPerf TEST06 checks on a LoadGen accuracy log (mlperf_log_accuracy.json).

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
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from accuracy.mlperf_log import DTYPES, decode_ids, read_entries
from common.errors import HarnessError, exit_on_error
from common.files import make_folder, temp_file_beside

LLAMA2_EOS = 2


def eos_ids_for(log_path: str, given: list[int] | None) -> set[int]:
    if given:
        return set(given)
    results = os.path.join(os.path.dirname(os.path.abspath(log_path)), "results.json")
    if os.path.isfile(results):
        try:
            with open(results) as f:
                ids = (json.load(f).get("run") or {}).get("eos_token_ids")
        except (ValueError, AttributeError) as e:  # not JSON, or not results.json's shape
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="TEST06 checks on mlperf_log_accuracy.json", allow_abbrev=False)
    p.add_argument("--accuracy-log", required=True, help="mlperf_log_accuracy.json")
    # Every scenario but Offline reports first tokens (Interactive is a Server run).
    p.add_argument("--scenario", required=True, choices=["Offline", "Server", "SingleStream", "MultiStream",
                                                         "Interactive"])
    p.add_argument("--dtype", default="int32", choices=sorted(DTYPES))
    p.add_argument("--eos-token-id", type=int, action="append", help="EOS id (repeatable)")
    p.add_argument("--output-dir", default=None, help="write verify_accuracy.txt here")
    args = p.parse_args(argv)

    def run() -> int:
        target = os.path.join(args.output_dir, "verify_accuracy.txt") if args.output_dir else None
        if target and os.path.exists(target):
            raise HarnessError(f"{target} exists; results are never overwritten")
        if target:
            make_folder(args.output_dir, "--output-dir")  # before the report: a bad folder is bad input
        entries = read_entries(args.accuracy_log)
        result = check(entries, args.scenario, eos_ids_for(args.accuracy_log, args.eos_token_id), args.dtype)
        text = report_text(result)
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
        return 0 if passed(result) else 1

    return exit_on_error(run)


if __name__ == "__main__":
    sys.exit(main())
