"""The Youzan Cloud connector: polls and receives pushes for paid trades, ships, writes memos.

Intake has two paths that may run together (the core de-duplicates on the trade id):

* polling ``youzan.trades.sold.get`` by update time over overlapping windows (see
  :mod:`connectors.common.window`), every page, de-duplicated by ``tid``, each interesting
  trade then read in full with ``youzan.trade.get``;
* push messages verified by :func:`connectors.youzan.push.parse_push`.

Shipping is ``youzan.logistics.online.confirm`` with ``is_no_express=1``; trades Youzan
delivered itself on payment (virtual items, see :mod:`connectors.youzan.normalize`) are
answered ALREADY_SHIPPED without a call. The seller memo is ``youzan.trade.memo.update``.

This module must never ship a trade whose stored snapshot is closed, unpaid or refunding,
never treat a refusal as success without re-reading the trade, and never log a credential.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

import httpx

from connectors.base import (
    CheckReport,
    ClockReading,
    Order,
    PlatformStatus,
    PollResult,
    PushBatch,
    Shipment,
    ShipOutcome,
    ShopContext,
    unreadable,
)
from connectors.common.check import staged_report
from connectors.common.clock import Clock, PlatformClock, probe_get, utc_now
from connectors.common.http import LoopClient
from connectors.common.times import format_cst
from connectors.common.unreadable import fetch_each
from connectors.common.values import as_dict, as_int
from connectors.common.window import Window, WindowPlanner
from connectors.errors import (
    AuthError,
    BadPlatformData,
    NotShippable,
    PermissionDenied,
    Retriable,
    RobotError,
    Skippable,
)
from connectors.log import get_logger
from connectors.youzan import errors as codes
from connectors.youzan.api import YouzanApi
from connectors.youzan.config import YouzanConfig
from connectors.youzan.errors import YouzanRejected
from connectors.youzan.normalize import AUTO_DELIVERED, known_status, row_status, trade_to_order
from connectors.youzan.push import parse_push
from connectors.youzan.token import TokenManager

log = get_logger(__name__)

TRADES_SOLD_GET = "youzan.trades.sold.get"
TRADE_GET = "youzan.trade.get"
SHIP_API, SHIP_VERSION = "youzan.logistics.online.confirm", "3.0.0"
MEMO_API, MEMO_VERSION = "youzan.trade.memo.update", "3.0.0"
REFUND_SEARCH, REFUND_SEARCH_VERSION = "youzan.trade.refund.search", "3.0.1"
MAX_PAGES = 100  # page_no ≤ 100 on both list APIs
REFUND_MAX_ROWS = 3000  # refund.search: page_no × page_size ≤ 3000
#: ⚠ Youzan documents no memo length; keep it short enough for any seller-memo field.
MEMO_MAX_CHARS = 256
_WORTH_READING = frozenset({"TRADE_PAID", "WAIT_SELLER_SEND_GOODS", "WAIT_BUYER_CONFIRM_GOODS",
                            "TRADE_SUCCESS"})
_NOT_FOUND = frozenset({codes.TRADE_NOT_FOUND, codes.ORDER_NOT_FOUND})

#: Youzan adds no cap beyond the configured window (connectors.common.window plans them).
PLANNER = WindowPlanner("youzan")


class YouzanConnector:
    """One Youzan shop."""

    platform: ClassVar[str] = "youzan"
    receives_push: ClassVar[bool] = True
    push_window: ClassVar[float] = 5.0  # Youzan: answer a push within 5 s (its push documentation)

    def __init__(self, config: YouzanConfig, context: ShopContext, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Clock | None = None) -> None:
        self.config = config
        self.shop = context.shop
        self._clock = clock or utc_now
        #: Youzan's clock as measured from its answers; windows follow it.
        self.platform_clock = PlatformClock(
            self._clock, probe=lambda: probe_get(self._http.get(), self.config.base_url))
        self._http = LoopClient(platform="Youzan", timeout=config.timeout_seconds,
                                transport=transport,
                                headers={"Content-Type": "application/json;charset=utf-8"},
                                clock=self.platform_clock)
        self._api = YouzanApi(config, TokenManager(config, context, self._http, self._clock),
                              self._http)

    @property
    def api(self) -> YouzanApi:
        return self._api

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- intake: polling ----------------------------------------------------------------

    def clock_reading(self) -> ClockReading | None:
        """Youzan's clock offset from ours, as measured from its answers."""
        return self.platform_clock.reading()

    async def poll(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        """One window (in Youzan's time) of trades updated on Youzan; the paid ones read
        in full."""

        async def fetch(window: Window) -> tuple[Order, ...]:
            rows = await self._sold_rows(window.start, window.end)
            # An unknown (or missing) status is read in full too: the detail either explains
            # it or comes back as an UnreadableOrder for the core to park, never skipped.
            orders = await self._read_trades(_worth_reading(rows))
            # UnreadableOrders are PAID-typed, so they pass this filter on to the core.
            paid = tuple(o for o in orders if o.status is PlatformStatus.PAID)
            return paid + _without_tid(rows)

        return await PLANNER.step(self.config, cursor, now, self.platform_clock, fetch)

    async def poll_refunds(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        """One window of trades closed or with refunds changed, read in full."""

        async def fetch(window: Window) -> tuple[Order, ...]:
            rows = await self._sold_rows(window.start, window.end)
            tids = [tid for tid, status, refund in rows
                    if tid and (status == "TRADE_CLOSED" or refund)]
            tids += await self._refund_tids(window.start, window.end)
            return await self._read_trades(_unique(tids)) + _without_tid(rows)

        return await PLANNER.step(self.config, cursor, now, self.platform_clock, fetch)

    async def recent_order_ids(self, now: datetime, period: timedelta) -> list[str]:
        """Tids of trades updated within ``period`` (Youzan's time) that polling would read
        (one ``trades.sold.get`` window, split only past 100 pages)."""
        await self.platform_clock.ensure_measured()
        tids: list[str] = []
        for window in PLANNER.trailing(self.config, now, period, self.platform_clock):
            tids += _worth_reading(await self._sold_rows(window.start, window.end))
        return _unique(tids)

    async def _sold_rows(self, start: datetime, end: datetime) -> list[tuple[str, str, int]]:
        """(tid, status, refund_state) of every trade updated in ``[start, end]``, once each.

        Rows are sorted by update time, newest first (⚠ assumed from the docs' "sorting follows
        the time field"); a trade updated while we page moves to the front and shifts the rest
        back, so pages are read from the last to the first: a shift then repeats a row instead
        of skipping one. More than 100 pages: the window is split in halves.
        """
        size = self.config.page_size
        base = {"start_update": format_cst(start), "end_update": format_cst(end)}
        first = await self._sold_page(base, 1, size)
        total = as_int(as_dict(first).get("total_results"))
        pages = math.ceil(total / size)
        if pages > MAX_PAGES and end - start > timedelta(seconds=1):
            middle = start + (end - start) / 2
            middle = middle.replace(microsecond=0)
            log.info("youzan_window_split", shop=self.shop, total=total)
            return _unique_rows([*await self._sold_rows(start, middle),
                                 *await self._sold_rows(middle, end)])
        if pages > MAX_PAGES:
            # Over 100 pages of trades updated within one second: Youzan cannot page further.
            log.error("youzan_window_overflow", shop=self.shop, total=total,
                      start=start.isoformat())
        rows = _sold_list(first)
        for page_no in range(min(pages, MAX_PAGES), 1, -1):
            rows.extend(_sold_list(await self._sold_page(base, page_no, size)))
        return _unique_rows(row_status(row) for row in rows)

    async def _sold_page(self, base: Mapping[str, str], page_no: int, size: int) -> Any:
        return await self._api.call(TRADES_SOLD_GET, self.config.trades_sold_get_version,
                                    {**base, "page_no": page_no, "page_size": size})

    async def _refund_tids(self, start: datetime, end: datetime) -> list[str]:
        """Trades whose refunds changed in the window (``refund.search`` takes Unix seconds)."""
        size = self.config.page_size
        params = {"update_time_start": int(start.timestamp()),
                  "update_time_end": int(end.timestamp())}
        tids: list[str] = []
        page_no, seen = 1, 0
        while page_no <= MAX_PAGES and page_no * size <= REFUND_MAX_ROWS:
            data = as_dict(await self._api.call(REFUND_SEARCH, REFUND_SEARCH_VERSION,
                                              {**params, "page_no": page_no, "page_size": size}))
            refunds = data.get("refunds") or []
            if not isinstance(refunds, list):
                raise BadPlatformData("youzan refund.search: refunds is not a list")
            tids += [str(r["tid"]) for r in refunds if isinstance(r, dict) and r.get("tid")]
            seen += len(refunds)
            if not refunds or seen >= as_int(data.get("total")):
                break
            page_no += 1
        return tids

    async def _read_trades(self, tids: Sequence[str]) -> tuple[Order, ...]:
        # One unreadable trade must not hold the shop's cursor back forever: bad data comes
        # back as an UnreadableOrder (the core parks it); a trade Youzan no longer shows is
        # logged (an operator can fetch it by id) and the window moves on.
        def skipped(tid: str, exc: Skippable) -> None:
            log.error("youzan_trade_unreadable", shop=self.shop, tid=tid, error=exc.message)

        return await fetch_each(tids, self.fetch_order, on_skip=skipped)

    async def fetch_order(self, platform_order_id: str) -> Order:
        """The trade's current snapshot from ``youzan.trade.get``."""
        try:
            data = await self._api.call(TRADE_GET, self.config.trade_get_version,
                                        {"tid": platform_order_id})
        except YouzanRejected as exc:
            if exc.code in _NOT_FOUND:
                raise NotShippable(f"youzan trade {platform_order_id} not found "
                                   f"({exc.code})") from exc
            raise
        return trade_to_order(as_dict(data))

    # -- intake: push -------------------------------------------------------------------

    def parse_push(self, headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
        return parse_push(headers, body, client_id=self.config.client_id,
                          client_secret=self.config.client_secret.get_secret_value(),
                          kdt_id=self.config.grant_id)

    # -- write-back ---------------------------------------------------------------------

    async def ship(self, shipment: Shipment) -> ShipOutcome:
        """Confirm the trade shipped without logistics; "already shipped" is re-read."""
        order = shipment.order
        _refuse_unshippable(order)
        if order.extra.get(AUTO_DELIVERED) == "1":
            # Youzan delivered this virtual trade itself on payment; the codes go to the buyer
            # through the robot's own hand-over. Nothing to confirm on Youzan.
            return ShipOutcome.ALREADY_SHIPPED
        if order.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED):
            return ShipOutcome.ALREADY_SHIPPED
        tid = order.platform_order_id
        try:
            data = await self._api.call(SHIP_API, SHIP_VERSION, {"tid": tid, "is_no_express": 1})
        except YouzanRejected as exc:
            if exc.code in _NOT_FOUND:
                raise NotShippable(f"youzan trade {tid} not found ({exc.code})") from exc
            if exc.code in (codes.ALREADY_SHIPPED, codes.NOTHING_SHIPPABLE):
                return await self._resolve_refusal(tid, exc.code)
            if exc.code == codes.DISTRIBUTION_ORDER:
                raise NotShippable(f"youzan trade {tid} is a distribution order; its supplier "
                                   f"ships it ({exc.code})") from exc
            raise
        if as_dict(data).get("is_success") is not True:
            return await self._resolve_refusal(tid, 0)
        return ShipOutcome.SHIPPED

    async def _resolve_refusal(self, tid: str, code: int) -> ShipOutcome:
        current = await self.fetch_order(tid)
        if current.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED) \
                or current.extra.get(AUTO_DELIVERED) == "1":
            return ShipOutcome.ALREADY_SHIPPED
        _refuse_unshippable(current)
        raise NotShippable(f"youzan refused to ship trade {tid} in status "
                           f"{current.extra.get('status')} ({code or 'is_success=false'})")

    async def write_memo(self, order: Order, memo: str) -> None:
        """Seller memo (only the merchant sees it), cut to :data:`MEMO_MAX_CHARS`."""
        data = await self._api.call(MEMO_API, MEMO_VERSION,
                                    {"tid": order.platform_order_id, "memo": memo[:MEMO_MAX_CHARS]})
        if as_dict(data).get("is_success") is not True:
            raise BadPlatformData(f"{MEMO_API}: is_success is not true for "
                                  f"trade {order.platform_order_id}")

    # -- diagnostics --------------------------------------------------------------------

    async def check(self) -> CheckReport:
        """Token (credentials, authorization), then one cheap order query (permission)."""
        names = ("Youzan reachable", "client id, secret and shop authorization",
                 "trade API permission")
        try:
            await self._api.tokens.token()
        except RobotError as exc:
            return staged_report(names, 0 if isinstance(exc, Retriable) else 1, exc.message)
        end = self.platform_clock.now() - timedelta(seconds=self.config.lag_seconds)
        try:
            await self._api.call(TRADES_SOLD_GET, self.config.trades_sold_get_version, {
                "start_update": format_cst(end - timedelta(minutes=1)),
                "end_update": format_cst(end), "page_no": 1, "page_size": 1})
        except (PermissionDenied, AuthError, Skippable, Retriable) as exc:
            return staged_report(names, 2, exc.message)
        return staged_report(names, len(names), "")


def _refuse_unshippable(order: Order) -> None:
    if order.status is PlatformStatus.CLOSED:
        raise NotShippable(f"youzan trade {order.platform_order_id} is closed")
    if order.refund_in_progress:
        raise NotShippable(f"youzan trade {order.platform_order_id} has a refund in progress")
    if order.status is PlatformStatus.UNPAID:
        raise NotShippable(f"youzan trade {order.platform_order_id} is not paid "
                           f"(status {order.extra.get('status')})")


def _sold_list(data: Any) -> list[dict[str, Any]]:
    rows = as_dict(data).get("full_order_info_list") or []
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise BadPlatformData("youzan trades.sold.get: full_order_info_list is malformed")
    return rows


def _without_tid(rows: Sequence[tuple[str, str, int]]) -> tuple[Order, ...]:
    """An unidentifiable order for the sold rows that carried no tid (one per poll step)."""
    if all(tid for tid, _status, _refund in rows):
        return ()
    return (unreadable(None, f"{TRADES_SOLD_GET} row without full_order_info.order_info.tid"),)


def _worth_reading(rows: Sequence[tuple[str, str, int]]) -> list[str]:
    """Tids of sold rows whose trade may need delivering (or whose status is unknown)."""
    return [tid for tid, status, _refund in rows
            if tid and (status in _WORTH_READING or not known_status(status))]


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _unique_rows(rows: Iterable[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """First row per tid (rows repeat when trades move between pages)."""
    seen: dict[str, tuple[str, str, int]] = {}
    for row in rows:
        seen.setdefault(row[0], row)
    return list(seen.values())
