"""A crash of native code ends in one line that says what crashed and what to do.

A segfault or illegal instruction in a native engine (llama.cpp, torch, vLLM) kills the Python
process before any handler of ours runs, and the shell prints a bare "Segmentation fault". So
main.py runs as two processes: this parent, which starts the same command line as a child, passes
Ctrl-C and SIGTERM on to it, and exits with its status; and the child, which does the work and
notes what a crash report needs (`note()`: the engine, how it was built, the partial output
folder). When the child dies by a signal, the parent prints one `error:` line from those notes,
keeps Python's native traceback (faulthandler) beside the partial output, and exits 128 + signal.

The child runs in its own process group, so a Ctrl-C at the terminal reaches it once, through the
parent (main.py's second Ctrl-C exits at once, which two copies of one keypress would trigger); it
is killed if the parent is (PR_SET_PDEATHSIG).
"""
from __future__ import annotations

import ctypes
import faulthandler
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Callable

from common.cpu import describe_cpu

_ENV = "HARNESS_CRASH_NOTE"   # set in the child: the file its notes go to
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1
_trace_file = None            # the child's faulthandler output, kept open


def note(**fields) -> None:
    """Record what a crash report needs (engine=..., built=..., partial=..., advice=...); a no-op
    outside a supervised child."""
    path = os.environ.get(_ENV)
    if not path:
        return
    try:
        with open(path) as f:
            notes = json.load(f)
    except (OSError, ValueError):
        notes = {}
    notes.update({k: str(v) for k, v in fields.items()})
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(notes, f)
    os.replace(tmp, path)


def _child_setup() -> None:
    os.setpgid(0, 0)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: an orphaned child runs on


def crash_line(sig: int, notes: dict, cpu: str, trace: str | None) -> str:
    """The one line the parent prints for a child killed by `sig`."""
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    if sig == signal.SIGKILL:  # not a crash of ours: the kernel's OOM killer, or a kill -9
        return f"error: the run was killed ({name}: out of memory, or killed by another process)" + (
            f"; partial output, not published: {notes['partial']}" if notes.get("partial") else "")
    what = notes.get("engine", "native code")
    built = f" ({notes['built']})" if notes.get("built") else ""
    partial = notes.get("partial")
    where = f"; partial output, not published: {partial}" if partial else "; nothing was published"
    advice = notes.get("advice", "report it with the native traceback")
    traced = f"; native traceback: {trace}" if trace else ""
    return f"error: {what}{built} crashed ({name}) on {cpu}; {advice}{where}{traced}"


def supervised(main: Callable[[], int]) -> int:
    """Run main() in a child process (see the module docstring); in the child, just main()."""
    if os.environ.get(_ENV):
        global _trace_file
        _trace_file = open(f"{os.environ[_ENV]}.trace", "w")
        faulthandler.enable(_trace_file, all_threads=True)
        return main()
    fd, notes_path = tempfile.mkstemp(prefix="harness-crash-", suffix=".json")
    os.close(fd)
    try:
        return _parent(notes_path)
    finally:
        for p in (notes_path, f"{notes_path}.trace", f"{notes_path}.tmp"):
            if os.path.exists(p):
                os.remove(p)


def _parent(notes_path: str) -> int:
    argv = [sys.executable, *sys.orig_argv[1:]]
    child = subprocess.Popen(argv, env={**os.environ, _ENV: notes_path}, preexec_fn=_child_setup)
    previous = {s: signal.signal(s, lambda sig, _frame: child.send_signal(sig)) for s in _FORWARDED}
    try:
        rc = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if rc >= 0:
        return rc
    sig = -rc
    if sig in _FORWARDED:  # it ended by the signal it was sent: no crash
        return 128 + sig
    try:
        with open(notes_path) as f:
            notes = json.load(f)
    except (OSError, ValueError):
        notes = {}
    trace = _keep_trace(f"{notes_path}.trace", notes.get("partial"))
    print(crash_line(sig, notes, describe_cpu(), trace), file=sys.stderr, flush=True)
    return 128 + sig


def _keep_trace(trace: str, partial: str | None) -> str | None:
    """Move the child's faulthandler output into the partial folder (if any); its final path."""
    if not os.path.isfile(trace) or os.path.getsize(trace) == 0:
        return None
    if partial and os.path.isdir(partial):
        dest = os.path.join(partial, "native_crash.txt")
        shutil.move(trace, dest)
        return dest
    dest = os.path.join(tempfile.gettempdir(), f"harness-native-crash-{os.getpid()}.txt")
    shutil.move(trace, dest)
    return dest
