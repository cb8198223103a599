"""Silencing native libraries that write straight to file descriptors 1 and 2 (llama.cpp's
load-time chatter), which Python's own redirection cannot catch."""
from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def native_output_silenced(silence: bool = True):
    """Send whatever is written to fd 1/2 inside the block to /dev/null (for the whole process:
    use it only around short calls such as a model or vocabulary load)."""
    if not silence:
        yield
        return
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)
