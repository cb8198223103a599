"""Secrets out of everything shown, logged or stored: credentials in URLs (`http://user:pw@host`)
and the values of secret command-line flags. Results folders are shared and published, so a
secret must never reach results.json, requests.csv, logs or error messages.

Every command line that is written down or shown goes through redact_argv (shown_command for one
line); free text (error messages, log tails) through redact.
"""
from __future__ import annotations

import argparse
import re
import shlex

# scheme://userinfo@ : the userinfo part is what is hidden.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
SECRET_FLAGS = ("--api-key",)
# --backend-arg KEY=VALUE options (and comparison-spec backend_args keys) whose value is a secret.
SECRET_OPTIONS = ("api_key",)
# The shortest start of a secret flag that is hidden too: parsers refuse abbreviations
# (allow_abbrev=False), but a mistyped `--api-ke KEY` still reaches error messages and logs.
_MIN_PREFIX = len("--api-k")
HIDDEN = "***"
# In free text: `--api-key KEY`, `--api-ke=KEY`, `api_key=KEY`, `"api_key": "KEY"`.
_FLAG_IN_TEXT = re.compile(r"(--api-k[a-z-]*)(=|\s+)(\S+)")
_OPTION_IN_TEXT = re.compile(r"""(\bapi_key['"]?\s*[=:]\s*)(['"]?)[^\s'",}]+""")


def redact(text: str) -> str:
    """`text` with URL credentials and the values of secret flags / options in it replaced by ***."""
    text = _USERINFO.sub(rf"\1{HIDDEN}@", text)
    text = _FLAG_IN_TEXT.sub(lambda m: m[1] + m[2] + HIDDEN if _is_secret_flag(m[1]) else m[0], text)
    return _OPTION_IN_TEXT.sub(rf"\1\2{HIDDEN}", text)


def _is_secret_flag(name: str) -> bool:
    return any(f.startswith(name) and len(name) >= _MIN_PREFIX for f in SECRET_FLAGS)


def redact_argv(argv: list[str]) -> list[str]:
    """A command line fit to record: URL credentials and the values of secret flags
    (`--api-key KEY`, `--api-key=KEY`, an abbreviation of it, `api_key=KEY`,
    `--backend-arg=api_key=KEY`) replaced by ***."""
    out: list[str] = []
    hide_next = False
    for arg in map(str, argv):
        if hide_next:
            out.append(HIDDEN)
            hide_next = False
            continue
        name, sep, value = arg.partition("=")
        if _is_secret_flag(name):
            hide_next = not sep
            out.append(f"{name}={HIDDEN}" if sep else arg)
        elif sep and name.strip() in SECRET_OPTIONS:
            out.append(f"{name}={HIDDEN}")
        elif sep and name.startswith("--") and value.partition("=")[0].strip() in SECRET_OPTIONS:
            out.append(f"{name}={value.partition('=')[0]}={HIDDEN}")
        else:
            out.append(redact(arg))
    return out


def shown_command(argv: list[str]) -> str:
    """A command line as one line to log or write, redacted."""
    return shlex.join(redact_argv(argv))


def redact_data(obj):
    """A copy of parsed YAML/JSON (a comparison spec) with its secrets hidden: the values of
    secret option keys, secret flags in lists of arguments, URL credentials in any string."""
    if isinstance(obj, dict):
        return {k: HIDDEN if k in SECRET_OPTIONS and obj[k] not in ("", None) else redact_data(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        if all(isinstance(v, (str, int, float)) for v in obj):
            return [v if r == str(v) else r for v, r in zip(obj, redact_argv(obj))]
        return [redact_data(v) for v in obj]
    return redact(obj) if isinstance(obj, str) else obj


class RedactingArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose error messages have secrets hidden: "unrecognized arguments:"
    repeats what was typed, a mistyped --api-key value included."""

    def error(self, message: str):
        super().error(redact(message))
