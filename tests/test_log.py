"""Logging: JSON events with stable keys, and redaction of codes and credentials everywhere."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
import uvicorn.config
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from robot.errors import ConfigError
from robot.log import REDACTED, classify_key, configure_logging, get_logger, redact, scrub
from robot.vault import join_pair, mask

CODE = "SECRET-CODE-1234567"
TOKEN = "6201f0e8TOKENxyz998877"
APP_SECRET = "appsecretQQQ555"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Leave the root logger and structlog as they were, for the tests that run after these."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    was_configured, config = structlog.is_configured(), structlog.get_config()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    if was_configured:
        structlog.configure(**config)
    else:
        structlog.reset_defaults()


@pytest.fixture
def output() -> io.StringIO:
    """Configured JSON logging (debug and up) into a buffer."""
    buf = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=buf)
    return buf


def _lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def _redacted(**event: Any) -> dict[str, Any]:
    return dict(redact(None, "info", event))


# --- which keys are sensitive -------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["code", "codes", "Code", "plaintext", "card_no", "cardNo", "cdkey", "codes_delivered"],
)
def test_code_keys(key: str) -> None:
    """Keys that hold card codes are masked the way codes are displayed."""
    assert classify_key(key) == "code"


@pytest.mark.parametrize(
    "key",
    ["secret", "app_secret", "appSecret", "client_secret", "password", "passwd", "token",
     "access_token", "accessToken", "refresh_token", "session", "session_key", "session_id",
     "Authorization", "X-Api-Key", "api_key", "apiKey", "sign", "signature", "key", "cookie",
     "token_id", "pickup_url", "pickupLink"],
)
def test_credential_keys(key: str) -> None:
    """Keys that hold credentials are redacted completely (ids of sessions/tokens included)."""
    assert classify_key(key) == "credential"


@pytest.mark.parametrize(
    "key",
    ["code_id", "code_ids", "code_count", "masked_codes", "masked_code", "error_code",
     "status_code", "sub_code", "exit_code", "key_id", "key_ids", "current_key_id",
     "key_file", "token_type", "sign_method", "event", "shop", "order", "pool", "design",
     "barcode_format", "monkey", "timestamp", "exception", "pickup_count"],
)
def test_harmless_keys(key: str) -> None:
    """Ids, counts, statuses and lookalike words are left as they are."""
    assert classify_key(key) is None


# --- the redaction processor --------------------------------------------------------------


def test_redact_masks_codes_and_hides_credentials() -> None:
    """A code becomes its mask, a credential becomes ********, ids and counts stay."""
    out = _redacted(event="order_shipped", code=CODE, codes=[CODE, "ABCDEFGH99"], code_id=12,
                    code_count=2, key_id="k1", access_token=TOKEN, password="hunter2!!",
                    masked_codes=[mask(CODE)], error_code=15)
    assert out == {
        "event": "order_shipped", "code": "SE****67", "codes": ["SE****67", "AB****99"],
        "code_id": 12, "code_count": 2, "key_id": "k1", "access_token": REDACTED,
        "password": REDACTED, "masked_codes": ["SE****67"], "error_code": 15,
    }


def test_redact_non_string_values_under_sensitive_keys() -> None:
    """Numbers, dicts and bytes under a sensitive key are replaced, never shown."""
    out = _redacted(event="e", code=1234567890, secret={"a": 1}, token=b"raw-token")
    assert out == {"event": "e", "code": REDACTED, "secret": REDACTED, "token": REDACTED}


def test_redact_pairs_mask_each_half() -> None:
    """A card number/password pair logged under `code` shows each half masked."""
    assert _redacted(event="e", code=join_pair("6225880012345678", "884422"))["code"] == (
        "62****78 / ******"
    )


def test_redact_recurses_into_nested_data() -> None:
    """Sensitive keys and credential text are handled inside dicts, lists and tuples."""
    payload = {
        "response": {"access_token": TOKEN, "expires_in": 3600,
                     "items": [{"card_no": CODE, "title": "VIP"}]},
        "urls": ("https://api.x.com/r?session=" + TOKEN + "&page=2",),
    }
    out = _redacted(event="e", payload=payload)
    assert out["payload"] == {
        "response": {"access_token": REDACTED, "expires_in": 3600,
                     "items": [{"card_no": "SE****67", "title": "VIP"}]},
        "urls": ["https://api.x.com/r?session=***&page=2"],
    }


def test_redact_does_not_change_its_input() -> None:
    """The caller's dicts are not modified (they may be used after logging)."""
    inner = {"access_token": TOKEN}
    event = {"event": "e", "payload": inner}
    redact(None, "info", event)
    assert inner == {"access_token": TOKEN}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET https://gw.api.taobao.com/router/rest?method=x&session=" + TOKEN + "&sign=ABCDEF01",
         "GET https://gw.api.taobao.com/router/rest?method=x&session=***&sign=***"),
        ("POST /oauth/token access_token=" + TOKEN + "&refresh_token=R" + TOKEN,
         "POST /oauth/token access_token=***&refresh_token=***"),
        ("?app_secret=" + APP_SECRET + "&client_secret=" + APP_SECRET + "&x=1",
         "?app_secret=***&client_secret=***&x=1"),
        ("Authorization: Bearer " + TOKEN, "Authorization: Bearer ***"),
        ("headers={'authorization': 'Bearer " + TOKEN + "'}", "headers={'authorization': '***'}"),
        ("sent with bearer " + TOKEN + " ok", "sent with bearer *** ok"),
        ("postgresql://robot:pg-" + APP_SECRET + "@db.local:5432/robot",
         "postgresql://robot:***@db.local:5432/robot"),
        ('body {"access_token": "' + TOKEN + '", "expires_in": 7200}',
         'body {"access_token": "***", "expires_in": 7200}'),
        ("design=1&sign_method=md5&timestamp=2024", "design=1&sign_method=md5&timestamp=2024"),
        ("https://example.com/a?b=c", "https://example.com/a?b=c"),
        ('"GET /p/' + "Ab3_-" * 6 + 'xy HTTP/1.1" 200', '"GET /p/*** HTTP/1.1" 200'),
        ("memo: 12****90 https://robot.example.com/p/" + "Q" * 32,
         "memo: 12****90 https://robot.example.com/p/***"),
        ("/p/short-one and /pp/" + "Q" * 32, "/p/short-one and /pp/" + "Q" * 32),
    ],
)
def test_scrub(text: str, expected: str) -> None:
    """Credentials inside free text are replaced by ***; everything else is kept."""
    assert scrub(text) == expected


def test_redact_scrubs_objects_rendered_as_text() -> None:
    """Exceptions and other objects are turned into scrubbed text before rendering."""
    err = RuntimeError("401 for https://api.x.com/r?access_token=" + TOKEN)
    out = _redacted(event="e", error=err, where=object())
    assert out["error"] == "RuntimeError: 401 for https://api.x.com/r?access_token=***"
    assert isinstance(out["where"], str)


# --- what callers log (capture_logs) ------------------------------------------------------


def test_capture_logs_with_redact_processor() -> None:
    """Events captured through the redaction processor carry masked codes and stable keys."""
    log = get_logger("robot.test")
    with capture_logs(processors=[redact]) as logs:
        log.info("code_revealed", code=CODE, code_id=5, actor="cli:ops")
    assert logs == [{"event": "code_revealed", "code": "SE****67", "code_id": 5,
                     "actor": "cli:ops", "log_level": "info"}]


# --- real configured output ---------------------------------------------------------------


def test_json_lines_have_stable_keys_and_context(output: io.StringIO) -> None:
    """Each event is one JSON line with event, level, logger, UTC timestamp and bound context."""
    structlog.contextvars.bind_contextvars(shop="tb-main", order=42)
    get_logger("robot.pipeline").info("order_shipped", code_ids=[7, 8], masked_codes=["12****90"])
    [line] = _lines(output)
    assert line["event"] == "order_shipped"
    assert line["level"] == "info"
    assert line["logger"] == "robot.pipeline"
    assert line["timestamp"].endswith("Z")
    assert line["shop"] == "tb-main"
    assert line["order"] == 42
    assert line["code_ids"] == [7, 8]
    assert line["masked_codes"] == ["12****90"]


def test_planted_secrets_never_reach_the_output(output: io.StringIO) -> None:
    """Codes and credentials in keys, nested data and messages never appear in the output."""
    log = get_logger("robot.test")
    log.info("allocated", code=CODE, codes=[CODE], key_id="k1", code_id=3,
             shop_config={"app_secret": APP_SECRET, "session": TOKEN})
    log.warning("poll_failed", url=f"https://gw/router?session={TOKEN}&sign={APP_SECRET}")
    text = output.getvalue()
    for planted in (CODE, TOKEN, APP_SECRET):
        assert planted not in text
    first, second = _lines(output)
    assert first["code"] == "SE****67"
    assert first["codes"] == ["SE****67"]
    assert first["key_id"] == "k1"
    assert first["code_id"] == 3
    assert first["shop_config"] == {"app_secret": REDACTED, "session": REDACTED}
    assert second["url"] == "https://gw/router?session=***&sign=***"


def test_exception_traceback_is_scrubbed(output: io.StringIO) -> None:
    """A traceback whose message holds a tokened URL is rendered with the token scrubbed."""
    log = get_logger("robot.test")

    def call_platform() -> None:
        raise ConnectionError(f"failed: https://api.youzan.com/x?access_token={TOKEN}&page=1")

    try:
        call_platform()
    except ConnectionError:
        log.exception("poll_failed")
    assert TOKEN not in output.getvalue()
    [line] = _lines(output)
    assert line["level"] == "error"
    assert "Traceback (most recent call last)" in line["exception"]
    assert "call_platform" in line["exception"]
    assert "access_token=***&page=1" in line["exception"]


def test_stdlib_library_lines_are_redacted(output: io.StringIO) -> None:
    """httpx's own request log line (a full URL) goes through the same redaction as ours."""
    structlog.contextvars.bind_contextvars(shop="yz-1")
    url = f"https://robot:{APP_SECRET}@open.youzanyun.com/api?access_token={TOKEN}&id=9"
    logging.getLogger("httpx").info('HTTP Request: %s %s "%s %d %s"', "GET", url, "HTTP/1.1",
                                    200, "OK")
    assert TOKEN not in output.getvalue()
    assert APP_SECRET not in output.getvalue()
    [line] = _lines(output)
    assert line["logger"] == "httpx"
    assert line["level"] == "info"
    assert line["shop"] == "yz-1"
    assert line["event"] == ('HTTP Request: GET https://robot:***@open.youzanyun.com/api?'
                             'access_token=***&id=9 "HTTP/1.1 200 OK"')


def test_uvicorn_default_handlers_are_taken_over() -> None:
    """Loggers uvicorn configured for itself (own handler, no propagation) are redacted too."""
    logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)
    assert logging.getLogger("uvicorn.access").propagate is False
    buf = io.StringIO()
    configure_logging(level="debug", stream=buf)  # access lines are heard at debug only
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST",
        f"/push/taobao?sign={APP_SECRET}&timestamp=1", "1.1", 200,
    )
    assert APP_SECRET not in buf.getvalue()
    [line] = _lines(buf)
    assert line["logger"] == "uvicorn.access"
    assert "/push/taobao?sign=***&timestamp=1" in line["event"]


def test_stdlib_exception_is_redacted(output: io.StringIO) -> None:
    """A library's logged exception (exc_info) is rendered as scrubbed text."""
    try:
        raise ValueError(f"Authorization: Bearer {TOKEN}")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    assert TOKEN not in output.getvalue()
    [line] = _lines(output)
    assert "Authorization: Bearer ***" in line["exception"]


def test_level_filters_ours_and_libraries() -> None:
    """Below the configured level neither our events nor library lines are written."""
    buf = io.StringIO()
    configure_logging(level="warning", stream=buf)
    get_logger("robot.test").info("quiet_event")
    logging.getLogger("httpx").info("quiet line")
    get_logger("robot.test").warning("loud_event")
    assert [line["event"] for line in _lines(buf)] == ["loud_event"]


@pytest.mark.parametrize("name", ["httpx", "httpcore", "uvicorn.access",
                                  "apscheduler.executors.default", "apscheduler.scheduler"])
def test_per_request_lines_are_heard_at_debug_only(name: str) -> None:
    """At the default level a request made or served is no log line (one line per business
    event); at debug it is."""
    buf = io.StringIO()
    configure_logging(level="info", stream=buf)
    logging.getLogger(name).info('HTTP Request: GET https://example.com/ "HTTP/1.1 200 OK"')
    get_logger("robot.test").info("order_shipped")
    assert [line["event"] for line in _lines(buf)] == ["order_shipped"]
    debug = io.StringIO()
    configure_logging(level="debug", stream=debug)
    logging.getLogger(name).info("HTTP Request: GET https://example.com/")
    assert [line["logger"] for line in _lines(debug)] == [name]


def test_reconfiguring_replaces_our_handler_only() -> None:
    """A second configure_logging writes to the new stream alone and keeps others' handlers."""
    first, second = io.StringIO(), io.StringIO()
    foreign = logging.NullHandler()
    logging.getLogger().addHandler(foreign)
    configure_logging(stream=first)
    configure_logging(stream=second)
    get_logger("robot.test").info("once")
    assert first.getvalue() == ""
    assert [line["event"] for line in _lines(second)] == ["once"]
    assert foreign in logging.getLogger().handlers


def test_console_format_is_redacted_too() -> None:
    """The human-readable format applies the same redaction."""
    buf = io.StringIO()
    configure_logging(fmt="console", stream=buf)
    get_logger("robot.test").info("order_shipped", code=CODE, token=TOKEN)
    text = buf.getvalue()
    assert "order_shipped" in text
    assert "SE****67" in text
    assert CODE not in text
    assert TOKEN not in text


@pytest.mark.parametrize(("level", "fmt"), [("loud", "json"), ("info", "xml")])
def test_bad_settings_are_config_errors(level: str, fmt: str) -> None:
    """An unknown level or format is a ConfigError naming the bad value."""
    with pytest.raises(ConfigError, match="logging: "):
        configure_logging(level=level, fmt=fmt, stream=io.StringIO())


def test_unconfigured_get_logger_falls_back_to_redacted_warnings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Logging before configure_logging is still redacted JSON on stderr, warnings and up."""
    structlog.reset_defaults()
    log = get_logger("robot.early")
    assert structlog.is_configured()
    log.info("too_quiet_to_show")
    log.warning("early_warning", access_token=TOKEN, code=CODE)
    out, err = capsys.readouterr()
    assert out == ""
    assert TOKEN not in err
    assert CODE not in err
    [line] = [json.loads(text) for text in err.splitlines()]
    assert line["event"] == "early_warning"
    assert line["access_token"] == REDACTED
    assert line["code"] == "SE****67"


def test_scheduler_job_chatter_is_heard_at_debug_only() -> None:
    """APScheduler's per-run "Running job"/"executed successfully" lines flood an info log."""
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    logging.getLogger("apscheduler.executors.default").info("Running job %s", "poll")
    logging.getLogger("apscheduler.executors.default").warning("Run time of job was missed")
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] \
        == ["Run time of job was missed"]
    configure_logging("debug", "json", stream=stream)
    logging.getLogger("apscheduler.executors.default").info("Running job %s", "poll")
    assert "Running job poll" in stream.getvalue()


_FRAGMENTS = ("access_token", "=", "abc123", "://", "https", "user", ":", "@", "host", "/p/",
              "A" * 32, "\"", "'", "sign", "Bearer ", "bearer\t", "AUTHORIZATION", "Basic ",
              " ", "&", "?", "password", "{", "}", ",", "x" * 8, "-", "_", "é",
              '"sign"', "'token'", ": ", '"v1"', "'v2'", '"sign": "v1"', "'token' :'v2'")


@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join))
@settings(max_examples=400, deadline=None)
def test_scrub_skips_only_text_no_pattern_could_change(text: str) -> None:
    """scrub() returns text without the marks every pattern needs as it is: for any text
    it answers exactly what running every pattern would."""
    from robot.log import _scrub_all

    assert scrub(text) == _scrub_all(text)


def test_scrub_still_scrubs_what_the_fast_path_lets_through() -> None:
    """The quick look for marks lets each kind of credential through to the patterns."""
    assert TOKEN not in scrub(f"GET /x?access_token={TOKEN} 200")
    assert TOKEN not in scrub(f"Authorization: Bearer {TOKEN}")
    assert TOKEN not in scrub(f"bearer {TOKEN}")
    assert TOKEN not in scrub(f'{{"sign": "{TOKEN}"}}')
    assert "hunter2" not in scrub("postgresql://robot:hunter2@db/robot")
    assert "A" * 32 not in scrub(f"/p/{'A' * 32}")
    assert scrub("order_shipped") == "order_shipped"
