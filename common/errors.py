"""One exception type for input the user can fix, and the one wrapper every entry point runs in.

Command-line entry points run their main() through exit_on_error: a HarnessError becomes one
line on stderr (secrets hidden) and exit status 2, Ctrl-C (or SIGTERM turned into KeyboardInterrupt) one line and
exit status 130; everything else is a bug and keeps its traceback. Outputs are written through a
temporary file or folder that is moved into place at the end, so an interrupted tool leaves
nothing half-written.
"""
import sys

from common.redact import redact

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C


class HarnessError(Exception):
    """Bad input or configuration: the message says what and how to fix it."""


def exit_on_error(main, interrupted: str = "interrupted; no output was written"):
    """Run main() and return what it returns; a HarnessError exits 2 with one `error:` line, a
    KeyboardInterrupt exits 130 with the line `interrupted`."""
    try:
        return main()
    except HarnessError as e:
        print(f"error: {redact(str(e))}", file=sys.stderr)     # it may quote a mistyped secret
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
