"""Secrets out of everything shown, logged or stored: credentials in URLs (`http://user:pw@host`)
and the values of secret command-line flags. Results folders are shared and published, so a
secret must never reach results.json, requests.csv, logs or error messages.
"""
from __future__ import annotations

import re

# scheme://userinfo@ : the userinfo part is what is hidden.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
SECRET_FLAGS = ("--api-key",)
# --backend-arg KEY=VALUE options whose value is a secret.
SECRET_OPTIONS = ("api_key",)
HIDDEN = "***"


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by ***."""
    return _USERINFO.sub(rf"\1{HIDDEN}@", text)


def redact_argv(argv: list[str]) -> list[str]:
    """A command line fit to record: URL credentials and the values of secret flags
    (`--api-key KEY`, `--api-key=KEY`, `api_key=KEY`) replaced by ***."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(HIDDEN)
            hide_next = False
            continue
        name, sep, _ = arg.partition("=")
        if name in SECRET_FLAGS:
            hide_next = not sep
            out.append(f"{name}={HIDDEN}" if sep else arg)
        elif sep and name.strip() in SECRET_OPTIONS:
            out.append(f"{name}={HIDDEN}")
        else:
            out.append(redact(arg))
    return out
