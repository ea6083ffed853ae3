"""Logging: structlog JSON events, with every line (ours and the libraries') redacted.

Callers log stable snake_case events with context::

    log = get_logger(__name__)
    structlog.contextvars.bind_contextvars(shop="tb-main", order=42)
    log.info("order_shipped", code_ids=[7, 8], masked_codes=["12****90"])

:func:`configure_logging` routes structlog through the standard library, so one handler on
the root logger renders both our events and those of uvicorn, httpx, SQLAlchemy and APScheduler
as one JSON object per line, each through :func:`redact`. uvicorn's default logging config
gives its loggers their own unredacted handlers: :func:`configure_logging` takes them back,
and a server started after it must pass ``log_config=None`` to ``uvicorn.Config``.

**Redaction** has two halves:

1. *Sensitive keys.* A key (in the event or in any nested dict) is split into lowercase words
   (``accessToken`` and ``access-token`` both become ``access``, ``token``) and judged:

   * allowed as-is when the whole name is in :data:`ALLOWED_KEYS` (``error_code``,
     ``status_code``, ``key_id``...), when it starts with ``masked``, when its last word is a
     harmless attribute of a secret (:data:`HARMLESS_LAST_WORDS`: ``code_count``,
     ``key_file``, ``token_type``, ``sign_method``...), or when it ends in ``id``/``ids`` and
     names only our own rows (``code_id``, ``key_ids``) — a ``session_id`` is still secret;
   * otherwise sensitive when any word is in :data:`CODE_WORDS` (``code``, ``codes``,
     ``cdkey``...; the value is shown as :func:`robot.vault.mask` shows a code, ``12****90``)
     or :data:`CREDENTIAL_WORDS` (``secret``, ``password``, ``token``, ``session``, ``sign``,
     ``key``, ``authorization``, ``cookie``, ``pickup``...; the value becomes ``********``
     entirely, because even four characters of a password are too many).

   A platform's error code must therefore be logged as ``error_code`` / ``sub_code``, never
   as bare ``code`` (which in this project means a card code).

2. *Credential-looking text* inside any string value (messages from libraries, exception
   tracebacks, URLs): ``access_token=…``, ``session=…``, ``sign=…``, ``app_secret=…`` and
   the like in query strings or form bodies, the same names as JSON members,
   ``Authorization: Bearer …`` and any ``Bearer …``, the password in a URL's userinfo
   (``scheme://user:***@host``), and the token of a buyer's pickup link (``/p/***``, which
   uvicorn's access log would otherwise record for every buyer).

Exceptions are rendered to text first (:func:`structlog.processors.format_exc_info`) so that
the traceback passes through redaction too; objects other than plain data are turned into
text before redaction for the same reason.

This module must never let a value under a sensitive key, or a credential in a URL, reach the
output; and it must never print locals of a traceback (where plaintext codes live).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import PurePath
from typing import Any, Final, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from robot.errors import ConfigError
from robot.vault import mask

REDACTED: Final = "********"
SCRUBBED: Final = "***"

# Words that make a key hold a card code: shown masked the way codes are always displayed.
CODE_WORDS: Final = frozenset({"code", "codes", "cdkey", "cdkeys", "plaintext", "kami"})

# Words that make a key hold a credential: replaced entirely.
CREDENTIAL_WORDS: Final = frozenset({
    "secret", "secrets", "password", "passwords", "passwd", "pwd", "token", "tokens",
    "session", "sessionkey", "authorization", "cookie", "cookies", "sign", "signature",
    "key", "keys", "apikey", "appsecret", "accesstoken", "refreshtoken", "credential",
    "credentials", "passphrase", "pin", "pickup",
})

# Whole names that are sensitive though none of their words is.
SENSITIVE_KEYS: Final = frozenset({"card_no", "cardno", "card_number"})

# Whole names that look sensitive but hold ids, counts or statuses.
ALLOWED_KEYS: Final = frozenset({
    "error_code", "error_codes", "err_code", "sub_code", "status_code", "exit_code",
    "http_status_code", "response_code", "result_code", "return_code", "platform_error_code",
    "code_id", "code_ids", "key_id", "key_ids", "current_key_id",
})

# A last word that describes a secret without being it: ``code_count``, ``key_file``.
HARMLESS_LAST_WORDS: Final = frozenset({
    "count", "counts", "len", "length", "file", "path", "type", "method", "version",
    "masked", "expires", "expired", "ttl",
})

# Ids of our own rows (codes, keys) are fine; ids of sessions or tokens are credentials.
_ID_WORDS: Final = frozenset({"id", "ids"})
_ROW_WORDS: Final = frozenset({"code", "codes", "key", "keys"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")

# Parameter names whose values are credentials when they appear as ``name=value``.
_CREDENTIAL_PARAMS = (
    r"access_token|refresh_token|id_token|token|session|session_key|sessionkey|app_secret"
    r"|appsecret|client_secret|secret|sign|signature|password|passwd|pwd|api_key|apikey"
    r"|app_key_secret|authorization"
)
_QUERY_PARAM = re.compile(
    rf"(?i)(?<![A-Za-z0-9_\-])({_CREDENTIAL_PARAMS})=([^&\s\"'#;,]+)"
)
_JSON_MEMBER = re.compile(
    # The two branches never match the same character, so no backtracking blow-up.
    rf"(?i)([\"']({_CREDENTIAL_PARAMS})[\"']\s*:\s*)([\"'])(?:\\.|(?!\3)[^\\])*\3"
)
_AUTH_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(bearer|basic|digest|token)\s+)?[^\s,;\"']+"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
# Bounded repetitions keep a long line of dotted words from costing quadratic time.
_URL_USERINFO = re.compile(
    r"(?i)\b([a-z][a-z0-9+.\-]{0,31}://[^/\s:@]{0,256}):[^/\s@]{0,256}@"
)
# A buyer's pickup link (robot.http.links): whoever has the path can open the codes.
_PICKUP_PATH = re.compile(r"(/p/)[A-Za-z0-9_-]{32}(?![A-Za-z0-9_-])")


# What every pattern above needs somewhere in the text: a query parameter its "=", a URL's
# userinfo "://", a pickup link "/p/", a JSON member a quote then ":", a header its name,
# a bare token "bearer". Text with none of them is returned by scrub() as it is.
_MAY_HOLD = re.compile(r"=|://|/p/|[\"']\s*:|(?i:bearer|authorization)")


def _words(key: str) -> list[str]:
    return [w for w in _NON_WORD.split(_CAMEL.sub("_", key).lower()) if w]


@functools.lru_cache(maxsize=1024)  # the same few dozen keys on every line
def classify_key(key: str) -> str | None:
    """``"code"``, ``"credential"`` or ``None`` (not sensitive) for a key name."""
    words = _words(key)
    name = "_".join(words)
    if not words or name in ALLOWED_KEYS:
        return None
    if words[0] == "masked" or words[-1] in HARMLESS_LAST_WORDS:
        return None
    if name in SENSITIVE_KEYS:
        return "code"
    found = set(words)
    if words[-1] in _ID_WORDS and (found & (CODE_WORDS | CREDENTIAL_WORDS)) <= _ROW_WORDS:
        return None
    if found & CREDENTIAL_WORDS:
        return "credential"
    if found & CODE_WORDS:
        return "code"
    return None


def scrub(text: str) -> str:
    """Remove credential-looking substrings from free text (URLs, messages, tracebacks)."""
    if _MAY_HOLD.search(text) is None:  # most values: nothing below can match
        return text
    return _scrub_all(text)


def _scrub_all(text: str) -> str:
    text = _URL_USERINFO.sub(rf"\1:{SCRUBBED}@", text)
    text = _PICKUP_PATH.sub(rf"\1{SCRUBBED}", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{_scheme(m.group(2))}{SCRUBBED}", text)
    text = _BEARER.sub(rf"\1 {SCRUBBED}", text)
    text = _JSON_MEMBER.sub(rf"\1\3{SCRUBBED}\3", text)
    return _QUERY_PARAM.sub(rf"\1={SCRUBBED}", text)


def _scheme(scheme: str | None) -> str:
    return f"{scheme} " if scheme else ""


def _masked_value(kind: str, value: Any) -> Any:
    if kind == "credential":
        return REDACTED
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked_value(kind, v) for v in value]
    return REDACTED


def _clean(value: Any) -> Any:
    """Scrub strings and recurse into containers; turn other objects into scrubbed text."""
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return _clean_mapping(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return scrub(str(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    return scrub(repr(value))


def _clean_mapping(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key, value in mapping.items():
        kind = classify_key(key) if isinstance(key, str) else None
        out[key] = _masked_value(kind, value) if kind else _clean(value)
    return out


def redact(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask sensitive keys and scrub credentials from every value."""
    return _clean_mapping(event_dict)


def _renderer(fmt: str) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer(ensure_ascii=False)
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    raise ConfigError(f"logging: format must be 'json' or 'console', not {fmt!r}")


def _level(level: str) -> int:
    value = logging.getLevelNamesMapping().get(level.upper())
    if value is None:
        raise ConfigError(
            f"logging: level must be debug, info, warning, error or critical, not {level!r}"
        )
    return value


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time (click and pytest replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held, so swapping the stream here is safe.
        self.stream = sys.stderr
        super().emit(record)


# Processors both our events and foreign (standard library) records go through first.
_PRE_CHAIN: Final[list[Processor]] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]

# Libraries that install their own handlers (and stop propagation) when left to themselves.
_SELF_HANDLING_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
#: Libraries that say at INFO what is routine for a daemon: "Running job …" and "Job …
#: executed successfully" for every poll, one line per HTTP request made (httpx, httpcore)
#: or served (uvicorn's access log), the scheduler adding its jobs. Heard at DEBUG only, so
#: that the default log shows one line per business event.
_CHATTY_LOGGERS: Final = ("apscheduler.executors", "apscheduler.scheduler", "httpx",
                          "httpcore", "uvicorn.access")

_handler: logging.Handler | None = None


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Send every log line, ours and the libraries', redacted, to ``stream`` (stderr).

    Calling it again replaces the previous configuration (handlers others added to the root
    logger, such as pytest's, are left alone).
    """
    global _handler  # noqa: PLW0603 -- one handler per process, replaced on reconfiguration
    numeric_level = _level(level)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_PRE_CHAIN,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            _renderer(fmt),
        ],
    )
    handler: logging.Handler = (
        _StderrHandler() if stream is None else logging.StreamHandler(stream)
    )
    handler.setFormatter(formatter)

    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    _handler = handler
    for name in _SELF_HANDLING_LOGGERS:
        library = logging.getLogger(name)
        for own in list(library.handlers):
            library.removeHandler(own)
        library.propagate = True
        library.setLevel(logging.NOTSET)
    for name in _CHATTY_LOGGERS:  # after the loop above, which resets uvicorn.access
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING)
                                         if numeric_level > logging.DEBUG else logging.NOTSET)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_PRE_CHAIN,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: structlog.testing.capture_logs must see loggers created at import time.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A logger for ``name``; configures redacted JSON logging first if nobody has yet.

    The fallback exists so that nothing is ever logged unredacted. It logs warnings and up
    only (what the standard library shows by default), so CLI commands stay quiet; the
    service calls :func:`configure_logging` with the configured level and format.
    """
    if not structlog.is_configured():
        configure_logging(level="warning")
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
