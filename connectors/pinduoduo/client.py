"""The Pinduoduo connector: polls POP for orders awaiting shipment and for refunds, ships
through ``pdd.logistics.online.send``, writes the seller memo.

Orders come from ``pdd.order.number.list.increment.get`` (``order_status=1``,
``refund_status=1``) over overlapping ≤30-minute windows paged backwards; its rows carry the
order fields, so no detail call is needed per order. Refunds come from
``pdd.refund.list.increment.get``; each touched order is re-read with
``pdd.order.information.get``. POP pushes over a WebSocket only, so ``parse_push`` refuses
every HTTP push. This module must never ship an order POP does not show as awaiting
shipment without a refund, and never log a credential.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from connectors.common.clock import Clock
from connectors.common.unreadable import fetch_each, normalize_each
from connectors.common.window import Window, WindowPlanner
from connectors.errors import (
    AuthError,
    BadPlatformData,
    NotShippable,
    PermissionDenied,
    PushRejected,
    Retriable,
    Skippable,
)
from connectors.log import get_logger
from connectors.pinduoduo.api import PopApi, fetch_window
from connectors.pinduoduo.config import PinduoduoConfig
from connectors.pinduoduo.errors import AppRejected, PddRejected
from connectors.pinduoduo.limiter import RateLimiter, Sleep
from connectors.pinduoduo.normalize import latest_by_order, order_from_row, unique_order_sns

log = get_logger(__name__)

INCREMENT = "pdd.order.number.list.increment.get"
DETAIL = "pdd.order.information.get"
REFUNDS = "pdd.refund.list.increment.get"
SHIP = "pdd.logistics.online.send"
NOTE = "pdd.order.note.update"
# ⚠ POP's note length limit is not in the docs we found; 500 characters is a cautious cut.
MEMO_MAX_CHARS = 500
ALL_AFTER_SALES = 1  # after_sales_status / after_sales_type 1 = all
SWEEP_PAGE_SIZE = 100  # POP's largest page: fewest calls for the reconciliation sweep

#: POP's cap: its doc ends a window at least 3 minutes before its clock, 30 minutes long
#: at most (connectors.common.window plans them).
MAX_WINDOW = timedelta(minutes=30)
PLANNER = WindowPlanner("pinduoduo", max_window=MAX_WINDOW)


class PinduoduoConnector:
    """One Pinduoduo shop over POP."""

    platform: ClassVar[str] = "pinduoduo"
    receives_push: ClassVar[bool] = False  # POP pushes over WebSocket (pmc), not HTTP

    def __init__(
        self,
        config: PinduoduoConfig,
        *,
        context: ShopContext | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.config = config
        self._api = PopApi(config, context=context, transport=transport, clock=clock,
                           sleep=sleep, limiter=limiter)
        self.shop = self._api.merchant

    @property
    def api(self) -> PopApi:
        return self._api

    async def aclose(self) -> None:
        await self._api.aclose()

    # -- orders -------------------------------------------------------------------------

    def clock_reading(self) -> ClockReading | None:
        """POP's clock offset from ours, as measured from its answers."""
        return self._api.clock.reading()

    async def _order_rows(self, window: Window, page_size: int) -> list[dict[str, Any]]:
        """Every row of one window of orders awaiting shipment without a refund."""
        params = {
            "start_updated_at": window.start, "end_updated_at": window.end,
            "order_status": 1, "refund_status": 1, "is_lucky_flag": 0,
            "page_size": page_size,
        }

        async def page(number: int) -> dict[str, Any]:
            return await self._api.call(INCREMENT, {**params, "page": number})

        return await fetch_window(page, list_key="order_sn_list", page_size=page_size)

    async def poll(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        """One window (in POP's time) of orders awaiting shipment without a refund."""

        async def fetch(window: Window) -> tuple[Order, ...]:
            rows = await self._order_rows(window, self.config.page_size)
            # One unreadable order must not stall the cursor: it is handed on as an
            # UnreadableOrder (the core parks it, or reports it when even its order_sn is
            # unreadable) and the window moves on.
            orders = normalize_each(latest_by_order(rows), order_from_row,
                                    lambda row: row.get("order_sn"))
            return orders + tuple(unreadable(None, f"{INCREMENT} row without order_sn")
                                  for row in rows if unique_order_sns([row]) == [])

        return await PLANNER.step(self.config, cursor, now, self._api.clock, fetch)

    async def poll_refunds(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        """One window of after-sales changes, returned as their orders re-read in full."""

        async def fetch(window: Window) -> tuple[Order, ...]:
            params = {
                "start_updated_at": window.start, "end_updated_at": window.end,
                "after_sales_status": ALL_AFTER_SALES, "after_sales_type": ALL_AFTER_SALES,
                "page_size": self.config.page_size,
            }

            async def page(number: int) -> dict[str, Any]:
                return await self._api.call(REFUNDS, {**params, "page": number})

            rows = await fetch_window(page, list_key="refund_list",
                                      page_size=self.config.page_size)
            return await self._read_orders(unique_order_sns(rows))

        return await PLANNER.step(self.config, cursor, now, self._api.clock, fetch)

    async def recent_order_ids(self, now: datetime, period: timedelta) -> list[str]:
        """Order numbers awaiting shipment updated within ``period`` (POP's time), in POP's
        ≤30-minute increment windows with its largest pages (POP has no field selection)."""
        await self._api.clock.ensure_measured()
        rows: list[dict[str, Any]] = []
        for window in PLANNER.trailing(self.config, now, period, self._api.clock):
            rows += await self._order_rows(window, SWEEP_PAGE_SIZE)
        return unique_order_sns(rows)

    async def _read_orders(self, order_sns: Sequence[str]) -> tuple[Order, ...]:
        def skipped(sn: str, exc: Skippable) -> None:
            log.error("pdd_order_unreadable", shop=self.shop, order_sn=sn, error=exc.message)

        return await fetch_each(order_sns, self.fetch_order, on_skip=skipped)

    async def fetch_order(self, platform_order_id: str) -> Order:
        """The order's current snapshot from ``pdd.order.information.get``."""
        body = await self._api.call(DETAIL, {"order_sn": platform_order_id})
        info = body.get("order_info")
        if not isinstance(info, dict):
            raise BadPlatformData(f"{DETAIL}: no order_info for {platform_order_id}")
        return order_from_row(info)

    def parse_push(self, headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
        raise PushRejected("pinduoduo does not push over HTTP (its messages use a WebSocket)")

    # -- write-back ---------------------------------------------------------------------

    async def ship(self, shipment: Shipment) -> ShipOutcome:
        """Mark the order shipped; "already shipped" and refusals are resolved by re-reading."""
        order = shipment.order
        if order.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED):
            return ShipOutcome.ALREADY_SHIPPED
        _refuse_unshippable(order)
        sn = order.platform_order_id
        try:
            body = await self._api.call(SHIP, {
                "order_sn": sn,
                "logistics_id": self.config.logistics_id,
                "tracking_number": self.config.tracking_number_for(sn),
            })
        except PddRejected as exc:
            return await self._resolve_refusal(sn, exc.message)
        if body.get("is_success") is not True:
            return await self._resolve_refusal(sn, "is_success is not true")
        return ShipOutcome.SHIPPED

    async def _resolve_refusal(self, order_sn: str, detail: str) -> ShipOutcome:
        current = await self.fetch_order(order_sn)
        if current.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED):
            return ShipOutcome.ALREADY_SHIPPED
        _refuse_unshippable(current)
        raise NotShippable(f"pinduoduo refused to ship order {order_sn} ({detail})")

    async def write_memo(self, order: Order, memo: str) -> None:
        """The seller memo (``pdd.order.note.update``), cut to a cautious length."""
        params: dict[str, object] = {"order_sn": order.platform_order_id,
                                     "note": memo[:MEMO_MAX_CHARS]}
        if self.config.memo_tag is not None:
            params["tag"] = self.config.memo_tag
        body = await self._api.call(NOTE, params)
        if body.get("success") is False:
            raise PddRejected(f"{NOTE}: POP did not accept the memo for "
                              f"{order.platform_order_id} ({body.get('error_msg')})",
                              code=int(body.get("error_code") or 0))

    # -- diagnostics --------------------------------------------------------------------

    async def check(self) -> CheckReport:
        """One cheap authenticated call, read as verdicts for ``robot shops test``."""
        names = ("gateway reachable", "client_id and client_secret", "merchant token",
                 "order API permission")
        end = self._api.now().replace(microsecond=0) - timedelta(seconds=self.config.lag_seconds)
        params = {"start_updated_at": end - timedelta(minutes=1), "end_updated_at": end,
                  "order_status": 1, "refund_status": 1, "is_lucky_flag": 0,
                  "page": 1, "page_size": 1, "use_has_next": True}
        try:
            await self._api.call(INCREMENT, params)
        except Retriable as exc:
            return staged_report(names, 0, exc.message)
        except PermissionDenied as exc:
            return staged_report(names, 3, exc.message)
        except AppRejected as exc:
            return staged_report(names, 1, exc.message)
        except AuthError as exc:
            return staged_report(names, 2, exc.message)
        except (PddRejected, BadPlatformData) as exc:
            return staged_report(names, 3, exc.message)
        return staged_report(names, len(names), "")


def _refuse_unshippable(order: Order) -> None:
    sn = order.platform_order_id
    if order.status is PlatformStatus.CLOSED:
        raise NotShippable(f"pinduoduo order {sn} is closed or refunded")
    if order.refund_in_progress:
        raise NotShippable(f"pinduoduo order {sn} has an after-sale (refund) in progress")
    if order.status is not PlatformStatus.PAID:
        raise NotShippable(f"pinduoduo order {sn} is not awaiting shipment "
                           f"(order_status {order.extra.get('order_status')})")
