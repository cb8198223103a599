"""Running model-written programs (LiveCodeBench) against their tests, one sandboxed process each.

Each program runs in new network, mount and PID namespaces (`unshare`, as root): no network but
a loopback that is down, private empty tmpfs folders over /tmp, /var/tmp and /dev/shm (the working
folder lives in one and goes with the namespace), its own PID 1 so that every process it starts
dies with it. It runs as an unprivileged uid of its own (so that RLIMIT_NPROC holds: root is
exempt) under limits of CPU time, address space, processes, file size and open files; the parent
enforces the wall time and caps what it reads of the output, killing the whole group on either.
Where `unshare` is refused (no root, a kernel or container that forbids namespaces) `available()`
is false and nothing runs: programs are never run without the sandbox.

A test case passes when the program exits 0 and its output equals the expected one as
LiveCodeBench's grader compares them (same_output). A program passes when all its cases pass; the
first failure stops it. `run_all` spreads programs over the cores.

Standard library only: the parent imports it and the namespace's first process runs this file.
"""
from __future__ import annotations

import itertools
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Sequence

_UID_BASE = 61000  # uids of the programs, one per run in turn, none of them a real user's
_uids = itertools.count()
_uid_lock = threading.Lock()
_PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")


@dataclass(frozen=True)
class Limits:
    cpu_s: int = 4
    wall_s: float = 6.0
    memory_bytes: int = 1 << 30
    processes: int = 16
    file_bytes: int = 16 << 20
    tmp_bytes: int = 64 << 20
    output_bytes: int = 1 << 20
    open_files: int = 64


@dataclass(frozen=True)
class CaseResult:
    passed: bool
    reason: str  # "ok", "wrong answer", "exit N", "signal NAME", "time limit", "output limit"
    output: bytes = b""


def available() -> bool:
    """Whether programs can be sandboxed here (namespaces allowed, root)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "true"], capture_output=True)
    return probe.returncode == 0


def _others_may_run(path: str) -> bool:
    path = os.path.realpath(path)
    folders, parent = [], os.path.dirname(path)
    while parent != os.path.dirname(parent):
        folders.append(parent)
        parent = os.path.dirname(parent)
    try:
        return os.stat(path).st_mode & 0o005 == 0o005 and all(os.stat(d).st_mode & 0o001 for d in folders)
    except OSError:
        return False


def program_python() -> str:
    """An interpreter the programs' uid may run: ours, unless it lives where others cannot go
    (a pyenv under /root), then the system's."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if _others_may_run(candidate):
            return os.path.realpath(candidate)
    raise RuntimeError("no Python interpreter that an unprivileged user may run")


def _next_uid() -> int:
    with _uid_lock:
        return _UID_BASE + next(_uids) % 4096


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_case(code: str, stdin: str, limits: Limits = Limits()) -> tuple[int | None, bytes, str | None]:
    """Runs `code` once on `stdin`: (exit status or -signal, output, limit hit or None)."""
    with tempfile.TemporaryDirectory(prefix="sandbox-") as folder:
        code_path = os.path.join(folder, "prog.py")
        with open(code_path, "w", encoding="utf-8") as f:
            f.write(code)
        cmd = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
               sys.executable, "-I", os.path.abspath(__file__), code_path, str(_next_uid()),
               str(limits.cpu_s), str(limits.memory_bytes), str(limits.processes), str(limits.file_bytes),
               str(limits.tmp_bytes), str(limits.open_files), program_python()]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        return _communicate(proc, stdin.encode(), limits)


def _communicate(proc: subprocess.Popen, data: bytes, limits: Limits):
    deadline = time.monotonic() + limits.wall_s
    out, hit = bytearray(), None
    try:
        # inputs of tests are small; a program that does not read them must not block us
        threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True).start()
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                hit = "time limit"
                break
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
            if len(out) > limits.output_bytes:
                hit = "output limit"
                break
        if hit is None:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                hit = "time limit"
    finally:
        _kill(proc)
        proc.wait()
        proc.stdout.close()
    return (None if hit else proc.returncode), bytes(out[:limits.output_bytes]), hit


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, OSError):
        pass


# LiveCodeBench's call-based (LeetCode) problems run with these modules' names imported
_CALL_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
                 "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing")
_CALL_HEADER = "".join(f"from {m} import *\n" for m in _CALL_MODULES) + "".join(
    f"import {m}\n" for m in _CALL_MODULES if m not in ("builtins", "typing")) + "sys.setrecursionlimit(50000)\n"
_CALL_DRIVER = """
import json as _json, sys as _sys
_source = {source!r}
_ns = {{}}
exec(compile({header!r} + "\\n\\n" + _source, "prog.py", "exec"), _ns)
_target = _ns["Solution"]() if "class Solution" in _source else None
_method = getattr(_target, {fn!r}) if _target is not None else _ns[{fn!r}]
_result = _method(*[_json.loads(line) for line in _sys.stdin.read().split("\\n")])
_sys.stdout.write(_json.dumps(list(_result) if isinstance(_result, tuple) else _result))
"""


def call_program(code: str, fn_name: str) -> str:
    """A script that calls `fn_name` (a method of `Solution` when the code defines one) with the
    case's input, one JSON argument a line, and prints the result as JSON (a tuple as a list)."""
    return _CALL_DRIVER.format(source=code, header=_CALL_HEADER, fn=fn_name)


def same_result(got: bytes, expected: str) -> bool:
    """LiveCodeBench's call-based rule: the result equals the expected JSON value."""
    try:
        return json.loads(got.decode("utf-8", "replace")) == json.loads(expected)
    except ValueError:
        return False


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(word) for word in line.split()]
    except InvalidOperation:
        return None


def same_output(got: bytes, expected: str) -> bool:
    """LiveCodeBench's stdio rule: the same number of lines (whole output and each line stripped),
    each line equal as text or, word by word, as decimal numbers (1.50 == 1.5, never 1e16 == 1e16 + 1)."""
    ours, theirs = _lines(got.decode("utf-8", "replace")), _lines(expected)
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs):
        if a != b:
            da, db = _decimals(a), _decimals(b)
            if da is None or db is None or da != db:
                return False
    return True


def _is_signal(status: int) -> bool:
    # the namespace's first process reports a program killed by signal N as 128 + N
    try:
        signal.Signals(status - 128)
        return True
    except ValueError:
        return False


def check(code: str, cases: Sequence[tuple], limits: Limits = Limits()) -> CaseResult:
    """Runs `code` on each case until one fails: (stdin, expected stdout), or for a call-based
    problem (JSON arguments a line, expected JSON result, function name)."""
    result = CaseResult(False, "no test cases")
    for case in cases:
        stdin, expected, fn_name = (*case, None)[:3]
        program = call_program(code, fn_name) if fn_name else code
        status, out, hit = run_case(program, stdin, limits)
        if hit:
            return CaseResult(False, hit, out)
        if status != 0:
            reason = f"signal {signal.Signals(status - 128).name}" if _is_signal(status) else f"exit {status}"
            return CaseResult(False, reason, out)
        if not (same_result(out, expected) if fn_name else same_output(out, expected)):
            return CaseResult(False, "wrong answer", out)
        result = CaseResult(True, "ok", out)
    return result


def run_all(programs: Sequence[tuple[str, Sequence[tuple[str, str]]]], limits: Limits = Limits(),
            workers: int | None = None) -> list[CaseResult]:
    """check() for each (code, cases), `workers` at a time (default: one per core)."""
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda p: check(p[0], p[1], limits), programs))


def _child(argv: list[str]) -> None:
    """The namespace's PID 1: private tmp folders, the program's folder, limits, uid, exec."""
    code_path, uid = argv[0], int(argv[1])
    cpu_s, memory, processes, file_bytes, tmp_bytes, open_files = (int(a) for a in argv[2:8])
    python = argv[8]
    with open(code_path, "rb") as f:
        code = f.read()
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    for folder in _PRIVATE_TMP:
        if os.path.isdir(folder):
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={tmp_bytes},mode=1777,nosuid,nodev", "tmpfs",
                            folder], check=True)
    work = "/tmp/work"
    os.mkdir(work, 0o700)
    with open(os.path.join(work, "prog.py"), "wb") as f:
        f.write(code)
    os.chown(work, uid, uid)
    os.chdir(work)
    # the program runs as PID 2: PID 1 of a namespace ignores signals it has no handler for (the
    # CPU limit's SIGXCPU among them), and its exit takes every other process of the namespace along
    pid = os.fork()
    if pid:
        status = os.waitpid(pid, 0)[1]
        os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    os.setgroups([])
    os.setgid(uid)
    for what, value in ((resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_AS, memory),
                        (resource.RLIMIT_NPROC, processes), (resource.RLIMIT_FSIZE, file_bytes),
                        (resource.RLIMIT_NOFILE, open_files), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(what, (value, value))
    os.setuid(uid)
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    os.execve(python, [python, "-I", "prog.py"], env)


if __name__ == "__main__":
    _child(sys.argv[1:])
