"""Helpers for end-to-end tests: tiny data sets and LoadGen configs, running main.py, TEST06.

Every run goes through the real LoadGen (mlperf_loadgen) in a subprocess, as a user runs it.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import compliance  # noqa: E402
from accuracy.mlperf_log import decode_ids as _decode  # noqa: E402
from accuracy.mlperf_log import read_entries

TINY_CONF = """\
*.Offline.min_duration = 200
*.Offline.min_query_count = {n}
*.Server.target_qps = {qps}
*.Server.min_duration = 300
*.Server.min_query_count = {n}
"""


def tiny_dataset(path: Path, n: int = 32, vocab: tuple[int, int] = (3, 500), seed: int = 0,
                 prompts: list[list[int]] | None = None) -> Path:
    """A processed-format pickle with n random prompts (or the given ones)."""
    import pandas as pd

    rng = random.Random(seed)
    if prompts is None:
        prompts = [[rng.randint(*vocab) for _ in range(rng.randint(4, 24))] for _ in range(n)]
    origins = ("cot", "flan", "niv", "t0")
    rows = [{"id": f"{origins[i % 4]}.{i}", "system_prompt": "", "question": f"q{i}", "output": "reference answer",
             "input": f"q{i}", "tok_input": p, "tok_output": [5, 6, 7], "origin": origins[i % 4],
             "tok_input_length": len(p), "tok_output_length": 3} for i, p in enumerate(prompts)]
    pd.DataFrame(rows).to_pickle(path)
    return path


def tiny_conf(path: Path, n: int = 32, qps: float = 100.0) -> Path:
    path.write_text(TINY_CONF.format(n=n, qps=qps))
    return path


def run_main(*args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """python main.py ARGS... (no progress bar), capturing output."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "--no-progress", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def summary(log_dir: Path) -> str:
    return (Path(log_dir) / "mlperf_log_summary.txt").read_text()


def accuracy_entries(log_dir: Path) -> list[dict]:
    return json.loads((Path(log_dir) / "mlperf_log_accuracy.json").read_text())


def results(log_dir: Path) -> dict:
    return json.loads((Path(log_dir) / "results.json").read_text())


def run_test06(log_dir: Path, scenario: str) -> dict:
    """TEST06 checks on the run's accuracy log, with the EOS ids main.py recorded."""
    log = str(Path(log_dir) / "mlperf_log_accuracy.json")
    entries = read_entries(log)
    return compliance.check(entries, scenario, compliance.eos_ids_for(log, None))


def assert_test06(log_dir: Path, scenario: str) -> None:
    result = run_test06(log_dir, scenario)
    assert compliance.passed(result), result["failures"][:5]


def start_loadgen_test(issue, flush, qsl, out_dir: Path, scenario: str, accuracy: bool = False,
                       target_qps: float = 100, **settings) -> None:
    """One test on real LoadGen in this process, with llama2-70b's token-latency limits; logs go to
    out_dir. `settings` sets further TestSettings fields (e.g. min_duration_ms)."""
    import mlperf_loadgen as lg

    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, scenario)
    s.mode = lg.TestMode.AccuracyOnly if accuracy else lg.TestMode.PerformanceOnly
    s.server_target_qps = target_qps
    s.offline_expected_qps = target_qps
    s.use_token_latencies = True
    s.ttft_latency = int(2e9)
    s.tpot_latency = int(2e8)
    for name, value in settings.items():
        setattr(s, name, value)
    out = lg.LogOutputSettings()
    out.outdir = str(out_dir)
    log_settings = lg.LogSettings()
    log_settings.log_output = out
    log_settings.enable_trace = False
    sut = lg.ConstructSUT(issue, flush)
    try:
        lg.StartTestWithLogSettings(sut, qsl, s, log_settings)
    finally:
        lg.DestroySUT(sut)


def decode_ids(entry: dict) -> list[int]:
    """The int32 token ids of an accuracy-log entry's `data`."""
    return _decode(entry["data"]).tolist()
