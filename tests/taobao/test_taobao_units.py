"""Pure pieces of the Taobao connector: signing, times, windows, error mapping, normalizing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel, ValidationError

from connectors.base import (
    Connector,
    ConnectorFactory,
    PlatformStatus,
    PushKind,
    RefundState,
)
from connectors.common.times import format_cst, parse_cst
from connectors.common.window import write_cursor
from connectors.taobao import (
    ClockSkew,
    SessionExpired,
    TaobaoConfig,
    TaobaoConnector,
    TaobaoConnectorFactory,
    TopRejected,
)
from connectors.taobao.api import encode_params, response_key
from connectors.taobao.client import PLANNER, truncate_utf8
from connectors.taobao.errors import map_http_failure, map_top_error
from connectors.taobao.normalize import topic_kind, trade_to_order, yuan_to_cents
from connectors.taobao.sign import top_sign
from robot.errors import (
    AuthError,
    BadPlatformData,
    ConfigError,
    Fatal,
    PermissionDenied,
    Throttled,
    Unavailable,
)

VECTOR_PARAMS = {
    "method": "taobao.logistics.dummy.send",
    "app_key": "12345678",
    "session": "test-session",
    "timestamp": "2024-01-02 03:04:05",
    "format": "json",
    "v": "2.0",
    "tid": "1234567890123",
}

plan_window = PLANNER.plan_window
read_cursor = PLANNER.read_cursor


@pytest.mark.parametrize(
    ("sign_method", "expected"),
    [
        ("md5", "14CBCC8715582B27FF990AE16AE782CA"),
        ("hmac", "CF594A99CBEA6FC671848ABC1D559D20"),
        ("hmac-sha256", "787A032E918A889686ADB0B5CB5477F73E15E298ACFBBFB8C703E0E87BC82FEF"),
    ],
)
def test_sign_matches_appendix_a_vectors(sign_method: str, expected: str) -> None:
    """top_sign reproduces the Appendix A vectors for md5, hmac and hmac-sha256."""
    params = {**VECTOR_PARAMS, "sign_method": sign_method}
    assert top_sign(params, "testsecret", sign_method) == expected


def test_sign_ignores_sign_and_empty_values() -> None:
    """The existing ``sign`` and empty-valued parameters do not change the signature."""
    params = {**VECTOR_PARAMS, "sign_method": "md5"}
    noisy = {**params, "sign": "WHATEVER", "buyer_nick": ""}
    assert top_sign(noisy, "testsecret", "md5") == "14CBCC8715582B27FF990AE16AE782CA"


def test_sign_rejects_unknown_method() -> None:
    """An unknown sign_method is a programming error, not a silent md5."""
    with pytest.raises(ValueError, match="sign_method"):
        top_sign(VECTOR_PARAMS, "s", "sha1")


def test_top_time_is_gmt8_and_round_trips() -> None:
    """TOP times are GMT+8 wall clock; parsing gives aware UTC; naive input is refused."""
    moment = datetime(2024, 1, 1, 19, 4, 5, 999, tzinfo=UTC)
    assert format_cst(moment) == "2024-01-02 03:04:05"
    assert parse_cst("2024-01-02 03:04:05") == moment.replace(microsecond=0)
    with pytest.raises(ValueError):
        format_cst(datetime(2024, 1, 1))


def test_encode_params_drops_empty_and_formats_types() -> None:
    """None/empty values are never sent; booleans, lists and times use TOP's spelling."""
    encoded = encode_params(
        {
            "a": None,
            "b": "",
            "flag": True,
            "ids": [1, 2],
            "t": datetime(2024, 1, 1, 19, 4, 5, tzinfo=UTC),
            "n": 4_000_000_000_000_000_001,
        }
    )
    assert encoded == {
        "flag": "true",
        "ids": "1,2",
        "t": "2024-01-02 03:04:05",
        "n": "4000000000000000001",
    }
    assert response_key("taobao.trades.sold.increment.get") == "trades_sold_increment_get_response"


NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
PLAN = {
    "window": timedelta(minutes=30),
    "lag": timedelta(seconds=60),
    "overlap": timedelta(seconds=300),
    "initial_lookback": timedelta(hours=1),
}


def test_first_window_starts_at_lookback_and_is_capped() -> None:
    """The first run starts one lookback back and spans at most one window."""
    window = plan_window(None, NOW, **PLAN)
    assert window.start == NOW - timedelta(hours=1)
    assert window.end == window.start + timedelta(minutes=30)
    assert window.more is True  # still 29 minutes short of now - lag
    steps = [window]
    while steps[-1].more:
        steps.append(plan_window(steps[-1].end, NOW, **PLAN))
    assert len(steps) == 3  # windows advance by window - overlap (25 min)
    assert steps[-1].end == NOW - timedelta(seconds=60)


def test_window_overlaps_previous_and_never_passes_horizon() -> None:
    """The next window starts overlap before the last end and ends at most at now - lag."""
    last = NOW - timedelta(minutes=10)
    window = plan_window(last, NOW, **PLAN)
    assert window.start == last - timedelta(seconds=300)
    assert window.end == NOW - timedelta(seconds=60)


def test_window_after_outage_asks_for_more_until_close() -> None:
    """Three hours behind: full windows with more=True; windows never exceed one day."""
    last = NOW - timedelta(hours=3)
    window = plan_window(last, NOW, **PLAN)
    assert window.end - window.start == timedelta(minutes=30)
    assert window.more is True
    huge = plan_window(last, NOW, **{**PLAN, "window": timedelta(days=3)})
    assert huge.end - huge.start <= timedelta(days=1)


def test_caught_up_window_is_empty() -> None:
    """A cursor already at the horizon yields an empty window (nothing to ask TOP)."""
    window = plan_window(NOW - timedelta(seconds=30), NOW, **PLAN)
    assert window.empty
    assert not window.more


def test_cursor_round_trip_and_malformed() -> None:
    """The cursor is {"end": iso}; a malformed one is a config error, not a silent reset."""
    assert read_cursor(write_cursor(NOW)) == NOW
    assert read_cursor(None) is None
    with pytest.raises(ConfigError):
        read_cursor({"end": "yesterday"})
    with pytest.raises(ConfigError):
        read_cursor({"end": "2024-01-01T00:00:00"})


@pytest.mark.parametrize(
    ("code", "sub_code", "sub_msg", "expected"),
    [
        (7, "accesscontrol.limited-by-api-access-count", "This ban will last for 12 more seconds",
         Throttled),
        (8, "", "", Throttled),
        (10, "isp.service-unavailable", "", Unavailable),
        (15, "isp.remote-service-error", "", Unavailable),
        (15, "", "", Unavailable),
        (11, "isv.permission-api-package-limit", "", PermissionDenied),
        (25, "", "", AuthError),
        (28, "", "", AuthError),
        (29, "", "", AuthError),
        (26, "", "", SessionExpired),
        (27, "invalid-sessionkey", "", SessionExpired),
        (31, "", "", ClockSkew),
        (40, "isv.missing-parameter:tid", "", TopRejected),
        (41, "isv.invalid-parameter:end_modified", "", TopRejected),
        (15, "isv.logistics-dummy-service-error:B04", "", TopRejected),
        (22, "", "", Fatal),
    ],
)  # fmt: skip
def test_error_codes_map_to_actions(code: int, sub_code: str, sub_msg: str, expected: type) -> None:
    """Each TOP code becomes the robot error whose group says what to do."""
    error = map_top_error("taobao.x", code, "msg", sub_code, sub_msg)
    assert type(error) is expected


def test_throttle_retry_after_parsed_or_defaulted() -> None:
    """retry_after is N from "This ban will last for N more seconds", else 1 second."""
    error = map_top_error(
        "m", 7, "App Call Limited", "accesscontrol.x", "This ban will last for 12 more seconds"
    )
    assert isinstance(error, Throttled)
    assert error.retry_after == 12
    default = map_top_error("m", 7, "App Call Limited")
    assert isinstance(default, Throttled)
    assert default.retry_after == 1


def test_session_expired_is_an_auth_error_and_skew_is_fatal() -> None:
    """The core can treat SessionExpired as AuthError and ClockSkew as Fatal."""
    assert issubclass(SessionExpired, AuthError)
    assert issubclass(ClockSkew, Fatal)
    assert "re-authorize" in map_top_error("m", 27, "Invalid session").message
    assert "secret" in map_top_error("m", 25, "Invalid signature").message


def test_http_failures_map_by_status() -> None:
    """5xx and an unreadable 200 are Unavailable; another status is BadPlatformData; 429 is
    Throttled."""
    assert isinstance(map_http_failure("m", 502, "x"), Unavailable)
    assert isinstance(map_http_failure("m", 200, "x"), Unavailable)
    assert isinstance(map_http_failure("m", 404, "x"), BadPlatformData)
    assert isinstance(map_http_failure("m", 429, "x"), Throttled)


def _trade(**overrides: object) -> dict[str, object]:
    trade: dict[str, object] = {
        "tid": 4000000000000000001,
        "status": "WAIT_SELLER_SEND_GOODS",
        "payment": "19.80",
        "pay_time": "2024-01-02 03:04:05",
        "modified": "2024-01-02 03:05:00",
        "buyer_open_uid": "AAH_buyer",
        "orders": {
            "order": [
                {"oid": 4100000000000000001, "num_iid": 600001, "num": 2, "price": "9.90",
                 "title": "Card", "outer_iid": "ITEM", "outer_sku_id": "SKU-1", "sku_id": "77",
                 "status": "WAIT_SELLER_SEND_GOODS", "refund_status": "NO_REFUND"},
            ]
        },
    }  # fmt: skip
    trade.update(overrides)
    return trade


def test_trade_normalizes_ids_money_times_and_lines() -> None:
    """tid/oid keep every digit; yuan become fen; GMT+8 times become aware UTC."""
    order = trade_to_order(_trade())
    assert order.platform_order_id == "4000000000000000001"
    assert order.status is PlatformStatus.PAID
    assert order.total_cents == 1980
    assert order.paid_at == datetime(2024, 1, 1, 19, 4, 5, tzinfo=UTC)
    assert order.buyer_id == "AAH_buyer"
    (line,) = order.lines
    assert line.line_id == "4100000000000000001"
    assert (line.item_id, line.sku_id, line.outer_id) == ("600001", "77", "SKU-1")
    assert (line.quantity, line.unit_price_cents, line.refund) == (2, 990, RefundState.NONE)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("WAIT_SELLER_SEND_GOODS", PlatformStatus.PAID),
        ("WAIT_BUYER_CONFIRM_GOODS", PlatformStatus.SHIPPED),
        ("SELLER_CONSIGNED_PART", PlatformStatus.SHIPPED),
        ("TRADE_BUYER_SIGNED", PlatformStatus.SHIPPED),
        ("TRADE_FINISHED", PlatformStatus.COMPLETED),
        ("TRADE_CLOSED", PlatformStatus.CLOSED),
        ("TRADE_CLOSED_BY_TAOBAO", PlatformStatus.CLOSED),
        ("WAIT_BUYER_PAY", PlatformStatus.UNPAID),
        ("TRADE_NO_CREATE_PAY", PlatformStatus.UNPAID),
        ("PAY_PENDING", PlatformStatus.UNPAID),
        ("PAID_FORBID_CONSIGN", PlatformStatus.UNPAID),
        ("SOMETHING_NEW", PlatformStatus.UNPAID),
    ],
)
def test_trade_status_map(status: str, expected: PlatformStatus) -> None:
    """TOP statuses map onto the normalized ones; only WAIT_SELLER_SEND_GOODS is PAID."""
    assert trade_to_order(_trade(status=status)).status is expected


@pytest.mark.parametrize(
    ("refund_status", "line_status", "expected"),
    [
        ("WAIT_SELLER_AGREE", "WAIT_SELLER_SEND_GOODS", RefundState.REQUESTED),
        ("WAIT_BUYER_RETURN_GOODS", "WAIT_SELLER_SEND_GOODS", RefundState.REQUESTED),
        ("WAIT_SELLER_CONFIRM_GOODS", "WAIT_SELLER_SEND_GOODS", RefundState.REQUESTED),
        ("SUCCESS", "TRADE_CLOSED", RefundState.REFUNDED),
        ("SELLER_REFUSE_BUYER", "WAIT_SELLER_SEND_GOODS", RefundState.REFUSED),
        ("CLOSED", "WAIT_SELLER_SEND_GOODS", RefundState.REFUSED),
        ("NO_REFUND", "WAIT_SELLER_SEND_GOODS", RefundState.NONE),
        ("NO_REFUND", "TRADE_CLOSED_BY_TAOBAO", RefundState.REFUNDED),
    ],
)
def test_line_refund_map(refund_status: str, line_status: str, expected: RefundState) -> None:
    """refund_status maps per line; a sub-order closed by Taobao counts as refunded."""
    trade = _trade()
    line = trade["orders"]["order"][0]  # type: ignore[index]
    line.update(refund_status=refund_status, status=line_status)
    assert trade_to_order(trade).lines[0].refund is expected


def test_money_must_be_whole_fen() -> None:
    """Sub-fen or non-numeric amounts are bad data, never rounded."""
    assert yuan_to_cents("0.01") == 1
    with pytest.raises(BadPlatformData):
        yuan_to_cents("1.005")
    with pytest.raises(BadPlatformData):
        trade_to_order(_trade(payment="abc"))
    with pytest.raises(BadPlatformData):
        trade_to_order(_trade(tid=None))


def test_topics_map_to_push_kinds() -> None:
    """TMC topics: buyer paid → PAID, close → CLOSED, refund_* → REFUND, others OTHER."""
    assert topic_kind("taobao_trade_TradeBuyerPay") is PushKind.PAID
    assert topic_kind("taobao_trade_TradeClose") is PushKind.CLOSED
    assert topic_kind("taobao_refund_RefundCreated") is PushKind.REFUND
    assert topic_kind("taobao_trade_TradeSellerShip") is PushKind.OTHER


def test_truncate_utf8_never_splits_a_character() -> None:
    """Cutting to N bytes drops a partial multi-byte character instead of corrupting it."""
    assert truncate_utf8("码" * 400, 1000) == "码" * 333
    assert truncate_utf8("abc", 1000) == "abc"


def test_config_limits() -> None:
    """Windows above 30 min, overlaps not shorter than a window and unknown keys are refused."""
    base = {"app_key": "k", "app_secret": "s", "session": "t"}
    assert TaobaoConfig(**base).sign_method == "hmac-sha256"
    for bad in ({"window_minutes": 31}, {"overlap_seconds": 1800}, {"page_size": 101}, {"x": 1}):
        with pytest.raises(ValidationError):
            TaobaoConfig(**base, **bad)
    assert "testsecret" not in repr(TaobaoConfig(**{**base, "app_secret": "testsecret"}))


def test_factory_builds_a_protocol_connector() -> None:
    """The factory satisfies ConnectorFactory and builds a Connector for its config only."""

    class Context:
        shop = "s1"

        def load_secret(self, name: str) -> str | None:
            return None

        def store_secret(self, name: str, value: str) -> None:
            raise AssertionError("not used")

    factory = TaobaoConnectorFactory()
    assert isinstance(factory, ConnectorFactory)
    assert factory.platform == "taobao"
    connector = factory.create(TaobaoConfig(app_key="k", app_secret="s", session="t"), Context())
    assert isinstance(connector, Connector)
    assert isinstance(connector, TaobaoConnector)
    assert connector.receives_push is False
    asyncio.run(connector.aclose())

    class OtherConfig(BaseModel):
        pass

    with pytest.raises(ConfigError):
        factory.create(OtherConfig(), Context())
