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

Standard library only.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

_SECRET_NAMES = (
    r"password|passwd|pwd|token|access_token|refresh_token|id_token|secret|client_secret|api_key|apikey"
    r"|access_key|secret_key|auth|authorization|credential|credentials|signature|sig|x-amz-signature|x-goog-signature"
)
# user-info of a URL: scheme://[user]:password@host or scheme://password@host (Redis style). Up to
# the LAST "@" of the authority: clients (redis-py, urllib) accept a raw "@" inside the password.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s?#]+)@")
# name=value in a query string, a form body, `key=value` options or environment variables (any name
# ending in a secret word: CANDIDATES_ADMIN_TOKEN=, redis_password=); the value ends at & ; space or quote.
_NAMED_VALUE = re.compile(
    rf"(?P<name>(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]*?(?:{_SECRET_NAMES}))(?P<sep>\s*[=:]\s*)(?P<quote>['\"]?)(?P<value>[^&;\s'\",)}}]+)",
    re.IGNORECASE,
)
# --password VALUE / --redis-password=VALUE / --token VALUE command-line options.
_OPTION = re.compile(
    rf"(?P<name>--[A-Za-z0-9-]*(?:{_SECRET_NAMES})[A-Za-z0-9-]*)(?P<sep>[= ])(?P<value>[^\s'\"]+)", re.IGNORECASE
)
_SCHEME_CREDENTIAL = re.compile(r"(?P<scheme>\b(?:Bearer|Basic|Token)\s+)(?P<value>[A-Za-z0-9._~+/=-]+)", re.IGNORECASE)
# An absolute POSIX path of two or more components (not part of a URL: no "//" or word before it).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s/'\"<>|:;,()]+){2,}/?")


def _userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match.group("userinfo").partition(":")
    # "user:pw" keeps the user; a bare "pw" (Redis: redis://pw@host) is all secret.
    return f"{match.group('scheme')}{user + ':' if colon else ''}{MASK}@"


def redact(text: object) -> str:
    """`text` (any object, through `str`) with every credential it carries replaced by `***`."""
    text = str(text)
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

    return _ABSOLUTE_PATH.sub(cut, text)


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
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Attaches a `RedactingFilter` to every handler of `logger` (default: the root logger)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
