"""Pure pieces of the Pinduoduo connector: signing, error mapping, windows, normalization,
config rules, token persistence and the client-side rate limiter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pdd_helpers import make_config
from pydantic import ValidationError

from connectors.base import PlatformStatus, RefundState
from connectors.common.context import MemoryContext
from connectors.common.window import write_cursor
from connectors.pinduoduo import AccessTokenExpired, AppRejected, PddRejected
from connectors.pinduoduo.client import MAX_WINDOW, PLANNER
from connectors.pinduoduo.errors import map_http_failure, map_pdd_error
from connectors.pinduoduo.limiter import Limit, RateLimiter
from connectors.pinduoduo.normalize import latest_by_order, order_from_row, yuan_to_fen
from connectors.pinduoduo.sign import pdd_sign
from connectors.pinduoduo.tokens import SECRET_NAME, TokenSet, TokenStore
from robot.errors import (
    AuthError,
    BadPlatformData,
    ConfigError,
    Fatal,
    PermissionDenied,
    Throttled,
    Unavailable,
)

plan_window = PLANNER.plan_window
read_cursor = PLANNER.read_cursor


def test_signature_matches_appendix_a_vector() -> None:
    """The MD5 signature of PLATFORMS.md Appendix A's parameters is the published vector."""
    params = {
        "type": "pdd.order.information.get",
        "client_id": "cid123",
        "access_token": "tok456",
        "timestamp": "1704164645",
        "data_type": "JSON",
        "order_sn": "240102-123456789012345",
    }
    assert pdd_sign(params, "testsecret") == "1C5601A1054E5A8225D42293D7DE72E9"
    assert pdd_sign({**params, "sign": "IGNORED"}, "testsecret") == pdd_sign(params, "testsecret")
    assert pdd_sign(params, "othersecret") != pdd_sign(params, "testsecret")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (10019, AccessTokenExpired),
        (20004, AppRejected),
        (10016, AppRejected),
        (20032, AuthError),
        (20031, PermissionDenied),
        (20005, PermissionDenied),
        (52101, Throttled),
        (70031, Throttled),
        (52102, Unavailable),
        (52103, Unavailable),
        (50000, Unavailable),
        (10001, Fatal),
        (10017, Fatal),
        (10000, PddRejected),
        (50001, PddRejected),
        (99999, PddRejected),
    ],
)
def test_error_codes_map_to_what_the_caller_should_do(code: int, expected: type) -> None:
    """Each documented POP code becomes the robot error the core acts on."""
    error = map_pdd_error("pdd.x", code, "msg", str(code), "sub")
    assert type(error) is expected
    assert str(code) in error.message


def test_signature_failure_is_fatal_and_says_why() -> None:
    """20004 pauses the shop (Fatal) and points at the client secret."""
    error = map_pdd_error("pdd.x", 20004, "签名验证失败", "20004", "签名验证失败")
    assert isinstance(error, Fatal)
    assert "client_secret" in error.message


def test_http_failures_map_to_retriable_or_bad_data() -> None:
    """5xx and unreadable 2xx answers are Unavailable, 429 Throttled, another status
    BadPlatformData."""
    assert isinstance(map_http_failure("a", 502, "server error"), Unavailable)
    assert isinstance(map_http_failure("a", 200, "not JSON"), Unavailable)
    assert isinstance(map_http_failure("a", 200, "unexpected JSON shape"), Unavailable)
    assert isinstance(map_http_failure("a", 429, "x"), Throttled)
    assert isinstance(map_http_failure("a", 403, "unexpected status"), BadPlatformData)


NOW = datetime(2024, 1, 2, 12, 0, 0, tzinfo=UTC)
PLAN = {"window": timedelta(minutes=30), "lag": timedelta(minutes=3),
        "overlap": timedelta(minutes=5), "initial_lookback": timedelta(hours=1)}


def test_first_window_starts_at_lookback_and_is_capped() -> None:
    """The first window starts one lookback ago, spans at most 30 minutes, asks for more."""
    window = plan_window(None, NOW, **PLAN)
    assert window.start == NOW - timedelta(hours=1)
    assert window.end - window.start == MAX_WINDOW
    assert window.more is True


def test_window_overlaps_previous_and_stops_at_horizon() -> None:
    """A later window starts overlap before the last end and never passes now - lag."""
    last = NOW - timedelta(minutes=10)
    window = plan_window(last, NOW, **PLAN)
    assert window.start == last - timedelta(minutes=5)
    assert window.end == NOW - timedelta(minutes=3)
    assert window.more is False
    caught_up = plan_window(NOW - timedelta(minutes=2), NOW, **PLAN)
    assert caught_up.empty


def test_window_is_never_longer_than_thirty_minutes() -> None:
    """Even a misconfigured longer window is cut to POP's 30 minutes."""
    window = plan_window(NOW - timedelta(days=1), NOW, **{**PLAN, "window": timedelta(hours=2)})
    assert window.end - window.start == timedelta(minutes=30)


def test_cursor_round_trips_and_rejects_garbage() -> None:
    """A cursor is {'end': iso}; anything else is a ConfigError, not a silent restart."""
    assert read_cursor(write_cursor(NOW)) == NOW
    assert read_cursor(None) is None
    with pytest.raises(ConfigError):
        read_cursor({"end": "yesterday"})
    with pytest.raises(ConfigError):
        read_cursor({"end": "2024-01-02T03:04:05"})


ROW = {
    "order_sn": "240102-123456789012345",
    "order_status": 1, "confirm_status": 1, "refund_status": 1, "after_sales_status": 0,
    "pay_amount": 19.8, "pay_time": "2024-01-02 11:04:05", "updated_at": "2024-01-02 11:05:00",
    "card_info_list": [{"card_no": "enc", "mask_password": "enc"}],
    "item_list": [
        {"goods_id": 5001, "sku_id": 50011, "goods_name": "Card", "goods_price": 9.9,
         "goods_count": 2, "outer_id": "SKU-A", "outer_goods_id": "G-A"},
    ],
}


def test_order_row_is_normalized() -> None:
    """An awaiting-shipment order becomes PAID with fen amounts, UTC times and SKU ids."""
    order = order_from_row(ROW)
    assert order.platform_order_id == "240102-123456789012345"
    assert order.status is PlatformStatus.PAID
    assert order.total_cents == 1980
    assert order.paid_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    (line,) = order.lines
    assert (line.line_id, line.sku_id, line.item_id, line.outer_id) == (
        "50011", "50011", "5001", "SKU-A")
    assert (line.quantity, line.unit_price_cents, line.refund) == (2, 990, RefundState.NONE)
    assert "card" not in repr(order.extra)


@pytest.mark.parametrize(
    ("changes", "status", "refund"),
    [
        ({"order_status": 2}, PlatformStatus.SHIPPED, RefundState.NONE),
        ({"order_status": 3}, PlatformStatus.COMPLETED, RefundState.NONE),
        ({"confirm_status": 2}, PlatformStatus.CLOSED, RefundState.NONE),
        ({"confirm_status": 0}, PlatformStatus.UNPAID, RefundState.NONE),
        ({"refund_status": 2}, PlatformStatus.PAID, RefundState.REQUESTED),
        ({"refund_status": 3}, PlatformStatus.PAID, RefundState.REQUESTED),
        ({"refund_status": 4}, PlatformStatus.CLOSED, RefundState.REFUNDED),
    ],
)
def test_order_states_map(changes: dict[str, int], status: PlatformStatus,
                          refund: RefundState) -> None:
    """POP's order/confirm/refund status triple maps onto one normalized status and refund."""
    order = order_from_row({**ROW, **changes})
    assert order.status is status
    assert {line.refund for line in order.lines} == {refund}


def test_bad_rows_are_bad_platform_data() -> None:
    """Missing order_sn, malformed items or times raise BadPlatformData."""
    for row in ({**ROW, "order_sn": ""}, {**ROW, "item_list": "x"},
                {**ROW, "pay_time": "soon"}, {**ROW, "pay_amount": "lots"}):
        with pytest.raises(BadPlatformData):
            order_from_row(row)


def test_duplicate_rows_keep_the_latest() -> None:
    """Backward paging repeats rows; the most recently updated copy wins."""
    newer = {**ROW, "updated_at": "2024-01-02 11:06:00", "refund_status": 2}
    (kept,) = latest_by_order([ROW, newer, ROW])
    assert kept["refund_status"] == 2


def test_yuan_to_fen_is_exact() -> None:
    """Float yuan like 0.29 or 19.9 become exact fen."""
    assert [yuan_to_fen(v) for v in (0.29, 19.9, "10.00", None, 1)] == [29, 1990, 1000, 0, 100]


def test_config_rules() -> None:
    """Tracking-number placeholders, token presence and window limits are validated."""
    assert make_config().tracking_number_for("240102-1") == "240102-1"
    config = make_config(tracking_number="VC{order_digits}")
    assert config.tracking_number_for("240102-123") == "VC240102123"
    with pytest.raises(ValidationError, match="placeholder"):
        make_config(tracking_number="{code}")
    with pytest.raises(ValidationError, match="authorization code"):
        make_config(access_token=None, refresh_token=None)
    with pytest.raises(ValidationError):
        make_config(window_minutes=31)
    assert "testsecret" not in repr(make_config())


def test_token_store_prefers_stored_tokens_until_the_shop_file_changes() -> None:
    """Refreshed tokens survive a restart; new seed tokens in the shop file win again."""
    context = MemoryContext("s")
    store = TokenStore(make_config(), context)
    first = store.load()
    assert first is not None and first.access_token == "test-access-token"
    refreshed = TokenSet("new-access", "new-refresh", NOW, None, "1", "")
    store.save(refreshed)
    again = TokenStore(make_config(), context).load()
    assert again is not None and again.access_token == "new-access"
    assert "new-access" not in repr(again)
    reauthorized = TokenStore(make_config(access_token="pasted", refresh_token="r2"), context)
    loaded = reauthorized.load()
    assert loaded is not None and loaded.access_token == "pasted"
    assert "pasted" in (context.load_secret(SECRET_NAME) or "")


def test_limiter_waits_when_a_window_is_full() -> None:
    """The 4th call under a 3-per-10-s limit waits until the oldest call leaves the window."""
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter({"api": (Limit(3, 10, "merchant"),)}, clock=lambda: now[0],
                          sleep=sleep)

    async def scenario() -> None:
        for _ in range(3):
            await limiter.acquire("api", client_id="c", merchant="m")
            now[0] += 1
        await limiter.acquire("api", client_id="c", merchant="m")
        await limiter.acquire("api", client_id="c", merchant="other")  # its own window
        await limiter.acquire("unlimited", client_id="c", merchant="m")

    asyncio.run(scenario())
    assert slept == [7.0]


def test_limiter_app_scope_is_shared_across_merchants() -> None:
    """An app-level limit counts every shop of the same client_id together."""
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter({"api": (Limit(2, 1, "app"),)}, clock=lambda: now[0], sleep=sleep)

    async def scenario() -> None:
        for merchant in ("a", "b", "c"):
            await limiter.acquire("api", client_id="c", merchant=merchant)

    asyncio.run(scenario())
    assert slept == [1.0]
