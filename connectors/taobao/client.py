"""The Taobao/Tmall connector: polls TOP for paid trades and refunds, ships, writes memos.

Orders are found by polling ``taobao.trades.sold.increment.get`` over overlapping windows
(see :mod:`connectors.common.window`) and read in full with ``taobao.trade.fullinfo.get``;
TMC messages (REST ``taobao.tmc.messages.consume``/``confirm``) are an optional faster path.
Shipping is ``taobao.logistics.dummy.send`` (virtual goods). This module must never ship a
trade TOP does not report as ``WAIT_SELLER_SEND_GOODS``, never confirm a TMC message on its
own (the core confirms once the effect is durable), and never log a credential.
"""

from __future__ import annotations

import json
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
    PushEvent,
    Shipment,
    ShipOutcome,
    readable_id,
    unreadable,
)
from connectors.common.check import staged_report
from connectors.common.clock import Clock
from connectors.common.unreadable import fetch_each
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
from connectors.taobao.api import TopApi, fetch_window, list_items, unique_ids
from connectors.taobao.config import TaobaoConfig
from connectors.taobao.errors import ClockSkew, SessionExpired, TopRejected
from connectors.taobao.normalize import topic_kind, trade_to_order

#: Detail reads (``trade.fullinfo.get``) in flight at once during one poll step.
DETAIL_CONCURRENCY = 8

log = get_logger(__name__)

TRADE_FIELDS = (
    "tid,type,status,payment,pay_time,modified,created,consign_time,buyer_nick,buyer_open_uid,"
    "buyer_message,orders.sku_properties_name,"
    "orders.oid,orders.num_iid,orders.sku_id,orders.outer_iid,orders.outer_sku_id,"
    "orders.title,orders.num,orders.price,orders.payment,orders.status,"
    "orders.refund_status,orders.refund_id"
)
INCREMENT_FIELDS = "tid,status,modified"
SWEEP_FIELDS = "tid,modified"  # the reconciliation sweep lists ids and times only
SWEEP_PAGE_SIZE = 100  # TOP's largest page: fewest calls
REFUND_FIELDS = "refund_id,tid,oid,status,modified"
MEMO_MAX_BYTES = 1000
TMC_BATCH = 100  # messages per consume call (TOP allows 10-200)
TMC_CONFIRM_MAX = 200  # ids per confirm call
# dummy.send refusals meaning "this trade is not in a shippable state": re-read the trade.
_STATE_REFUSALS = ("B04", "B27")

MAX_WINDOW = timedelta(days=1)  # TOP refuses end_modified - start_modified > 1 day
#: TOP's windows (connectors.common.window): never longer than TOP's one-day limit.
PLANNER = WindowPlanner("taobao", max_window=MAX_WINDOW)


class TaobaoConnector:
    """One Taobao/Tmall shop over TOP."""

    platform: ClassVar[str] = "taobao"
    receives_push: ClassVar[bool] = False  # TMC is pulled (consume_messages), not pushed

    def __init__(
        self,
        config: TaobaoConfig,
        *,
        shop: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.shop = shop
        self._api = TopApi(config, transport=transport, clock=clock)

    @property
    def api(self) -> TopApi:
        return self._api

    async def aclose(self) -> None:
        await self._api.aclose()

    # -- orders -------------------------------------------------------------------------

    def clock_reading(self) -> ClockReading | None:
        """TOP's clock offset from ours, as measured from its answers."""
        return self._api.clock.reading()

    async def poll(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        """One window (in TOP's time) of trades awaiting shipment, each read in full."""

        async def fetch(window: Window) -> tuple[Order, ...]:
            rows = await fetch_window(
                self._api,
                "taobao.trades.sold.increment.get",
                {
                    "fields": INCREMENT_FIELDS,
                    "start_modified": window.start,
                    "end_modified": window.end,
                    "status": "WAIT_SELLER_SEND_GOODS",
                },
                list_key="trades",
                item_key="trade",
                page_size=self.config.page_size,
            )
            orders = await self._read_trades(unique_ids(rows, "tid"))
            return orders + _without_tid(rows, "taobao.trades.sold.increment.get")

        return await PLANNER.step(self.config, cursor, now, self._api.clock, fetch)

    async def poll_refunds(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        """One window of refunds changed on TOP, returned as their trades re-read in full."""

        async def fetch(window: Window) -> tuple[Order, ...]:
            rows = await fetch_window(
                self._api,
                "taobao.refunds.receive.get",
                {"fields": REFUND_FIELDS, "start_modified": window.start,
                 "end_modified": window.end},
                list_key="refunds",
                item_key="refund",
                page_size=self.config.page_size,
            )
            orders = await self._read_trades(unique_ids(rows, "tid"))
            return orders + _without_tid(rows, "taobao.refunds.receive.get")

        return await PLANNER.step(self.config, cursor, now, self._api.clock, fetch)

    async def recent_order_ids(self, now: datetime, period: timedelta) -> list[str]:
        """Tids of trades awaiting shipment modified within ``period`` (TOP's time), from
        ``trades.sold.increment.get`` asking for ``tid,modified`` only, in ≤1-day windows."""
        await self._api.clock.ensure_measured()
        rows: list[dict[str, Any]] = []
        for window in PLANNER.trailing(self.config, now, period, self._api.clock):
            rows += await fetch_window(
                self._api,
                "taobao.trades.sold.increment.get",
                {"fields": SWEEP_FIELDS, "start_modified": window.start,
                 "end_modified": window.end, "status": "WAIT_SELLER_SEND_GOODS"},
                list_key="trades",
                item_key="trade",
                page_size=SWEEP_PAGE_SIZE,
            )
        return unique_ids(rows, "tid")

    async def _read_trades(self, tids: Sequence[str]) -> tuple[Order, ...]:
        """Read trades in full, a few at a time (TOP allows parallel calls per app).

        A trade TOP answers with bad data comes back as an UnreadableOrder (the core parks
        it); one TOP refuses to show is logged (an operator can fetch it by id) and the window
        moves on. Any Retriable/Fatal error fails the whole step.
        """

        def skipped(tid: str, exc: Skippable) -> None:
            log.error("taobao_trade_unreadable", shop=self.shop, tid=tid, error=exc.message)

        return await fetch_each(tids, self.fetch_order, on_skip=skipped,
                                concurrency=DETAIL_CONCURRENCY)

    async def fetch_order(self, platform_order_id: str) -> Order:
        """The trade's current snapshot from ``taobao.trade.fullinfo.get``."""
        body = await self._api.call(
            "taobao.trade.fullinfo.get", {"fields": TRADE_FIELDS, "tid": platform_order_id}
        )
        trade = body.get("trade")
        if not isinstance(trade, dict):
            raise BadPlatformData(f"taobao.trade.fullinfo.get: no trade for {platform_order_id}")
        return trade_to_order(trade)

    # -- TMC (pulled message channel) ---------------------------------------------------

    def parse_push(self, headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
        raise PushRejected("taobao does not push over HTTP")

    @property
    def pulls_messages(self) -> bool:
        """Whether this shop takes orders from TMC as well as by polling."""
        return self.config.use_tmc

    async def consume_messages(self) -> list[tuple[str, PushEvent]]:
        """Take a batch of TMC messages; unconfirmed ones come back after a while."""
        body = await self._api.call(
            "taobao.tmc.messages.consume",
            {"group_name": self.config.tmc_group, "quantity": TMC_BATCH},
            session=False,
        )
        events: list[tuple[str, PushEvent]] = []
        for message in list_items(body, "messages", "tmc_message"):
            message_id = str(message.get("id") or "")
            if not message_id:
                raise BadPlatformData("taobao TMC message without id")
            topic = str(message.get("topic") or "")
            tid = _content_tid(message.get("content"))
            kind = topic_kind(topic) if tid else topic_kind("")
            events.append(
                (message_id, PushEvent(kind=kind, platform_order_id=tid, message_id=message_id))
            )
        return events

    async def confirm_messages(self, message_ids: Sequence[str]) -> None:
        """Confirm TMC messages whose effect is durable, so TOP stops redelivering them."""
        for start in range(0, len(message_ids), TMC_CONFIRM_MAX):
            chunk = list(message_ids[start : start + TMC_CONFIRM_MAX])
            await self._api.call(
                "taobao.tmc.messages.confirm",
                {"group_name": self.config.tmc_group, "s_message_ids": chunk},
                session=False,
            )

    # -- write-back ---------------------------------------------------------------------

    async def ship(self, shipment: Shipment) -> ShipOutcome:
        """Virtual shipment of the whole trade; "already shipped" is resolved by re-reading."""
        order = shipment.order
        _refuse_unshippable(order)
        if order.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED):
            return ShipOutcome.ALREADY_SHIPPED
        tid = order.platform_order_id
        try:
            body = await self._api.call("taobao.logistics.dummy.send", {"tid": tid})
        except TopRejected as exc:
            if exc.sub_code.endswith(":B01"):
                raise NotShippable(f"taobao trade {tid} not found ({exc.sub_code})") from exc
            if not exc.sub_code.endswith(_STATE_REFUSALS):
                raise
            return await self._resolve_refusal(tid, exc)
        if (body.get("shipping") or {}).get("is_success") is not True:
            return await self._resolve_refusal(tid, None)
        return ShipOutcome.SHIPPED

    async def _resolve_refusal(self, tid: str, cause: TopRejected | None) -> ShipOutcome:
        current = await self.fetch_order(tid)
        if current.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED):
            return ShipOutcome.ALREADY_SHIPPED
        _refuse_unshippable(current)
        detail = cause.sub_code if cause else "is_success=false"
        raise NotShippable(
            f"taobao refused to ship trade {tid} in status {current.extra.get('status')} ({detail})"
        )

    async def write_memo(self, order: Order, memo: str) -> None:
        """Seller memo, cut to TOP's 1000 bytes on a UTF-8 character boundary."""
        await self._api.call(
            "taobao.trade.memo.update",
            {"tid": order.platform_order_id, "memo": truncate_utf8(memo, MEMO_MAX_BYTES)},
        )

    # -- diagnostics --------------------------------------------------------------------

    async def check(self) -> CheckReport:
        """One cheap authenticated call, read as verdicts on gateway, app, session, permission."""
        end = self._api.now() - timedelta(seconds=self.config.lag_seconds)
        params = {
            "fields": "tid",
            "start_modified": end - timedelta(minutes=1),
            "end_modified": end,
            "page_size": 1,
            "use_has_next": True,
        }
        names = (
            "gateway reachable",
            "app key and secret",
            "clock",
            "seller session",
            "trade API permission",
        )
        try:
            await self._api.call("taobao.trades.sold.increment.get", params)
        except Retriable as exc:
            return staged_report(names, 0, exc.message)
        except SessionExpired as exc:
            return staged_report(names, 3, exc.message)
        except AuthError as exc:
            return staged_report(names, 1, exc.message)
        except ClockSkew as exc:
            return staged_report(names, 2, exc.message)
        except PermissionDenied as exc:
            return staged_report(names, 4, exc.message)
        except (TopRejected, BadPlatformData) as exc:
            return staged_report(names, 4, exc.message)
        return staged_report(names, len(names), "")


def _without_tid(rows: Sequence[Mapping[str, Any]], method: str) -> tuple[Order, ...]:
    """One unidentifiable order per row that carries no usable ``tid``."""
    return tuple(unreadable(None, f"{method} row without a usable tid")
                 for row in rows if not readable_id(row.get("tid")))


def _refuse_unshippable(order: Order) -> None:
    if order.status is PlatformStatus.CLOSED:
        raise NotShippable(f"taobao trade {order.platform_order_id} is closed")
    if order.refund_in_progress:
        raise NotShippable(f"taobao trade {order.platform_order_id} has a refund in progress")
    if order.status is PlatformStatus.UNPAID:
        raise NotShippable(
            f"taobao trade {order.platform_order_id} is not shippable "
            f"(status {order.extra.get('status')})"
        )


def _content_tid(content: Any) -> str:
    """The ``tid`` inside a TMC message's JSON ``content`` ("" when there is none)."""
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except ValueError:
            return ""
    if not isinstance(content, dict):
        return ""
    tid = content.get("tid")
    return "" if tid in (None, "") or isinstance(tid, bool) else str(tid)


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes without splitting a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
