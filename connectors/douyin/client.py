"""The Douyin shop (抖店) connector: polls and receives pushes for paid orders, ships card
codes with ``coupons.syncV2``, writes seller remarks.

Intake (the core de-duplicates on the order id):

* polling ``order.searchList`` by ``update_time`` over overlapping windows (the kit's
  :class:`~connectors.common.window.WindowPlanner`), every page, each order that may need
  delivering then read in full with ``order.orderDetail``;
* pushes verified by :func:`connectors.douyin.push.parse_push` (tag 101: paid).

Shipping is ``coupons.syncV2`` per sub-order: the certificates the buyer sees on the order
page. Douyin shows codes to the buyer, so the connector says ``shows_codes`` and the core
hands it each code (:class:`~connectors.base.HandedCode`) with the sub-order it was
allocated to: the code (or a pair's card number) is ``cert_no``, a pair's PIN ``cert_key``,
the pool's redemption link ``cert_link`` (the order's pickup link when the pool has none).
The codes leave the robot here by design; the plaintext exists only inside the request body
built for that call. An order without codes (a top-up) gets one certificate per sub-order
naming the sub-order, with the pickup link. Douyin refuses a second sync of a sub-order:
``000008`` when the certificates are the same (ours: a repeated attempt sends exactly what
the first sent, ``grant_time`` being the payment time), which counts as that sub-order done;
``010004`` when they differ, resolved by re-reading the order, never taken as success
blindly. The seller remark is
``order.addOrderRemark``.

This module must never ship an order whose snapshot is closed, unpaid or refunding, and
never log a credential or a code.
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
    HandedCode,
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
from connectors.common.times import format_cst, to_epoch
from connectors.common.unreadable import fetch_each
from connectors.common.values import as_dict, as_int
from connectors.common.window import Window, WindowPlanner
from connectors.douyin import errors as codes
from connectors.douyin.api import HEADERS, DouyinApi, Gateway
from connectors.douyin.config import DouyinConfig
from connectors.douyin.errors import DouyinRejected
from connectors.douyin.normalize import known_status, order_from
from connectors.douyin.push import parse_push
from connectors.douyin.token import TokenManager
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

log = get_logger(__name__)

SEARCH_LIST = "order.searchList"
ORDER_DETAIL = "order.orderDetail"
COUPON_SYNC = "coupons.syncV2"
ADD_REMARK = "order.addOrderRemark"
#: order.searchList answers at most 50 000 rows per query.
MAX_ROWS = 50_000
#: ⚠ Douyin documents no remark length here; keep it short enough for any remark field.
MEMO_MAX_CHARS = 256
#: Statuses worth reading in full for intake (paid, awaiting shipment, partly shipped).
_WORTH_READING = frozenset({105, 2, 101})
_CANCELLED = 4
_NOT_FOUND = frozenset({codes.ORDER_NOT_FOUND})
_ALREADY = frozenset({codes.COUPON_ALREADY_SYNCED, codes.COUPON_PARAMS_DIFFER,
                      codes.ALREADY_SHIPPED})
_CLOSED = frozenset({codes.ORDER_CANCELLED, codes.REFUNDED_BEFORE_SHIPMENT,
                     codes.COUPON_TOO_LATE})
#: Douyin lists 90 days; no other cap on one window.
PLANNER = WindowPlanner("douyin")

Row = tuple[str, int | None, bool]  # (order id, order_status, some sub-order has an after-sale)


class DouyinConnector:
    """One Douyin shop."""

    platform: ClassVar[str] = "douyin"
    receives_push: ClassVar[bool] = True
    #: ⚠ Douyin's push timeout is not confirmed; 3 s is the shortest any platform gives.
    push_window: ClassVar[float] = 3.0
    #: Douyin shows the synced certificates on the buyer's order page: ship with the codes.
    shows_codes: ClassVar[bool] = True

    def __init__(self, config: DouyinConfig, context: ShopContext, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Clock | None = None) -> None:
        self.config = config
        self.shop = context.shop
        self._clock = clock or utc_now
        #: Douyin's clock as measured from its answers; windows and timestamps follow it.
        self.platform_clock = PlatformClock(
            self._clock, probe=lambda: probe_get(self._http.get(), self.config.base_url))
        self._http = LoopClient(platform="Douyin", timeout=config.timeout_seconds,
                                transport=transport, headers=HEADERS,
                                clock=self.platform_clock)
        gateway = Gateway(config, self._http, self.platform_clock)
        self._api = DouyinApi(gateway, TokenManager(config, context, gateway, self._clock))

    @property
    def api(self) -> DouyinApi:
        return self._api

    async def aclose(self) -> None:
        await self._http.aclose()

    def clock_reading(self) -> ClockReading | None:
        return self.platform_clock.reading()

    # -- intake: polling ----------------------------------------------------------------

    async def poll(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        """One window (Douyin's time) of updated orders; the paid ones read in full."""

        async def fetch(window: Window) -> tuple[Order, ...]:
            rows = await self._rows(window.start, window.end)
            orders = await self._read(_worth_reading(rows))
            paid = tuple(o for o in orders if o.status is PlatformStatus.PAID)
            return paid + _without_id(rows)

        return await PLANNER.step(self.config, cursor, now, self.platform_clock, fetch)

    async def poll_refunds(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        """One window of orders cancelled or with an after-sale, read in full."""

        async def fetch(window: Window) -> tuple[Order, ...]:
            rows = await self._rows(window.start, window.end)
            ids = [oid for oid, status, after_sale in rows
                   if oid and (status == _CANCELLED or after_sale)]
            return await self._read(ids) + _without_id(rows)

        return await PLANNER.step(self.config, cursor, now, self.platform_clock, fetch)

    async def recent_order_ids(self, now: datetime, period: timedelta) -> list[str]:
        """Ids of orders updated within ``period`` that polling would read."""
        await self.platform_clock.ensure_measured()
        ids: list[str] = []
        for window in PLANNER.trailing(self.config, now, period, self.platform_clock):
            ids += _worth_reading(await self._rows(window.start, window.end))
        return list(dict.fromkeys(ids))

    async def _rows(self, start: datetime, end: datetime) -> list[Row]:
        """Every order updated in ``[start, end]``, once each.

        A row updated while we page leaves the window (its new update time is past the end)
        and shifts later rows forward; pages are therefore read from the last to the first
        and page 0 again at the end, so a shift repeats a row instead of skipping one. Past
        :data:`MAX_ROWS` the window is split in halves.
        """
        size = self.config.page_size
        base = {"update_time_start": to_epoch(start), "update_time_end": to_epoch(end),
                "order_by": "update_time", "order_asc": True}
        first = await self._page(base, 0, size)
        total = as_int(as_dict(first).get("total"))
        if total > MAX_ROWS and end - start > timedelta(seconds=1):
            middle = (start + (end - start) / 2).replace(microsecond=0)
            log.info("douyin_window_split", shop=self.shop, total=total)
            return _unique_rows([*await self._rows(start, middle),
                                 *await self._rows(middle, end)])
        if total > MAX_ROWS:
            log.error("douyin_window_overflow", shop=self.shop, total=total,
                      start=format_cst(start))
        pages = min(math.ceil(total / size), MAX_ROWS // size)
        rows = _list(first)
        if pages > 1:
            for page in range(pages - 1, 0, -1):
                rows.extend(_list(await self._page(base, page, size)))
            rows.extend(_list(await self._page(base, 0, size)))
        return _unique_rows(_row(row) for row in rows)

    async def _page(self, base: Mapping[str, Any], page: int, size: int) -> Any:
        return await self._api.call(SEARCH_LIST, {**base, "page": page, "size": size})

    async def _read(self, ids: Sequence[str]) -> tuple[Order, ...]:
        def skipped(oid: str, exc: Skippable) -> None:
            log.error("douyin_order_unreadable", shop=self.shop, order_id=oid,
                      error=exc.message)

        return await fetch_each(ids, self.fetch_order, on_skip=skipped)

    async def fetch_order(self, platform_order_id: str) -> Order:
        """The order's current snapshot from ``order.orderDetail``."""
        try:
            data = await self._api.call(ORDER_DETAIL, {"shop_order_id": platform_order_id})
        except DouyinRejected as exc:
            if exc.business_code in _NOT_FOUND or exc.code == codes.INVALID_PARAMETER:
                raise NotShippable(f"douyin order {platform_order_id} not found "
                                   f"({exc.sub_code or exc.code})") from exc
            raise
        detail = as_dict(data).get("shop_order_detail")
        order = order_from(detail)
        if order.platform_order_id != platform_order_id:
            raise BadPlatformData(f"douyin order.orderDetail answered another order for "
                                  f"{platform_order_id}")
        return order

    # -- intake: push -------------------------------------------------------------------

    def parse_push(self, headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
        return parse_push(headers, body, app_key=self.config.app_key,
                          app_secret=self.config.app_secret.get_secret_value(),
                          shop_id=self.config.shop_id)

    # -- write-back ---------------------------------------------------------------------

    async def ship(self, shipment: Shipment) -> ShipOutcome:
        """Sync the certificates of each shipped sub-order; refusals are re-read."""
        order = shipment.order
        _refuse_unshippable(order)
        if order.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED):
            return ShipOutcome.ALREADY_SHIPPED
        lines = {line.line_id: line for line in order.lines}
        unknown = [lid for lid in shipment.line_ids if lid not in lines]
        if unknown:
            raise NotShippable(f"douyin order {order.platform_order_id} has no sub-order "
                               f"{', '.join(unknown)[:100]}")
        by_line = _by_line(shipment.handed)
        wanted = [lid for lid in (shipment.line_ids or tuple(lines))
                  if by_line.get(lid) or not by_line]
        stray = set(by_line) - set(wanted)
        if stray:
            raise NotShippable(f"douyin order {order.platform_order_id}: codes for a sub-order "
                               f"not shipped ({', '.join(sorted(stray))[:100]})")
        # The payment time, not now: an attempt repeated after a lost answer sends the very
        # same certificates, which Douyin answers 000008 (already processed).
        grant_time = format_cst(order.paid_at or self.platform_clock.now())
        refused: DouyinRejected | None = None
        synced_before = 0
        for line_id in wanted:
            certs = _certs(by_line.get(line_id, ()), line_id, grant_time,
                           shipment.pickup_url)
            try:
                await self._api.call(COUPON_SYNC, {"order_id": line_id,
                                                   "sku_id": lines[line_id].sku_id or "",
                                                   "cert_list": certs})
            except DouyinRejected as exc:
                if exc.business_code == codes.COUPON_ALREADY_SYNCED:
                    synced_before += 1  # our own identical certificates: this line is done
                    continue
                if exc.business_code in _ALREADY or exc.business_code in _CLOSED \
                        or exc.business_code in _NOT_FOUND:
                    refused = exc
                    continue
                raise
        if refused is not None:
            return await self._resolve_refusal(order.platform_order_id, refused)
        return ShipOutcome.ALREADY_SHIPPED if synced_before == len(wanted) \
            else ShipOutcome.SHIPPED

    async def _resolve_refusal(self, oid: str, exc: DouyinRejected) -> ShipOutcome:
        current = await self.fetch_order(oid)
        if current.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED):
            return ShipOutcome.ALREADY_SHIPPED
        _refuse_unshippable(current)
        if exc.business_code in (codes.COUPON_ALREADY_SYNCED, codes.COUPON_PARAMS_DIFFER):
            # Douyin holds certificates for a sub-order of a paid, unshipped order: another
            # line is still due (a partly shipped order) or the state lags; never success.
            raise NotShippable(f"douyin order {oid}: certificates already synced but the "
                               f"order is still {current.extra.get('order_status')} "
                               f"({exc.sub_code})") from exc
        raise NotShippable(f"douyin refused to ship order {oid} in status "
                           f"{current.extra.get('order_status')} ({exc.sub_code})") from exc

    async def write_memo(self, order: Order, memo: str) -> None:
        """Seller remark (only the merchant sees it), cut to :data:`MEMO_MAX_CHARS`."""
        await self._api.call(ADD_REMARK, {"order_id": order.platform_order_id,
                                          "remark": memo[:MEMO_MAX_CHARS],
                                          "is_add_star": "false"})

    # -- diagnostics --------------------------------------------------------------------

    async def check(self) -> CheckReport:
        """Token (credentials, authorization), then one cheap order query (permission)."""
        names = ("Douyin reachable", "app key, secret and shop authorization",
                 "order API permission")
        try:
            await self._api.tokens.token()
        except RobotError as exc:
            return staged_report(names, 0 if isinstance(exc, Retriable) else 1, exc.message)
        end = self.platform_clock.now() - timedelta(seconds=self.config.lag_seconds)
        try:
            await self._api.call(SEARCH_LIST, {
                "update_time_start": to_epoch(end - timedelta(minutes=1)),
                "update_time_end": to_epoch(end), "page": 0, "size": 1})
        except (PermissionDenied, AuthError, Skippable, Retriable) as exc:
            return staged_report(names, 2, exc.message)
        return staged_report(names, len(names), "")


def _by_line(handed: Sequence[HandedCode]) -> dict[str, list[HandedCode]]:
    """The handed codes per sub-order, in allocation order."""
    lines: dict[str, list[HandedCode]] = {}
    for code in handed:
        lines.setdefault(code.line_id, []).append(code)
    return lines


def _certs(codes_: Sequence[HandedCode], line_id: str, grant_time: str,
           pickup_url: str | None) -> list[dict[str, Any]]:
    """The ``cert_list`` for one sub-order: one certificate per code (number, PIN, the
    pool's redemption link or else the pickup link); without codes, one certificate naming
    the sub-order, with the pickup link. ``out_cert_id`` numbers them the same way on every
    attempt."""
    if not codes_:
        cert: dict[str, Any] = {"cert_no": f"R{line_id}", "grant_time": grant_time,
                                "status": 2, "out_cert_id": f"{line_id}-1"}
        if pickup_url:
            cert["cert_link"] = pickup_url
        return [cert]
    certs = []
    for index, code in enumerate(codes_, start=1):
        cert = {"cert_no": code.number.reveal(), "grant_time": grant_time, "status": 2,
                "out_cert_id": f"{line_id}-{index}"}
        if code.pin is not None:
            cert["cert_key"] = code.pin.reveal()
        if code.link or pickup_url:
            cert["cert_link"] = code.link or pickup_url
        certs.append(cert)
    return certs


def _refuse_unshippable(order: Order) -> None:
    if order.status is PlatformStatus.CLOSED:
        raise NotShippable(f"douyin order {order.platform_order_id} is closed")
    if order.refund_in_progress:
        raise NotShippable(f"douyin order {order.platform_order_id} has a refund in progress")
    if order.status is PlatformStatus.UNPAID:
        raise NotShippable(f"douyin order {order.platform_order_id} is not paid")


def _list(data: Any) -> list[Any]:
    rows = as_dict(data).get("shop_order_list") or []
    if not isinstance(rows, list):
        raise BadPlatformData("douyin order.searchList: shop_order_list is not a list")
    return rows


def _row(row: Any) -> Row:
    if not isinstance(row, dict):
        return ("", None, False)
    oid = row.get("order_id")
    text = str(oid).strip() if isinstance(oid, str | int) and not isinstance(oid, bool) else ""
    status = row.get("order_status")
    number = status if isinstance(status, int) and not isinstance(status, bool) else None
    after_sale = any(
        isinstance(sku, dict) and as_int(as_dict(sku.get("after_sale_info"))
                                         .get("refund_status")) != 0
        for sku in (row.get("sku_order_list") or []) if isinstance(row.get("sku_order_list"),
                                                                   list))
    return (text, number, after_sale)


def _without_id(rows: Sequence[Row]) -> tuple[Order, ...]:
    if all(oid for oid, _status, _refund in rows):
        return ()
    return (unreadable(None, f"{SEARCH_LIST} row without order_id"),)


def _worth_reading(rows: Sequence[Row]) -> list[str]:
    """Ids of rows whose order may need delivering (or whose status is unknown)."""
    return [oid for oid, status, _refund in rows
            if oid and (status in _WORTH_READING or not known_status(status))]


def _unique_rows(rows: Iterable[Row]) -> list[Row]:
    seen: dict[str, Row] = {}
    for row in rows:
        seen.setdefault(row[0], row)
    return list(seen.values())
