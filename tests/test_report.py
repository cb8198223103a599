"""Charts and the static HTML report, built from real LoadGen runs; the HTML is opened in
headless Chromium and the screenshot checked for the charts."""
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

from harness.report import build_html, group_dirs, tokens_over_time
from harness.results import load_results, write_run_results
from harness.sysmetrics import SystemMonitor
from test_results import RUN_INFO, run_loadgen

ROOT = Path(__file__).resolve().parent.parent
BAR_BLUE = (0x4C, 0x72, 0xB0)   # harness.report's bar colour


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


def test_build_html(run_dirs):
    groups = group_dirs([str(d) for d in run_dirs])
    assert list(groups) == ["server-null", "offline-null"]
    text = build_html(groups, title="Demo")
    pngs = _pngs(text)
    # 4 comparison bars + 2 ROUGE bars + tokens/CPU/memory for the Server run + tokens for Offline.
    assert len(pngs) >= 9
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 3000 for p in pngs)
    for expected in ("<h1>Demo</h1>", "server-null", "offline-null", "INVALID", "min duration not satisfied",
                     "rouge1", "41.50", "TTFT p99 (ms)", "goodput (%)"):
        assert expected in text, expected
    server = load_results(run_dirs[0])
    assert f"{server['loadgen']['tokens_per_s']:,.0f}" in text or \
        f"{server['loadgen']['tokens_per_s']:.2f}" in text


def test_tokens_over_time_conserves_tokens():
    rows = [{"t_first_s": 0.0, "t_done_s": 1.0, "n_output": 11},
            {"t_first_s": 0.5, "t_done_s": 2.0, "n_output": 31},
            {"t_first_s": None, "t_done_s": 2.0, "n_output": 0}]    # a failed request: no tokens
    t, rate = tokens_over_time(rows, bins=8)
    assert len(t) == 8 and t[0] == pytest.approx(0.125)
    assert sum(r * 0.25 for r in rate) == pytest.approx(42.0)      # every token lands in some bin
    # The first bin holds request 0's first token and a quarter of its other 10.
    assert rate[0] == pytest.approx((1 + 2.5) / 0.25)
    assert tokens_over_time([]) == ([], [])


def test_report_cli_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.report", str(tmp_path), "--output",
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
    proc = subprocess.run([sys.executable, "-m", "harness.report", *map(str, run_dirs), "--output",
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
