"""The Acme connector: polls paid orders, ships, writes memos, verifies pushes.

Built only on the ground floor: the protocol and types of :mod:`connectors.base`, the errors
of :mod:`connectors.errors`, the logger of :mod:`connectors.log`. Never logs or raises with
the API key, a signature or a memo's text.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

import httpx

from acme_robot.config import AcmeConfig
from acme_robot.wire import (
    PUSH_MAX_AGE,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    format_time,
    parse_time,
    push_signature,
)
from connectors.base import (
    CheckReport,
    Order,
    OrderLine,
    PlatformStatus,
    PollResult,
    PushBatch,
    PushEvent,
    PushKind,
    Shipment,
    ShipOutcome,
    unreadable,
)
from connectors.common.errors import http_failure
from connectors.errors import (
    AuthError,
    BadPlatformData,
    NotShippable,
    PushRejected,
    Unavailable,
)
from connectors.log import get_logger

log = get_logger(__name__)

STATUSES = {"unpaid": PlatformStatus.UNPAID, "paid": PlatformStatus.PAID,
            "shipped": PlatformStatus.SHIPPED, "closed": PlatformStatus.CLOSED}
#: Each poll re-reads this much of the previous window (late writes on Acme's side).
OVERLAP = timedelta(seconds=5)


def normalize(data: Any) -> Order:
    """An Acme order as a normalized :class:`Order` (BadPlatformData if out of shape)."""
    try:
        lines = tuple(
            OrderLine(line_id=str(line["id"]), quantity=int(line["quantity"]),
                      sku_id=str(line["sku"]), title=str(line.get("title", "")),
                      unit_price_cents=int(line["price_cents"]))
            for line in data["lines"])
        if not lines or any(line.quantity < 1 for line in lines):
            raise ValueError("an order needs lines of at least one unit")
        return Order(platform_order_id=str(data["id"]), status=STATUSES[data["status"]],
                     lines=lines, total_cents=int(data["total_cents"]),
                     modified_at=parse_time(data["updated_at"]),
                     buyer_id=str(data["buyer"]) if data.get("buyer") else None,
                     # Acme keeps when an order was shipped after a refund closes it: the
                     # robot tells a refunded order that was shipped from one that was not.
                     shipped_on_platform=bool(data["shipped_at"]) if "shipped_at" in data
                     else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadPlatformData(f"acme order unreadable: {type(exc).__name__}") from None


class AcmeConnector:
    """One shop on Acme."""

    platform: ClassVar[str] = "acme"
    receives_push: ClassVar[bool] = True
    push_window = 5.0

    def __init__(self, config: AcmeConfig, *, shop: str,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.shop = shop
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=str(self.config.base_url).rstrip("/"),
                headers={"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"},
                timeout=self.config.timeout_seconds, transport=self._transport)
        return self._client

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http().request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"acme {method} {path}: {type(exc).__name__}") from exc
        if response.status_code == 401:
            raise AuthError("acme refused the shop's API key")
        if response.status_code == 429 or response.status_code >= 500:
            raise http_failure(f"acme {method} {path}: HTTP {response.status_code}",
                               response.status_code, retry_after=5.0)
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise http_failure("acme answered something that is not JSON",
                               response.status_code, retry_after=5.0) from None

    async def poll(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        since = (parse_time(cursor["until"]) - OVERLAP if cursor
                 else now - timedelta(minutes=self.config.initial_lookback_minutes))
        orders: list[Order] = []
        page = 1
        while True:
            data = self._json(await self._call("GET", "/api/orders", params={
                "updated_after": format_time(since), "updated_before": format_time(now),
                "status": "paid", "page": page}))
            for row in data.get("orders", []):
                try:
                    orders.append(normalize(row))
                except BadPlatformData as exc:
                    orders.append(unreadable(row.get("id") if isinstance(row, dict) else None,
                                             exc.message))
            if not data.get("has_more"):
                break
            page += 1
        return PollResult(orders=tuple(orders), cursor={"until": format_time(now)})

    async def poll_refunds(self, cursor: Mapping[str, Any] | None,
                           now: datetime) -> PollResult:
        return PollResult(orders=(), cursor=dict(cursor or {}))  # Acme pushes closes

    async def fetch_order(self, platform_order_id: str) -> Order:
        response = await self._call("GET", f"/api/orders/{platform_order_id}")
        if response.status_code == 404:
            raise NotShippable(f"acme has no order {platform_order_id}")
        return normalize(self._json(response))

    def parse_push(self, headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
        lowered = {k.lower(): v for k, v in headers.items()}
        signature = lowered.get(SIGNATURE_HEADER.lower(), "")
        stamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
        if not signature or not stamp.isdigit():
            raise PushRejected("acme push without its signature headers")
        expected = push_signature(self.config.push_secret.get_secret_value(), stamp, body)
        if not hmac.compare_digest(expected, signature):
            raise PushRejected("acme push signature does not match")
        if abs(now.timestamp() - int(stamp)) > PUSH_MAX_AGE:
            raise PushRejected("acme push too old (or from the future)")
        try:
            data = json.loads(body)
            kind = {"order.paid": PushKind.PAID, "order.closed": PushKind.CLOSED}.get(
                data["event"], PushKind.OTHER)
            order = normalize(data["order"])
        except (ValueError, KeyError, TypeError, BadPlatformData) as exc:
            raise PushRejected(f"acme push unreadable: {type(exc).__name__}") from None
        event = PushEvent(kind=kind, platform_order_id=order.platform_order_id,
                          message_id=str(data.get("id", "")), order=order)
        return PushBatch(events=(event,), reply_body=b'{"ok":true}')

    async def ship(self, shipment: Shipment) -> ShipOutcome:
        oid = shipment.order.platform_order_id
        response = await self._call("POST", f"/api/orders/{oid}/ship",
                                    json={"line_ids": list(shipment.line_ids),
                                          "note": shipment.item_desc})
        if response.status_code == 200:
            log.info("acme_shipped", shop=self.shop, order=oid)
            return ShipOutcome.SHIPPED
        if response.status_code == 409:  # "already shipped": read the order to be sure
            current = await self.fetch_order(oid)
            if current.status is PlatformStatus.SHIPPED:
                return ShipOutcome.ALREADY_SHIPPED
            raise NotShippable(f"acme order {oid} is {current.status}")
        if response.status_code in (404, 410):
            raise NotShippable(f"acme refuses to ship order {oid} (closed or unknown)")
        raise BadPlatformData(f"acme ship answered HTTP {response.status_code}")

    async def write_memo(self, order: Order, memo: str) -> None:
        oid = order.platform_order_id
        response = await self._call("POST", f"/api/orders/{oid}/memo", json={"memo": memo})
        if response.status_code != 200:
            raise BadPlatformData(f"acme memo answered HTTP {response.status_code}")

    async def check(self) -> CheckReport:
        try:
            await self._call("GET", "/api/shop")
        except (AuthError, Unavailable) as exc:
            return CheckReport(ok=False, checks=(("api key", False, exc.message),))
        return CheckReport(ok=True, checks=(("api key", True, "accepted"),))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
