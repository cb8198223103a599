"""One run's output folder, and LoadGen's test under Ctrl-C / SIGTERM.

Output folder: a run writes into a fresh `.partial-PID` folder and publishes it under the
requested name only when it completed, so earlier results are never overwritten and an
unfinished run (failed to start, interrupted) never looks finished. A new name gets
`NAME.partial-PID` beside it, renamed when done. An existing empty folder (a mount point, a
folder we may not remove or replace) gets `NAME/.partial-PID` inside it, on the same file
system, whose files are moved up when done, results.json last: a folder holding results.json
is a finished run.

Signals: LoadGen cannot be stopped mid-test, and a Python exception raised inside one of its
callbacks crashes the process. So the test runs on its own thread while the main thread only
waits, with handlers that raise nothing: the first SIGINT / SIGTERM calls `interrupt` (the SUT
then completes every outstanding and every new query at once, and LoadGen ends by itself);
a second one exits at once with status 130.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from common.errors import EXIT_INTERRUPTED, HarnessError
from common.files import make_folder
from harness.results import RESULTS_FILE

log = logging.getLogger(__name__)

_PARTIAL = ".partial-"


claimed: list[str] = []  # run folders this process claimed, for the error line of a full disk


def claim_output_dir(path: str) -> str:
    """The folder the run writes into (see the module docstring); refuses a `path` that holds
    anything. Still empty when the process exits (the backend failed to load, Ctrl-C before
    the test), it is removed."""
    path = os.path.abspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise HarnessError(f"--output-log-dir {path} is a file, not a folder; choose a new --output-log-dir")
    if os.path.isdir(path):
        if os.listdir(path):
            raise HarnessError(f"output dir {path} already holds results; choose a new --output-log-dir")
        tmp = os.path.join(path, f"{_PARTIAL}{os.getpid()}")
    else:
        make_folder(os.path.dirname(path), "the parent folder of --output-log-dir")
        tmp = f"{path}{_PARTIAL}{os.getpid()}"
    try:
        os.mkdir(tmp)
    except OSError as e:
        raise HarnessError(f"cannot create the run folder {tmp}: {e.strerror}") from None
    atexit.register(discard_claim, tmp)
    claimed.append(tmp)
    return tmp


def discard_claim(tmp: str) -> None:
    """Remove a claimed folder that is still empty (the run failed before writing anything)."""
    try:
        os.rmdir(tmp)
    except OSError:
        pass  # holds files: never deleted


def publish_output_dir(tmp: str, path: str) -> None:
    """Give the finished run in `tmp` its name `path`. On failure the files stay complete in `tmp`
    and the error says so."""
    path = os.path.abspath(path)
    try:
        if os.path.dirname(tmp) == path:  # claimed inside an existing folder
            for name in sorted(os.listdir(tmp), key=lambda n: n == RESULTS_FILE):  # results.json last
                target = os.path.join(path, name)
                if os.path.lexists(target):
                    raise FileExistsError(17, f"{target} appeared during the run")
                os.rename(os.path.join(tmp, name), target)
            os.rmdir(tmp)
        else:
            os.rename(tmp, path)  # fails if `path` appeared during the run and holds anything
    except OSError as e:
        raise HarnessError(f"could not publish the run as {path} ({e.strerror}); "
                           f"its files are complete in {tmp}") from None


@dataclass
class LoadGenOutcome:
    signal: str | None = None    # the signal that interrupted the run (SIGINT, SIGTERM)
    finished: bool = True        # LoadGen's test returned (False: still running after the grace)


def run_loadgen(start_test: Callable[[], None], interrupt: Callable[[], None],
                grace_s: float = 3.0) -> LoadGenOutcome:
    """Run `start_test` (LoadGen's StartTest...) on its own thread under our signal handlers.

    After the first signal, `interrupt` is called and LoadGen gets `grace_s` seconds to end (it
    does at once unless it still has queries to schedule, as a Server run before its minimum
    duration); then this returns with finished=False and the caller must neither destroy
    LoadGen's objects nor wait for it. Raises what start_test raised."""
    outcome = LoadGenOutcome()
    raised: list[BaseException] = []

    def target() -> None:
        try:
            start_test()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            raised.append(e)

    def on_signal(signum, _frame) -> None:
        if outcome.signal is not None:
            os.write(2, b"second signal: exiting at once\n")
            os._exit(EXIT_INTERRUPTED)
        outcome.signal = signal.Signals(signum).name

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        thread = threading.Thread(target=target, name="loadgen", daemon=True)
        thread.start()
        deadline = None
        while thread.is_alive():
            thread.join(0.1)  # wakes for signals: their handlers run on this thread only
            if outcome.signal is not None and deadline is None:
                print(f"\n{outcome.signal}: stopping; outstanding queries complete as failed "
                      "(signal again to exit at once)", file=sys.stderr, flush=True)
                interrupt()
                deadline = time.monotonic() + grace_s
            if deadline is not None and time.monotonic() > deadline and thread.is_alive():
                log.warning("LoadGen still runs %.0f s after the interrupt (it schedules queries "
                            "until its minimum duration); not waiting for it", grace_s)
                outcome.finished = False
                break
    finally:
        if outcome.signal is None:  # once interrupted, a further signal still exits at once
            for s, handler in previous.items():
                signal.signal(s, handler)
    if raised:
        raise raised[0]
    return outcome
