"""LoadGen config checks (harness/loadgen_conf.py): each line LoadGen would mishandle is refused with
one line naming file:line and exit 2; the shipped configs pass; and the real LoadGen does mishandle
what is refused (so the checks refuse nothing LoadGen would read as written)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from helpers import ROOT, run_main, tiny_dataset

from common.errors import HarnessError
from harness.loadgen_conf import check_conf, check_line

BAD_LINES = {
    "*.Offline.min_query_count = -1": "min_query_count must be an integer >= 1",
    "*.Offline.min_query_count = 0": "min_query_count must be an integer >= 1, got 0",
    "*.Server.target_qps = 0": "target_qps must be a number > 0",
    "*.Ofline.target_qps = 5": "unknown scenario 'Ofline'",
    "*.Offline.target_qps = 5 # five per second": "inline comments are not allowed",
    "*.Offline.min_duration = ten": "min_duration must be an integer >= 0, got 'ten'",
}


@pytest.mark.parametrize("line", list(BAD_LINES))
def test_main_refuses_a_bad_user_conf_line_with_one_line_and_exit_2(tmp_path, line):
    conf = tmp_path / "user.conf"
    conf.write_text(f"# LoadGen settings\n{line}\n")
    p = run_main("--backend", "null", "--dataset-path", str(tmp_path / "unused.pkl"), "--user-conf", str(conf),
                 "--output-log-dir", str(tmp_path / "out"), timeout=60)
    assert p.returncode == 2, p.stderr[-2000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [ln for ln in p.stderr.splitlines() if ln.strip()], p.stderr[-2000:]  # nothing else
    assert len(errors) == 1 and f"{conf}:2: " in errors[0] and BAD_LINES[line] in errors[0], errors
    assert not (tmp_path / "out").exists()


def test_main_checks_the_audit_config_too(tmp_path):
    data = tiny_dataset(tmp_path / "tiny.pkl", n=4)
    audit = tmp_path / "audit.config"
    audit.write_text("llama2-70b.*.min_query_count = 100\n")
    p = run_main("--backend", "null", "--dataset-path", str(data), "--audit-conf", str(audit),
                 "--output-log-dir", str(tmp_path / "out"), timeout=60)
    assert p.returncode == 2 and f"error: {audit}:1: LoadGen reads audit.config for model '*' only" in p.stderr


@pytest.mark.parametrize("line, needle", [
    ("*.Offline.min_query_count = 2.5", "LoadGen would read '2.5' as 2"),
    ("*.Offline.min_query_count = 010", "LoadGen would read '010' as 8"),
    ("*.Offline.min_query_count = 0x10", "LoadGen would read '0x10' as 16"),
    ("*.Offline.max_query_count = -1", "LoadGen would read '-1' as 18446744073709551615"),
    ("*.*.accuracy_log_rng_seed = 18446744073709551616", "below 2^64"),
    ("*.Offline.target_qps=5", "spaces around '='"),
    ("*.Offline.target_qps =", "spaces around '='"),
    ("*.Offline.target_qps = 5 6", "one value per line"),
    ("#a comment without its space", "space after '#'"),
    ("target_qps = 5", "expected 'model.scenario.key = value'"),
    ("*.Server.target_qpz = 3", "unknown LoadGen key 'target_qpz'"),
    ("*.*.qsl_rng_seed = 5", "does not read 'qsl_rng_seed'"),
    ("*.Offline.coalesce_queries = 1", "only for Server; for Offline it would be ignored"),
    ("*.Server.coalesce_queries = 2", "coalesce_queries must be 0 or 1"),
    ("*.*.mode = 4", "mode must be an integer >= 0 and <= 3"),
    ("*.Server.target_qps = nan", "got 'nan'"),
    ("*.Server.target_qps = -2", "target_qps must be a number > 0, got -2"),
    ("*.Server.target_latency_percentile = 0.99", "in percent: 99 is p99"),
    ("*.Server.target_latency_percentile = 101", "<= 100"),
])
def test_check_line_refuses(line, needle):
    problem = check_line(line)
    assert problem is not None and needle in problem, problem


@pytest.mark.parametrize("line", [
    "", "   ", "# a comment", "#", "#word", "*.Server.target_qps = 0.5", "*.Server.target_qps = 1e-05",
    "llama3.1-405b.Server.ttft_latency = 6000", "*.*.min_duration = 0", "*.Server.target_latency = 0",
    "*.Server.target_latency_percentile = 99.9", "*.*.accuracy_log_rng_seed = 18446744073709551615",
    "*.Server.coalesce_queries = 1\r", "*.MultiStream.samples_per_query\t=\t8",
])
def test_check_line_accepts(line):
    assert check_line(line) is None


def test_shipped_configs_pass():
    check_conf(str(ROOT / "user.conf"), "llama2-70b")
    check_conf(str(ROOT / "examples" / "tiny_user.conf"), "llama2-70b")
    check_conf(str(ROOT / "compliance" / "TEST06" / "audit.config"), "llama2-70b", audit=True)


def test_first_bad_line_is_named_with_its_file_and_number(tmp_path):
    conf = tmp_path / "u.conf"
    conf.write_text("*.Server.target_qps = 2\n\n*.Offline.min_query_count = 0\n*.Server.target_qps = 0\n")
    with pytest.raises(HarnessError, match=rf"^{conf}:3: min_query_count .*: \*\.Offline\.min_query_count = 0$"):
        check_conf(str(conf), "llama2-70b")


# What the real LoadGen makes of lines: each runs in a fresh TestSettings after one warm-up read
# (LoadGen loads its built-in mlperf.conf on the first read in a process).
_PROBE = textwrap.dedent("""
    import json, os, sys, tempfile
    import mlperf_loadgen as lg
    scenario, lines = sys.argv[1], json.loads(sys.argv[2])
    def read(text):
        path = os.path.join(tempfile.mkdtemp(), "u.conf")
        with open(path, "w") as f:
            f.write(text + "\\n")
        s = lg.TestSettings()
        s.scenario = getattr(lg.TestScenario, scenario)
        rc = s.FromConfig(path, "llama2-70b", scenario)
        return {"rc": rc, **{n: str(getattr(s, n)) for n in dir(s) if not n.startswith("_") and n != "FromConfig"}}
    read("")
    base = read("")
    out = []
    for line in lines:
        got = read(line)
        out.append({"rc": got["rc"], "changed": {n: got[n] for n in got if got[n] != base[n] and n != "rc"}})
    print("PROBE " + json.dumps(out))
""")


def _loadgen_reads(scenario: str, lines: list[str]) -> list[dict]:
    p = subprocess.run([sys.executable, "-c", _PROBE, scenario, json.dumps(lines)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("PROBE "))[6:])


def test_loadgen_mishandles_what_is_refused_and_reads_what_is_accepted():
    refused = {
        "*.Ofline.target_qps = 5": {"rc": 0, "changed": {}},  # silently ignored
        "*.Offline.target_qps=5": {"rc": 0, "changed": {}},
        "*.Offline.coalesce_queries = 1": {"rc": 0, "changed": {}},
        "*.*.qsl_rng_seed = 5": {"rc": 0, "changed": {}},
        "*.Offline.min_query_count = -1": {"rc": 0, "changed": {"min_query_count": str(2**64 - 1)}},
        "*.Offline.min_query_count = 010": {"rc": 0, "changed": {"min_query_count": "8"}},
        "*.Offline.min_query_count = 2.5": {"rc": 0, "changed": {"min_query_count": "2"}},
        "*.Offline.target_qps = 5 # five": {"rc": -22, "changed": {}},
        "*.Offline.min_duration = ten": {"rc": -22, "changed": {}},
        "#a comment without its space": {"rc": -22, "changed": {}},
    }
    accepted = {
        "*.Offline.target_qps = 5": {"offline_expected_qps": "5.0"},
        "*.Offline.min_query_count = 7": {"min_query_count": "7"},
        "*.*.min_duration = 1234": {"min_duration_ms": "1234"},
        "*.*.accuracy_log_rng_seed = 18446744073709551615": {"accuracy_log_rng_seed": "18446744073709551615"},
    }
    assert all(check_line(line) for line in refused) and not any(check_line(line) for line in accepted)
    got = _loadgen_reads("Offline", list(refused) + list(accepted))
    assert got[:len(refused)] == list(refused.values())
    assert [g["changed"] for g in got[len(refused):]] == list(accepted.values())
    assert all(g["rc"] == 0 for g in got[len(refused):])
