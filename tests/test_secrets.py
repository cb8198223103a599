"""No secret in any file or console line, however it is given: --api-key, a mistyped
abbreviation of it, --backend-arg api_key=..., $OPENAI_API_KEY, a password in a URL, a comparison
spec (backend_args, main_args), flags after `--` in a sweep or a submission. Each test runs the
real tools (main.py, reporting.compare / sweep / report, submission.py) against a FakeServer on
loopback and greps every file of the output folder and the console output."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, run_main, tiny_conf, tiny_dataset
from tests.servers import FakeServer

KEY, KEY2, PASSWORD = "sk-leak-key-1111", "sk-leak-key-2222", "pw-leak-3333"
SECRETS = (KEY, KEY2, PASSWORD)


def leaks(folder: Path, *consoles: str) -> list[str]:
    """Where a secret shows: 'path: secret' for each file under folder (and console) holding one."""
    found = [f"console: {s}" for c in consoles for s in SECRETS if s in c]
    for f in folder.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            found += [f"{f.relative_to(folder)}: {s}" for s in SECRETS if s.encode() in data]
    return found


def tool(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def with_password(url: str) -> str:
    return url.replace("http://", f"http://alice:{PASSWORD}@")


def test_every_parser_refuses_abbreviations():
    """allow_abbrev=False on every ArgumentParser and subparser: `--api-ke KEY` is an unknown flag,
    never taken for --api-key (and so never hidden as one by mistake)."""
    missing = []
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts or "tests" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                if name.endswith("ArgumentParser") or name == "add_parser":
                    if not any(k.arg == "allow_abbrev" and getattr(k.value, "value", None) is False
                               for k in node.keywords):
                        missing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not missing


def test_main_abbreviated_and_equals_forms_never_echo_the_key(tmp_path):
    """Mistyped abbreviations are refused (exit 2) and argparse's "unrecognized arguments" line
    hides their values."""
    for flags in (["--api-ke", KEY], [f"--api-k={KEY}"], [f"--api-ke={KEY}", "--backend-arg", f"api_key={KEY2}"]):
        p = run_main("--backend", "openai", *flags, "--output-log-dir", str(tmp_path / "x"), timeout=60)
        assert p.returncode == 2 and "unrecognized arguments" in p.stderr, p.stderr[-500:]
        assert not leaks(tmp_path, p.stdout, p.stderr)
    # A malformed --backend-arg is quoted back in the error line, its secret hidden.
    p = run_main("--backend", "openai", "--backend-arg", f"api_key:{KEY}", "--output-log-dir", str(tmp_path / "x"),
                 timeout=60)
    assert p.returncode == 2 and "error: --backend-arg expects KEY=VALUE" in p.stderr, p.stderr[-500:]
    assert not leaks(tmp_path, p.stdout, p.stderr)


def test_main_key_from_flags_and_environment_is_in_no_file(tmp_path):
    """--backend-arg=api_key=... (one word), a URL password and $OPENAI_API_KEY; then a report."""
    with FakeServer() as srv:
        out = tmp_path / "run"
        p = tool(str(ROOT / "main.py"), "--backend", "openai", "--api-server", with_password(srv.url),
                 f"--backend-arg=api_key={KEY}", "--dataset-path", str(tiny_dataset(tmp_path / "d.pkl", n=4)),
                 "--user-conf", str(tiny_conf(tmp_path / "u.conf", n=4)), "--total-sample-count", "4",
                 "--max-new-tokens", "4", "--no-progress", "--output-log-dir", str(out), cwd=tmp_path,
                 env={"OPENAI_API_KEY": KEY2})
        assert p.returncode == 0, p.stderr[-2000:]
        assert srv.headers[-1]["Authorization"] == f"Bearer {KEY}"
        r = tool("-m", "reporting.report", str(out), "--output", str(tmp_path / "report.html"), cwd=tmp_path,
                 env={"OPENAI_API_KEY": KEY2})
        assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["run"]["command"]   # the command is recorded
    assert not leaks(tmp_path, p.stdout, p.stderr, r.stdout, r.stderr)


def test_compare_spec_secrets_are_in_no_file(tmp_path):
    """backend_args api_key and main_args --api-key / a URL password: the rep-*.log command lines,
    the spec's copy and the runs' files hide them."""
    with FakeServer() as srv:
        spec = tmp_path / "spec.yaml"
        spec.write_text(f"""
defaults:
  backend: openai
  data: {tiny_dataset(tmp_path / "d.pkl", n=4)}
  user_conf: {tiny_conf(tmp_path / "u.conf", n=4)}
  main_args: ["--total-sample-count", "4", "--max-new-tokens", "4", "--no-sysmetrics"]
runs:
  - name: a
    backend_args: {{api_key: {KEY}, api_server: "{with_password(srv.url)}"}}
  - name: b
    main_args:
      - --total-sample-count
      - "4"
      - --api-key
      - {KEY2}
      - --api-server
      - {with_password(srv.url)}
""")
        out = tmp_path / "cmp"
        p = tool("-m", "reporting.compare", str(spec), "--output-dir", str(out), "--no-progress", cwd=tmp_path)
        assert p.returncode == 0, p.stdout[-1000:] + p.stderr[-2000:]
    assert (out / "a" / "rep-1.log").read_text().startswith("$ ") and (out / "spec.yaml").exists()
    assert not leaks(out, p.stdout, p.stderr)


def test_sweep_flags_after_dashes_are_in_no_file(tmp_path):
    with FakeServer() as srv:
        out = tmp_path / "sw"
        p = tool("-m", "reporting.sweep", "--backend", "openai", "--concurrency", "1", "--num-samples", "2",
                 "--lengths", "8/4", "--no-progress", "--output-dir", str(out), "--",
                 "--api-server", with_password(srv.url), "--api-key", KEY, cwd=tmp_path)
        assert p.returncode == 0, p.stdout[-1000:] + p.stderr[-2000:]
    assert list(out.glob("*.log"))
    assert not leaks(out, p.stdout, p.stderr)


def test_submission_flags_after_dashes_are_in_no_file(tmp_path):
    """The submission tree's README.md, run_logs' settings (main_flags) and every run's logs."""
    tiny_dataset(tmp_path / "d.pkl", n=8)
    tiny_conf(tmp_path / "u.conf", n=8)
    with FakeServer() as srv:
        p = tool(str(ROOT / "submission.py"), "--submitter", "Org", "--system-name", "sys1", "--division", "open",
                 "--scenarios", "Offline", "--output-dir", "sub", "--", "--backend", "openai",
                 "--api-server", with_password(srv.url), "--api-key", KEY, "--dataset-path", "d.pkl",
                 "--user-conf", "u.conf", "--total-sample-count", "8", "--max-new-tokens", "4", "--no-progress",
                 "--no-sysmetrics", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-1000:] + p.stderr[-2000:]
    (readme,) = (tmp_path / "sub").rglob("Offline/README.md")
    assert "--api-key '***'" in readme.read_text()
    assert list((tmp_path / "sub" / "run_logs").glob("submission-*.json"))
    assert not leaks(tmp_path / "sub", p.stdout, p.stderr)
