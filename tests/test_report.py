"""Charts and the static HTML report, built from real LoadGen runs (and main.py + evaluation.py for
accuracy runs); the HTML is opened in headless Chromium and the screenshot checked for the charts."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_main, tiny_dataset
from test_results import RUN_INFO, run_loadgen

from harness.results import load_results, write_run_results
from harness.sysmetrics import SystemMonitor
from reporting.charts import cpu_pct_of_all_cores, latencies_ms, request_charts, request_rows, tokens_over_time
from reporting.report import build_html, group_dirs

ROOT = Path(__file__).resolve().parent.parent
BAR_BLUE = (0x4C, 0x72, 0xB0)   # reporting.charts: the first series of every bar chart


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    """A Server run with system metrics and an accuracy file, and an Offline run."""
    base = tmp_path_factory.mktemp("runs")
    server, offline = base / "server-null", base / "offline-null"
    server.mkdir()
    offline.mkdir()
    mon = SystemMonitor(interval_s=0.05).start()
    records = run_loadgen("Server", server, target_qps=400, min_duration_ms=400, min_query_count=50)
    write_run_results(server, RUN_INFO, records, mon.stop(), goodput={"ttft": 1.0})
    # evaluation.py's output format ({"result": {...}}); scoring itself is tested with evaluation.py.
    (server / "accuracy.json").write_text(json.dumps({"result": {"rouge1": 41.5, "rouge2": 20.1,
                                                                 "rougeL": 27.3, "rougeLsum": 39.0}}))
    records = run_loadgen("Offline", offline)
    write_run_results(offline, dict(RUN_INFO, scenario="Offline"), records, None)
    return [server, offline]


def _pngs(text: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def _alts(text: str) -> list[str]:
    return re.findall(r'<img alt="([^"]+)"', text)


def test_build_html(run_dirs):
    groups = group_dirs([str(d) for d in run_dirs])
    assert list(groups) == ["server-null", "offline-null"]
    text = build_html(groups, title="Demo")
    pngs = _pngs(text)
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 3000 for p in pngs)
    # LoadGen's and our tokens/s share one chart; per run: tokens/s and latency over time (this
    # Offline SUT answers each query before it takes the next, so its issue times spread too), the
    # latency CDFs, and CPU and memory where there are system metrics (the Server run).
    assert _alts(text) == [
        "Throughput", "TTFT p99", "TPOT p99", "rouge1", "rougeL",
        "server-null: output tokens/s over time", "server-null: latency per request",
        "server-null: latency distributions", "server-null: CPU", "server-null: memory",
        "offline-null: output tokens/s over time", "offline-null: latency per request",
        "offline-null: latency distributions"]
    for expected in ("<h1>Demo</h1>", "INVALID", "min duration not reached", "rouge1", "41.50", "TTFT p99 (ms)",
                     "goodput (%)"):
        assert expected in text, expected
    server = load_results(run_dirs[0])
    assert f"{server['loadgen']['tokens_per_s']:,.0f}" in text or \
        f"{server['loadgen']['tokens_per_s']:.2f}" in text
    # Each run's status comes before LoadGen's verdict, which counts no failed query.
    for name in groups:
        section = text[text.index(f"<h3>{name}</h3>"):]
        assert section.index("Run status: <b class='ok'>ok</b>") < section.index("LoadGen: <b class='bad'>INVALID")
    # An accuracy.json with scores only (no targets) gives no verdict, never a PASS.
    assert "Accuracy: <b class='none'>no verdict</b>" in text and "PASS" not in text


def test_latency_distributions_are_the_runs_requests(run_dirs):
    """The CDFs plot every successful request's TTFT and TPOT from requests.csv: their medians are
    the ones results.json reports."""
    for d in run_dirs:
        results, rows = load_results(d), request_rows(str(d))
        assert len(rows) == results["requests"]["count"] > 0
        for metric in ("TTFT", "TPOT"):
            series = latencies_ms(rows, metric)
            values = next(iter(series.values()))
            assert len(values) == results["requests"][f"{metric.lower()}_ms"]["count"]
            # requests.csv keeps microseconds
            assert np.percentile(values, 50) == pytest.approx(results["requests"][f"{metric.lower()}_ms"]["p50"],
                                                              abs=2e-3)


def test_cpu_shares_one_scale():
    """The process's CPU (100 = one core) is scaled to % of all cores, as the system's is."""
    samples = {"cpu_process_pct": [200.0, 50.0, None], "cpu_system_pct": [100.0, 30.0, 40.0]}
    series = cpu_pct_of_all_cores(samples, cores=4)
    assert series["harness process"][:2] == [50.0, 12.5] and np.isnan(series["harness process"][2])
    assert series["whole system"] == [100.0, 30.0, 40.0]


@pytest.fixture(scope="module")
def accuracy_runs(tmp_path_factory):
    """One accuracy-mode run of main.py (null backend) scored three times by evaluation.py: against
    llama2-70b's targets (FAIL), against its own scores recorded as targets (PASS), and with no
    targets for the model (no verdict)."""
    base = tmp_path_factory.mktemp("accuracy")
    data = tiny_dataset(base / "data.pkl", n=8)
    run = base / "run"
    p = run_main("--backend", "null", "--scenario", "Offline", "--accuracy", "--dataset-path", str(data),
                 "--output-log-dir", str(run), timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    (base / "none.yaml").write_text("models: {}\n")
    evals = {"fail": ["--model-name", "llama2-70b"], "pass": ["--record-targets", "demo"],
             "none": ["--targets-file", str(base / "none.yaml")]}
    dirs = {}
    for name, args in evals.items():
        dirs[name] = base / f"accuracy-{name}"
        shutil.copytree(run, dirs[name])
        p = subprocess.run([sys.executable, str(ROOT / "evaluation.py"), "--mlperf-accuracy-file",
                            str(dirs[name] / "mlperf_log_accuracy.json"), "--dataset-file", str(data), *args],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert p.returncode == (1 if name == "fail" else 0), p.stderr[-2000:]
    return dirs


def test_accuracy_run_shows_its_verdict(accuracy_runs):
    from reporting.report import group_row

    groups = group_dirs([str(d) for d in accuracy_runs.values()])
    text = build_html(groups)
    rows = {name: group_row(name, g) for name, g in groups.items()}
    for name, row in rows.items():
        # LoadGen has no verdict in accuracy mode, which is said, not "?"; the run is one repeat.
        assert row["LoadGen result"] == "accuracy mode" and row["repeats"] == 1, row
    assert [rows[f"accuracy-{k}"]["accuracy"] for k in ("fail", "pass", "none")] == \
        ["FAIL (99%)", "PASS (99%)", "no verdict (no targets)"]
    assert "?" not in re.sub(r"<(pre|code)>.*?</\1>", "", text, flags=re.S)
    sections = dict(zip(groups, re.split(r"<h3>[^<]+</h3>", text)[1:]))
    fail, passed, none = (sections[f"accuracy-{k}"] for k in ("fail", "pass", "none"))
    for section in (fail, passed, none):
        assert section.index("Run status: <b class='ok'>ok</b>") < section.index(
            "LoadGen: <b class='none'>accuracy mode</b>") < section.index("Accuracy: ")
    assert "Accuracy: <b class='bad'>FAIL</b> at the 99% level against the targets of llama2-70b" in fail
    # Each metric's check: score, target, the bound at this level, the outcome.
    assert re.search(r"<td>rouge1</td><td>0</td><td>44.43</td><td>0</td><td>&gt;= 43.99</td><td>FAIL</td>", fail)
    assert re.search(r"<td>tokens_per_sample</td><td>32.00</td><td>294</td><td>10.87</td><td>265 to 324</td>"
                     r"<td>FAIL</td>", fail)
    assert "Accuracy: <b class='ok'>PASS</b> at the 99% level against the targets of demo" in passed
    assert "Accuracy: <b class='none'>no verdict</b>" in none and "<td>rouge1</td><td>0</td>" in none
    assert all(f"{name}: latency distributions" in _alts(text) for name in groups)
    # main.py's Offline SUT gets every query at once and does not stream: every token comes with the last,
    # so the latency-over-issue-time points and the TPOT CDF (all 0) are left out.
    rows = request_rows(str(accuracy_runs["fail"]))
    assert set(latencies_ms(rows, "TPOT")["TPOT"]) == {0.0}
    assert [t for t, _ in request_charts(rows)] == ["output tokens/s over time", "latency distributions"]


def test_tokens_over_time_conserves_tokens():
    rows = [{"first_token_s": 0.0, "done_s": 1.0, "output_tokens": 11},
            {"first_token_s": 0.5, "done_s": 2.0, "output_tokens": 31},
            {"first_token_s": None, "done_s": 2.0, "output_tokens": 0}]    # a failed request: no tokens
    t, rate = tokens_over_time(rows, bins=8)
    assert len(t) == 8 and t[0] == pytest.approx(0.125)
    assert sum(r * 0.25 for r in rate) == pytest.approx(42.0)      # every token lands in some bin
    # The first bin holds request 0's first token and a quarter of its other 10.
    assert rate[0] == pytest.approx((1 + 2.5) / 0.25)
    assert tokens_over_time([]) == ([], [])


def test_gpu_charts_from_samples(run_dirs):
    """GPU lines come from sysmetrics samples; NVML cannot run here, so the samples are given
    (with a missing reading, as NVML returns for an unsupported field)."""
    from reporting.charts import run_charts

    results = load_results(run_dirs[1])
    results["sysmetrics"] = {"samples": {
        "t_s": [0.0, 0.5, 1.0], "cpu_process_pct": [50.0, 99.0, 98.0], "cpu_system_pct": [60.0, 90.0, 95.0],
        "rss_bytes": [2**30] * 3, "mem_system_used_bytes": [2**33] * 3,
        "gpu0_util_pct": [0, 95, None], "gpu0_mem_used_bytes": [2**32] * 3, "gpu0_power_w": [80.0, 450.0, 460.0]}}
    titles = [t for t, png in run_charts(results)]
    assert titles == ["output tokens/s over time", "latency per request", "latency distributions", "CPU", "memory",
                      "GPU utilisation", "GPU memory", "GPU power"]


def test_report_cli_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reporting.report", str(tmp_path), "--output",
                           str(tmp_path / "r.html")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no results.json in")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="headless check needs the Debian package 'chromium' (apt-get install -y chromium)")
def test_report_opens_in_chromium(run_dirs, tmp_path):
    from matplotlib.image import imread

    html_path = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "reporting.report", *map(str, run_dirs), "--output",
                           str(html_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    shot = tmp_path / "shot.png"
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--no-first-run", "--enable-logging=stderr", "--window-size=1200,1600",
                           f"--screenshot={shot}", html_path.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    # Page errors are logged as CONSOLE lines ("Uncaught ...", refused resources); dbus noise is not ours.
    page_errors = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert page_errors == []
    img = (imread(shot)[:, :, :3] * 255).round().astype(int)
    non_white = (img.sum(axis=2) < 740).mean()
    assert non_white > 0.02, f"screenshot looks blank ({non_white:.3%} non-white pixels)"
    # The bar charts are visible: a good patch of their exact colour is on screen.
    blue = (np.abs(img - np.array(BAR_BLUE)).sum(axis=2) <= 6).sum()
    assert blue > 2000, f"only {blue} bar-coloured pixels: charts not rendered"


# -- comparison runner and sweep (real main.py processes on the null backend) ----------------------------
def test_compare_spec_errors(tmp_path):
    from common.errors import HarnessError
    from reporting.compare import load_spec

    cases = {
        "runs: []\n": r"spec0.yaml: runs: List should have at least 1 item",
        "runs:\n  - {name: a, backend: 'null', colour: red}\n": r"run #1 \(a\): colour: unknown key \(known: name, ",
        "runs:\n  - {name: a, backend: null}\n": "backend: write \"null\" in quotes",
        "runs:\n  - {name: a, backend: 'null'}\n  - {name: a, backend: 'null'}\n": "run #2 \\(a\\): run name 'a' is used twice",
        "runs:\n  - {name: a, backend: 'null', repeats: 0}\n": "repeats: Input should be greater than or equal to 1",
        "runs:\n  - {name: a, backend: 'null', repeats: two}\n": r"repeats: Input should be a valid integer.*\(got 'two'\)",
        "runs:\n  - {name: 'a b', backend: 'null'}\n": "name: String should match pattern",
        "runs:\n  - {name: a, backend: 'null', scenario: Ofline}\n": r"scenario: Input should be 'Offline' or 'Server' \(got 'Ofline'\)",
        "runs:\n  - {name: a, backend: 'null', data: {synthetc: {}}}\n": "data.str: Input should be a valid string",
        "defaults: {repeats: 2}\nruns:\n  - {backend: 'null'}\n": "run #1: name: Field required",
        "runs: [\n": "not valid YAML",
        "title: x\nrun: []\n": "run: unknown key",
    }
    for i, (text, match) in enumerate(cases.items()):
        spec = tmp_path / f"spec{i}.yaml"
        spec.write_text(text)
        with pytest.raises(HarnessError, match=match) as e:
            load_spec(spec)
        assert "\n" not in str(e.value)  # one line each


@pytest.mark.slow
def test_compare_runs_and_reports(tmp_path):
    conf = tmp_path / "user.conf"     # 8 queries at 200 QPS: each run takes a fraction of a second
    conf.write_text("*.Server.target_qps = 200\n*.*.min_duration = 0\n*.*.min_query_count = 8\n")
    spec = {
        "title": "null fast vs slow",
        "defaults": {"scenario": "Server", "data": {"synthetic": {"num_samples": 8, "input_len": 16,
                                                                   "output_len": 4, "seed": 0}},
                     "main_args": ["--max-new-tokens", "4", "--ignore-eos", "--num-workers", "2",
                                   "--user-conf", str(conf)]},
        "runs": [{"name": "fast", "backend": "null", "backend_args": {"tokens": 4}, "repeats": 2, "accuracy": True,
                  # Any targets will do: the report shows the scores, not the verdict.
                  "eval_args": ["--model-name", "llama2-70b"]},
                 {"name": "slow", "backend": "null", "backend_args": {"tokens": 4, "delay_ms": 40},
                  "warmup_runs": 1}],
    }
    spec_path = tmp_path / "runs.json"
    spec_path.write_text(json.dumps(spec))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "reporting.compare", str(spec_path), "--output-dir", str(out),
                           "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for d in ("fast/rep-1", "fast/rep-2", "fast/accuracy", "slow/warmup-1", "slow/rep-1"):
        assert (out / d / "results.json").exists(), d
    assert (out / "fast" / "accuracy" / "accuracy.json").exists()   # written by evaluation.py
    import csv
    rows = {r["run"]: r for r in csv.DictReader(open(out / "comparison.csv"))}
    assert rows["fast"]["repeats"] == "2" and rows["slow"]["repeats"] == "1"   # warm-up not counted
    # The 40 ms backend delay shows in TTFT; fast's figures are the mean of its two repeats.
    assert float(rows["slow"]["TTFT p50"]) >= 40.0 > float(rows["fast"]["TTFT p50"])
    reps = [load_results(out / "fast" / f"rep-{k}")["requests"]["ttft_ms"]["p50"] for k in (1, 2)]
    assert float(rows["fast"]["TTFT p50"]) == pytest.approx(sum(reps) / 2)
    rouge = load_results(out / "fast" / "accuracy")["accuracy"]["result"]["rouge1"]
    assert float(rows["fast"]["rouge1"]) == pytest.approx(rouge) and rows["slow"]["rouge1"] == ""
    # evaluation.py's verdict against the llama2-70b targets it was given
    assert rows["fast"]["accuracy"] == "FAIL (99%)" and rows["slow"]["accuracy"] == ""
    text = (out / "report.html").read_text()
    assert "null fast vs slow" in text and len(_pngs(text)) >= 6
    assert "| fast |" in (out / "comparison.md").read_text()
    # reporting.report on the whole folder regroups it the same way (warm-ups left out).
    regrouped = group_dirs([str(out)])
    assert {k: len(v) for k, v in regrouped.items()} == {"fast": 3, "slow": 1}
    # A second run into the same folder is refused: results are never overwritten.
    proc = subprocess.run([sys.executable, "-m", "reporting.compare", str(spec_path), "--output-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not empty" in proc.stderr


@pytest.mark.slow
def test_sweep_concurrency(tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "reporting.sweep", "--backend", "null", "--backend-arg",
                           "delay_ms=50", "--concurrency", "1", "4", "--lengths", "16/4", "--num-samples", "8",
                           "--output-dir", str(out), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    import csv
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [(r["concurrency"], r["input_len"], r["output_len"]) for r in rows] == [("1", "16", "4"), ("4", "16", "4")]
    # Each request sleeps 50 ms in the backend: four workers finish the 8 requests well ahead of one.
    c1, c4 = (float(r["output_tok_s"]) for r in rows)
    assert c4 > 1.5 * c1
    for r in rows:
        res = load_results(out / f"in16-out4-c{r['concurrency']}")
        assert res["requests"]["output_tokens"]["mean"] == 4            # --ignore-eos: exactly 4 tokens
        assert res["run"]["num_workers"] == int(r["concurrency"])
    text = (out / "report.html").read_text()
    assert 'alt="TTFT p99"' in text and "<h2>Sweep</h2>" in text
    assert len(_pngs(text)) >= 8          # 4 sweep lines + 4 comparison bars, before per-run charts
    assert "| 16 | 4 | 4 |" in (out / "sweep.md").read_text()
