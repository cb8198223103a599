"""MLPerf TEST06 checks on a LoadGen accuracy log (mlperf_log_accuracy.json).

As compliance/nvidia/TEST06/run_verification.py of mlcommons/inference, for any model:
  1. first token check (Server): the token sent with FirstTokenComplete (`token_data`)
     is the first token of the final response (`data[0]`);
  2. EOS check: a response ends with at most one EOS token;
  3. token count check: `token_count` (the n_tokens reported to LoadGen) == len(data).
EOS ids come from --eos-token-id, else from results.json beside the log (written by main.py),
else Llama-2's 2 as in the original script.

    python compliance.py --accuracy-log output-logs/mlperf_log_accuracy.json --scenario Server
Writes verify_accuracy.txt into --output-dir when given; exit status 0 only if all checks pass.
For a full TEST06 run, pass --audit-conf compliance/TEST06/audit.config to main.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from accuracy.mlperf_log import DTYPES, decode_ids, read_entries
from common.errors import HarnessError, exit_on_error

LLAMA2_EOS = 2


def eos_ids_for(log_path: str, given: list[int] | None) -> set[int]:
    if given:
        return set(given)
    results = os.path.join(os.path.dirname(os.path.abspath(log_path)), "results.json")
    if os.path.isfile(results):
        with open(results) as f:
            ids = (json.load(f).get("run") or {}).get("eos_token_ids")
        if ids:
            return set(ids)
    return {LLAMA2_EOS}


def check(entries: list[dict], scenario: str, eos_ids: set[int], dtype: str = "int32") -> dict:
    """Return {"first_token": bool|None, "eos": bool, "token_count": bool, "failures": [...]}."""
    failures: list[str] = []
    first_ok, eos_ok, count_ok = True, True, True
    for e in entries:
        try:
            data = decode_ids(e["data"], dtype)
            idx = e.get("qsl_idx")
            trailing = 0
            for t in data[::-1]:
                if int(t) not in eos_ids:
                    break
                trailing += 1
            if trailing > 1:
                eos_ok = False
                failures.append(f"qsl_idx {idx}: {trailing} trailing EOS tokens")
            if "token_count" not in e or int(e["token_count"]) != len(data):
                count_ok = False
                failures.append(f"qsl_idx {idx}: token_count {e.get('token_count')} != {len(data)} ids")
            if scenario != "Offline":
                first = decode_ids(e.get("token_data", ""), dtype)
                if len(first) == 0 or len(data) == 0 or first[0] != data[0]:
                    first_ok = False
                    failures.append(f"qsl_idx {idx}: first token {first[:1].tolist()} != data[0] "
                                    f"{data[:1].tolist()}")
        except KeyError as k:
            raise HarnessError(f"accuracy log entry lacks field {k}: {e}") from None
    return {"first_token": first_ok if scenario != "Offline" else None, "eos": eos_ok,
            "token_count": count_ok, "failures": failures}


def report_text(result: dict) -> str:
    ft = "Skipped" if result["first_token"] is None else result["first_token"]
    ok = result["first_token"] is not False and result["eos"] and result["token_count"]
    return (f"First token check pass: {ft}\nEOS check pass: {result['eos']}\n"
            f"Sample length check pass: {result['token_count']}\n"
            f"TEST06 verification {'complete' if ok else 'failed'}\n")


def passed(result: dict) -> bool:
    return result["first_token"] is not False and result["eos"] and result["token_count"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="TEST06 checks on mlperf_log_accuracy.json")
    p.add_argument("--accuracy-log", required=True, help="mlperf_log_accuracy.json")
    p.add_argument("--scenario", required=True, choices=["Offline", "Server"])
    p.add_argument("--dtype", default="int32", choices=sorted(DTYPES))
    p.add_argument("--eos-token-id", type=int, action="append", help="EOS id (repeatable)")
    p.add_argument("--output-dir", default=None, help="write verify_accuracy.txt here")
    args = p.parse_args(argv)

    def run() -> int:
        entries = read_entries(args.accuracy_log)
        result = check(entries, args.scenario, eos_ids_for(args.accuracy_log, args.eos_token_id), args.dtype)
        text = report_text(result)
        for line in result["failures"][:10]:
            print("  " + line)
        print(text, end="")
        if args.output_dir:
            os.makedirs(args.output_dir, exist_ok=True)
            target = os.path.join(args.output_dir, "verify_accuracy.txt")
            if os.path.exists(target):
                raise HarnessError(f"{target} exists; results are never overwritten")
            with open(target + ".tmp", "w") as f:
                f.write(text)
            os.replace(target + ".tmp", target)
        return 0 if passed(result) else 1

    return exit_on_error(run)


if __name__ == "__main__":
    sys.exit(main())
