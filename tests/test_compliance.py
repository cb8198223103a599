"""compliance.py (TEST06) on crafted accuracy logs: each check, our verdict against the official
script's rules, where ours is deliberately stricter, and the exit codes (0 pass, 1 a check failed,
2 bad input with one error line)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

import compliance
from accuracy.mlperf_log import read_entries

EOS = 2


def entry(data: list[int], token_data: list[int] | None = None, token_count: int | None = None, idx: int = 0) -> dict:
    e = {"seq_id": idx, "qsl_idx": idx, "data": np.array(data, np.int32).tobytes().hex().upper()}
    if token_data is not None:
        e["token_data"] = np.array(token_data, np.int32).tobytes().hex().upper()
    e["token_count"] = len(data) if token_count is None else token_count
    return e


def official_verdict(entries: list[dict], scenario: str, eos_id: int = EOS) -> dict:
    """The rules of compliance/TEST06/run_verification.py (mlcommons/inference), restated with its
    quirks: the trailing-EOS walk never looks at position 0 and lets exactly [eos, eos] pass; the
    first token comparison covers only the overlap of token_data and data; an exception inside the
    EOS or first token check fails that check."""
    def ids(hexdata):
        return np.frombuffer(bytes.fromhex(hexdata), np.int32)

    def eos_ok():
        for e in entries:
            data = ids(e["data"])
            tail = data[1:][::-1]  # position 0 is never looked at
            run = next((i for i, t in enumerate(tail) if t != eos_id), len(tail))
            if run >= 2:
                return len(data) == 2
        return True

    def first_ok():
        for e in entries:
            data, first = ids(e["data"]), ids(e["token_data"])
            n = min(len(data), len(first))
            if not np.array_equal(data[:n], first[:n]):
                return False
        return True

    def guarded(check):
        try:
            return check()
        except Exception:  # noqa: BLE001 - as the official script does
            return False

    return {"first_token": None if scenario == "Offline" else guarded(first_ok), "eos": guarded(eos_ok),
            "token_count": all(len(ids(e["data"])) == int(e["token_count"]) for e in entries)}


def ours(entries: list[dict], scenario: str) -> dict:
    result = compliance.check(entries, scenario, {EOS})
    return {k: result[k] for k in ("first_token", "eos", "token_count")}


# name: (entries, scenario, the check that fails or None)
SAME_AS_OFFICIAL = {
    "good": ([entry([5, 7, EOS], [5])], "Server", None),
    "first two tokens streamed": ([entry([5, 7, EOS], [5, 7])], "Server", None),
    "one EOS only": ([entry([EOS], [EOS])], "Server", None),
    "second streamed token differs": ([entry([5, 7, EOS], [5, 8])], "Server", "first_token"),
    "first token differs": ([entry([5, 7, EOS], [6])], "Server", "first_token"),
    "no token_data in Server": ([entry([5, 7, EOS])], "Server", "first_token"),
    "no token_data in Offline": ([entry([5, 7, EOS])], "Offline", None),
    "two trailing EOS": ([entry([5, EOS, EOS], [5])], "Server", "eos"),
    "three EOS": ([entry([EOS, EOS, EOS], [EOS])], "Offline", "eos"),
    "EOS inside, not trailing": ([entry([EOS, 5, EOS], [EOS])], "Server", None),
    "token_count too small": ([entry([5, 7], [5], token_count=1)], "Server", "token_count"),
    "token_count too large": ([entry([5, 7], None, token_count=3)], "Offline", "token_count"),
    "second of two entries bad": ([entry([5, 7], [5]), entry([5, 7, EOS, EOS], [5], idx=1)], "Server", "eos"),
}

# Deliberately stricter than the official script (docs/accuracy.md says why).
STRICTER = {
    "response of exactly two EOS": ([entry([EOS, EOS], [EOS])], "Server", "eos"),
    "empty token_data": ([entry([5, 7], [])], "Server", "first_token"),
    "token_data longer than data": ([entry([5, 7], [5, 7, 9])], "Server", "first_token"),
    "empty response": ([entry([], [5])], "Server", "first_token"),
}


@pytest.mark.parametrize("name", list(SAME_AS_OFFICIAL))
def test_verdict_equals_the_official_scripts(name):
    entries, scenario, failing = SAME_AS_OFFICIAL[name]
    got = ours(entries, scenario)
    assert got == official_verdict(entries, scenario)
    assert [k for k, v in got.items() if v is False] == ([failing] if failing else [])
    assert compliance.passed(compliance.check(entries, scenario, {EOS})) == (failing is None)


@pytest.mark.parametrize("name", list(STRICTER))
def test_stricter_than_the_official_script(name):
    entries, scenario, failing = STRICTER[name]
    assert all(v is not False for v in official_verdict(entries, scenario).values())
    got = ours(entries, scenario)
    assert [k for k, v in got.items() if v is False] == [failing]


def test_several_eos_ids(tmp_path):
    """Models with several end tokens (Gemma: <eos> and <end_of_turn>): any mix of them counts."""
    assert compliance.check([entry([5, 1, 106])], "Offline", {1, 106})["eos"] is False
    assert compliance.check([entry([5, 106])], "Offline", {1, 106})["eos"] is True


def _compliance(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "compliance.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)


def test_exit_codes_and_report(tmp_path):
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text(json.dumps([entry([5, 7, EOS], [5]), entry([9, EOS], [9], idx=1)]))
    p = _compliance("--accuracy-log", str(log), "--scenario", "Server", "--eos-token-id", "2",
                    "--output-dir", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    expected = ("First token check pass: True\nEOS check pass: True\nSample length check pass: True\n"
                "TEST06 verification complete\n")
    assert (tmp_path / "out" / "verify_accuracy.txt").read_text() == expected
    again = _compliance("--accuracy-log", str(log), "--scenario", "Server", "--output-dir", str(tmp_path / "out"))
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "never overwritten" in again.stderr
    assert (tmp_path / "out" / "verify_accuracy.txt").read_text() == expected

    log.write_text(json.dumps([entry([5, 7, EOS], [5, 8])]))
    p = _compliance("--accuracy-log", str(log), "--scenario", "Server", "--eos-token-id", "2")
    assert p.returncode == 1 and "First token check pass: False" in p.stdout and "verification failed" in p.stdout


@pytest.mark.parametrize("entries, message", [
    (["not an object"], 'entry 0: expected a JSON object, got "not an object"'),
    ([{**entry([5, 7]), "token_count": "many"}], 'entry 0: token_count must be a non-negative integer, got "many"'),
    ([{**entry([5, 7]), "qsl_idx": True}], "entry 0: qsl_idx must be a non-negative integer, got true"),
    ([{**entry([5, 7]), "qsl_idx": 5.7}], "entry 0: qsl_idx must be a non-negative integer, got 5.7"),
    ([{"qsl_idx": 0, "token_count": 1}], "entry 0: 'data' must be a hex string, got null"),
    ([{**entry([5, 7]), "token_data": 5}], "entry 0: 'token_data' must be a hex string, got 5"),
    ([{**entry([5, 7]), "data": "zz"}], "qsl_idx 0: response has no valid hex 'data'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, entries, message):
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_text(json.dumps(entries))
    p = _compliance("--accuracy-log", str(log), "--scenario", "Server", "--eos-token-id", "2")
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: ") and message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_read_entries_refuses_what_would_be_misread(tmp_path):
    log = tmp_path / "mlperf_log_accuracy.json"
    for bad in (5.0, True, -1, "3"):
        log.write_text(json.dumps([{"qsl_idx": bad, "data": "01000000"}]))
        with pytest.raises(compliance.HarnessError, match="qsl_idx must be a non-negative integer"):
            read_entries(str(log))
    log.write_text(json.dumps([{"qsl_idx": 3, "data": "01000000"}]))  # token_count is optional here
    assert read_entries(str(log))[0]["qsl_idx"] == 3
