"""One exception type for input the user can fix.

Command-line entry points catch HarnessError, print its message as one line on stderr and
exit non-zero; everything else is a bug and keeps its traceback.
"""
import sys


class HarnessError(Exception):
    """Bad input or configuration: the message says what and how to fix it."""


def exit_on_error(main):
    """Run main(); turn a HarnessError into one line on stderr and exit status 2."""
    try:
        return main()
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
