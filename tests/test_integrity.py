"""A run's integrity: zero-token replies, Ctrl-C / SIGTERM, publishing the results folder, and
failures that LoadGen's verdict does not show. Real LoadGen in a main.py subprocess, with the
null backend or the openai backend against a misbehaving server on loopback."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, accuracy_entries, decode_ids, results, run_main, summary, tiny_conf, tiny_dataset

from common.errors import HarnessError, exit_on_error
from tests.servers import FakeServer


@pytest.fixture
def data(tmp_path):
    return tiny_dataset(tmp_path / "tiny.pkl", n=16)


def _main(tmp_path, data, *extra, conf=None, out="out"):
    conf = conf or tiny_conf(tmp_path / "user.conf", n=16)
    return run_main("--dataset-path", str(data), "--user-conf", str(conf),
                    "--output-log-dir", str(tmp_path / out), *extra, timeout=120)


def _loadgen_errors(log_dir: Path) -> list[str]:
    text = (log_dir / "mlperf_log_detail.txt").read_text()
    return [json.loads(ln[len(":::MLLOG "):])["value"] for ln in text.splitlines()
            if '"is_error": true' in ln]


def _partials(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if ".partial-" in p.name]


# ---- 1. zero-token replies ------------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["Server", "Offline"])
@pytest.mark.parametrize("mode", ["accuracy", "performance"])
def test_zero_token_reply_is_a_failed_query_answered_with_one_token(tmp_path, data, scenario, mode):
    p = _main(tmp_path, data, "--backend", "null", "--backend-arg", "tokens=0", "--min-new-tokens", "0",
              "--scenario", scenario, *(["--accuracy"] if mode == "accuracy" else []))
    assert p.returncode == 1, p.stderr[-2000:]   # was a segfault (139) in Server accuracy, 0 in performance
    assert "empty reply (no tokens)" in p.stderr
    r = results(tmp_path / "out")
    assert r["run"]["status"] == "failed"
    assert r["requests"]["completed"] == 0 and r["requests"]["error_messages"] == {
        "empty reply (no tokens)": r["requests"]["count"]}
    # LoadGen got one token per query, first token included: only its one-token complaint remains.
    assert set(_loadgen_errors(tmp_path / "out")) == {"Number of tokens need to be greater than 1"}
    if mode == "accuracy":
        assert all(decode_ids(e) == [1] for e in accuracy_entries(tmp_path / "out"))  # null's EOS


@pytest.mark.parametrize("scenario", ["Server", "Offline"])
def test_empty_server_reply_without_eos_gets_the_fallback_token(tmp_path, data, scenario):
    from harness.core import NO_TOKEN_ID

    with FakeServer() as server:
        server.mode = "empty"
        # a few requests at a time
        p = _main(tmp_path, data, "--backend", "openai", "--api-server", server.url, "--scenario", scenario,
                  "--accuracy", "--max-new-tokens", "8", "--backend-arg", "concurrency=4")
    assert p.returncode == 1, p.stderr[-2000:]
    r = results(tmp_path / "out")
    assert r["run"]["status"] == "failed" and r["run"]["eos_token_ids"] == []
    assert r["requests"]["error_messages"] == {"empty reply (no tokens)": 16}
    assert all(decode_ids(e) == [NO_TOKEN_ID] for e in accuracy_entries(tmp_path / "out"))
    assert set(_loadgen_errors(tmp_path / "out")) == {"Number of tokens need to be greater than 1"}


# ---- 2. Ctrl-C and SIGTERM -------------------------------------------------------------------
def _start_main(tmp_path, data, conf, *extra) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "main.log"
    cmd = [sys.executable, str(ROOT / "main.py"), "--no-progress", "--no-sysmetrics", "--backend", "null",
           "--dataset-path", str(data), "--user-conf", str(conf), "--output-log-dir", str(tmp_path / "out"),
           *extra]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    # LoadGen's detail log in the run's .partial folder: its test has started, so the harness's
    # signal handlers are in place (they are set before LoadGen's thread starts).
    started = lambda: "starting LoadGen" in log.read_text() and any(  # noqa: E731
        (p / "mlperf_log_detail.txt").exists() for p in _partials(tmp_path))
    _until(started, proc, log, 120)
    time.sleep(0.5)  # LoadGen has issued its first queries; the backend is busy with them
    return proc, log


def _until(condition, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll until condition() holds; fails if main.py exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, f"not seen in {timeout} s:\n" + log.read_text()[-2000:]
        time.sleep(0.05)


def _wait(proc: subprocess.Popen, timeout: float) -> tuple[int, float]:
    t0 = time.monotonic()
    try:
        return proc.wait(timeout), time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("scenario,sig", [("Offline", signal.SIGINT), ("Server", signal.SIGTERM)],
                         ids=["Offline-SIGINT", "Server-SIGTERM"])
def test_signal_completes_outstanding_queries_and_keeps_partial_results(tmp_path, data, scenario, sig):
    # Every query waits 30 s in the backend: only the interrupt can end the run in time.
    conf = tiny_conf(tmp_path / "user.conf", n=16)
    proc, log = _start_main(tmp_path, data, conf, "--scenario", scenario, "--backend-arg", "delay_ms=30000",
                            "--batch-size", "4")
    proc.send_signal(sig)
    rc, took = _wait(proc, 60)
    text = log.read_text()
    assert rc == 130, text[-3000:]
    assert took < 20, took      # well before the backend's 30 s answers (a few seconds on a loaded machine)
    assert "Traceback" not in text and f"RUN INTERRUPTED ({sig.name})" in text
    assert not (tmp_path / "out").exists()  # never published as a finished run
    [partial] = _partials(tmp_path)
    r = results(partial)
    assert r["run"]["status"] == "interrupted" and r["run"]["signal"] == sig.name
    assert r["requests"]["count"] > 0 and r["requests"]["error_messages"] == {"interrupted": r["requests"]["count"]}
    assert "MLPerf Results Summary" in summary(partial)  # LoadGen ended by itself


def test_signal_when_loadgen_keeps_scheduling_and_a_second_signal(tmp_path, data):
    # A Server run with a minute to go: LoadGen schedules queries until then, so the harness
    # stops waiting for it after its grace period; a second signal exits at once.
    conf = tmp_path / "long.conf"
    conf.write_text("*.Server.target_qps = 50\n*.Server.min_duration = 60000\n*.Server.min_query_count = 100\n")
    proc, log = _start_main(tmp_path, data, conf, "--scenario", "Server", "--backend-arg", "delay_ms=100")
    proc.send_signal(signal.SIGINT)
    rc, took = _wait(proc, 60)
    assert rc == 130 and took < 20, (rc, took, log.read_text()[-3000:])   # 3 s grace, not LoadGen's 60 s
    [partial] = _partials(tmp_path)
    assert results(partial)["run"]["status"] == "interrupted"

    for p in _partials(tmp_path):
        for f in p.iterdir():
            f.unlink()
        p.rmdir()
    proc, log = _start_main(tmp_path, data, conf, "--scenario", "Server", "--backend-arg", "delay_ms=100")
    proc.send_signal(signal.SIGINT)
    # The second signal only once the first was handled (two signals sent close together may
    # arrive as one); from then the harness waits 3 s for LoadGen before it would exit by itself.
    _until(lambda: "SIGINT: stopping" in log.read_text(), proc, log, 30)
    proc.send_signal(signal.SIGINT)
    rc, took = _wait(proc, 60)
    assert rc == 130 and took < 2.5, (rc, took, log.read_text()[-3000:])
    assert "second signal: exiting at once" in log.read_text()


def test_signal_while_the_backend_loads_exits_130_and_leaves_nothing(tmp_path, data):
    conf = tiny_conf(tmp_path / "user.conf", n=16)
    with FakeServer() as server:
        server.mode = "stall"  # the backend's test completion at load never returns
        cmd = [sys.executable, str(ROOT / "main.py"), "--no-progress", "--backend", "openai", "--api-server",
               server.url, "--dataset-path", str(data), "--user-conf", str(conf),
               "--output-log-dir", str(tmp_path / "out")]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while not server.bodies and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        rc, took = _wait(proc, 60)
    out = proc.stdout.read()
    assert rc == 130 and took < 20, (rc, took, out[-2000:])    # not the 600 s stall
    assert "interrupted; nothing was published" in out and "Traceback" not in out
    assert not _partials(tmp_path) and not (tmp_path / "out").exists()


# ---- 4. publishing ---------------------------------------------------------------------------
def test_existing_empty_folder_is_written_into_not_replaced(tmp_path, data):
    target = tmp_path / "out"
    target.mkdir()
    fd = os.open(target, os.O_RDONLY)  # holds the folder itself: a removed one lists nothing
    try:
        p = _main(tmp_path, data, "--backend", "null", "--accuracy")
        assert p.returncode == 0, p.stderr[-2000:]
        assert "results.json" in os.listdir(fd) and "mlperf_log_accuracy.json" in os.listdir(fd)
    finally:
        os.close(fd)
    assert results(target)["run"]["status"] == "ok"
    assert not _partials(tmp_path)


def test_empty_mount_point_receives_the_results(tmp_path, data):
    target = tmp_path / "out"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "none", str(target)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("needs permission to mount a tmpfs")
    try:
        p = _main(tmp_path, data, "--backend", "null", "--accuracy")
        assert p.returncode == 0, p.stderr[-2000:]
        assert results(target)["run"]["status"] == "ok"
        assert not _partials(tmp_path)
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_failed_load_leaves_no_partial_folder(tmp_path, data):
    from tests.servers import refused_port

    with refused_port() as port:
        p = _main(tmp_path, data, "--backend", "openai", "--api-server", f"http://127.0.0.1:{port}")
        assert p.returncode == 2 and "not usable" in p.stderr, p.stderr[-2000:]
        assert not _partials(tmp_path) and not (tmp_path / "out").exists()
        (tmp_path / "empty").mkdir()  # an existing empty target is left as it was
        p = _main(tmp_path, data, "--backend", "openai", "--api-server", f"http://127.0.0.1:{port}", out="empty")
    assert p.returncode == 2 and not _partials(tmp_path) and not os.listdir(tmp_path / "empty")


def test_report_refuses_to_overwrite_a_file_it_did_not_write(tmp_path, data, capsys):
    from reporting import report

    p = _main(tmp_path, data, "--backend", "null", "--scenario", "Offline")
    assert p.returncode == 0, p.stderr[-2000:]
    before = (tmp_path / "out" / "results.json").read_bytes()
    with pytest.raises(SystemExit) as exc:
        exit_on_error(lambda: report.main([str(tmp_path / "out"), "--output", str(tmp_path / "out" / "results.json")]))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a report written by this harness" in err[0], err
    assert (tmp_path / "out" / "results.json").read_bytes() == before
    # A report of ours is replaced.
    html = tmp_path / "report.html"
    assert report.main([str(tmp_path / "out"), "--output", str(html)]) == 0
    assert report.main([str(tmp_path / "out"), "--output", str(html)]) == 0
    with pytest.raises(HarnessError):
        report.write_html(tmp_path / "out", "<html></html>")  # a folder is never a report


# ---- 7. failures above LoadGen's verdict ------------------------------------------------------
def test_offline_run_where_every_query_fails_is_failed_though_loadgen_says_valid(tmp_path):
    from reporting.report import build_html, group_dirs

    prompts = [[100 + i, 5, 6] for i in range(16)]
    data = tiny_dataset(tmp_path / "d.pkl", prompts=prompts)
    p = _main(tmp_path, data, "--backend", "null", "--scenario", "Offline", "--batch-size", "16",
              "--backend-arg", "delay_ms=300", "--backend-arg", "fail_on=" + ",".join(str(100 + i) for i in range(16)))
    assert p.returncode == 1, p.stderr[-2000:]
    assert "Result is : VALID" in summary(tmp_path / "out")
    r = results(tmp_path / "out")
    assert r["loadgen"]["result"] == "VALID" and r["run"]["status"] == "failed"
    assert "16 of 16 queries failed" in r["run"]["status_reasons"]
    out = p.stdout
    assert out.index("RUN FAILED: 16 of 16 queries failed") < out.index("LoadGen result: VALID")
    html = build_html(group_dirs([str(tmp_path / "out")]))
    assert html.index("Run status: <b class='bad'>failed</b>") < html.index("LoadGen: <b class='ok'>VALID</b>")


def test_loadgen_error_lines_alone_fail_the_run(tmp_path, data):
    # One-token replies succeed for us, but LoadGen logs an error for each (it has no TPOT).
    p = _main(tmp_path, data, "--backend", "null", "--scenario", "Offline", "--backend-arg", "tokens=1")
    assert p.returncode == 1, p.stderr[-2000:]
    r = results(tmp_path / "out")
    assert r["requests"]["errors"] == 0 and r["run"]["status"] == "failed"
    assert r["run"]["status_reasons"] == ["LoadGen logged 16 errors"]
    assert r["run"]["loadgen_errors"] == {"error_runtime: Number of tokens need to be greater than 1": 16}
    assert "LoadGen error x16: error_runtime: Number of tokens need to be greater than 1" in p.stdout
