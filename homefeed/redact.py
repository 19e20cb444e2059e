"""Redaction: the one place that decides what of a URL, option or message may be logged or shown.

    redact("redis://app:s3cret@cache:6379/0?password=x")  ->  "redis://app:***@cache:6379/0?password=***"

Covered wherever they appear in a text: the password of a URL's user-info (`scheme://user:pw@`,
also `scheme://pw@` as Redis writes a bare password), query-string or option values whose name
says secret (`password`, `passwd`, `pwd`, `token`, `secret`, `api_key`, `access_key`,
`client_secret`, `auth`, `credential(s)`, `signature`, `sig`, `x-amz-signature`), `Bearer` /
`Basic` credentials, and `--password VALUE` style command-line options. `RedactingFilter` applies
`redact` to every log record that passes the handler it is attached to (homefeed/logs.py attaches
it to the CLI's handler, which uvicorn's loggers share), so a credential that reaches a log line by
any path is still masked.

`public_message` is what an HTTP error body may say: `redact` plus absolute paths cut to their
last two components (the service's file layout is none of a client's business).

Every pattern is linear in the text it scans (repetitions bounded, starts anchored by a
look-behind), and text over `MAX_CHARS` is cut before they run: a message built from a client's
2 MB field costs what one of 16 kB does. `preview` is how an error message shows a client value.

Standard library only.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
# Text longer than this is cut before any pattern runs on it: every pattern below is linear in the
# text (bounded repetitions, anchored starts), and the cut bounds the constant too, so a log line or
# error message built from client data costs at most a few milliseconds.
MAX_CHARS = 16_384
PREVIEW_CHARS = 60

_SECRET_NAMES = (
    r"password|passwd|pwd|token|access_token|refresh_token|id_token|secret|client_secret|api_key|apikey"
    r"|access_key|secret_key|auth|authorization|credential|credentials|signature|sig|x-amz-signature|x-goog-signature"
)
# user-info of a URL: scheme://[user]:password@host or scheme://password@host (Redis style). Up to
# the LAST "@" of the authority: clients (redis-py, urllib) accept a raw "@" inside the password.
_USERINFO = re.compile(r"(?P<scheme>(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://)(?P<userinfo>[^/\s?#]{1,512})@")
# name=value in a query string, a form body, `key=value` options or environment variables (any name
# ending in a secret word: CANDIDATES_ADMIN_TOKEN=, redis_password=); the value ends at & ; space or quote.
_NAMED_VALUE = re.compile(
    rf"(?P<name>(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]{{0,64}}?(?:{_SECRET_NAMES}))(?P<sep>\s*[=:]\s*)(?P<quote>['\"]?)(?P<value>[^&;\s'\",)}}]+)",
    re.IGNORECASE,
)
# --password VALUE / --redis-password=VALUE / --token VALUE command-line options.
_OPTION = re.compile(
    rf"(?P<name>(?<![A-Za-z0-9-])--[A-Za-z0-9-]{{0,64}}?(?:{_SECRET_NAMES})[A-Za-z0-9-]{{0,64}})(?P<sep>[= ])(?P<value>[^\s'\"]+)",
    re.IGNORECASE,
)
_SCHEME_CREDENTIAL = re.compile(r"(?P<scheme>\b(?:Bearer|Basic|Token)\s+)(?P<value>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)
# An absolute POSIX path of two or more components (not part of a URL: no "//" or word before it).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s/'\"<>|:;,()]+){2,}/?")


def _userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match.group("userinfo").partition(":")
    # "user:pw" keeps the user; a bare "pw" (Redis: redis://pw@host) is all secret.
    return f"{match.group('scheme')}{user + ':' if colon else ''}{MASK}@"


def clip(text: str, limit: int = MAX_CHARS) -> str:
    """`text` cut to `limit` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def preview(value: object, limit: int = PREVIEW_CHARS) -> str:
    """A client value as an error message may show it: its repr, cut to about `limit` characters
    (with its length when cut), never the whole of a large value."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    if isinstance(value, (bytes, bytearray)) and len(value) > limit:
        return f"{bytes(value[:limit])!r}... ({len(value)} bytes)"
    text = repr(value) if isinstance(value, (str, bytes, int, float, bool, type(None))) else type(value).__name__
    return clip(text, limit)


def redact(text: object, limit: int = MAX_CHARS) -> str:
    """`text` (any object, through `str`) with every credential it carries replaced by `***`, cut
    to `limit` characters first (see `MAX_CHARS`)."""
    text = clip(str(text), limit)
    if not text:
        return text
    text = _USERINFO.sub(_userinfo, text)
    text = _SCHEME_CREDENTIAL.sub(lambda m: f"{m.group('scheme')}{MASK}", text)
    text = _OPTION.sub(lambda m: f"{m.group('name')}{m.group('sep')}{MASK}", text)
    text = _NAMED_VALUE.sub(lambda m: f"{m.group('name')}{m.group('sep')}{m.group('quote')}{MASK}", text)
    return text


def strip_paths(text: str) -> str:
    """Absolute paths cut to `.../<parent>/<name>`: enough to say which file, nothing about the host."""

    def cut(match: re.Match[str]) -> str:
        parts = [p for p in match.group(0).split("/") if p]
        return ".../" + "/".join(parts[-2:])

    return _ABSOLUTE_PATH.sub(cut, clip(text))


def public_message(text: object) -> str:
    """What an error body may carry: no credentials, no absolute paths."""
    return strip_paths(redact(text))


class RedactingFilter(logging.Filter):
    """Masks credentials in every record that passes (message, arguments and exception text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), 4 * MAX_CHARS)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, 4 * MAX_CHARS)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Attaches a `RedactingFilter` to every handler of `logger` (default: the root logger)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
