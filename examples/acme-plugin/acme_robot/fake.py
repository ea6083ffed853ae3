"""The fake Acme API: orders, shipping and memos as Acme keeps them, on loopback only.

Built on the ground floor's fake kit (:class:`connectors.fakekit.WriteBackLog` records every
ship and memo call with its payload, served in ``/__fake__/state`` like every fake's). It
checks the API key on every call and signs its pushes as Acme does.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from acme_robot.wire import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    format_time,
    parse_time,
    push_signature,
)
from connectors.fakekit import WriteBackLog

PAGE_SIZE = 50


@dataclass
class FakeOrder:
    order_id: str
    lines: list[dict[str, Any]]
    buyer: str
    status: str = "paid"
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    shipments: int = 0
    memo: str | None = None
    shipped_at: datetime | None = None  # kept after a refund closes the order

    def ship(self) -> None:
        self.status, self.updated_at = "shipped", datetime.now(UTC)
        self.shipped_at = self.updated_at
        self.shipments += 1

    def to_json(self) -> dict[str, Any]:
        return {"id": self.order_id, "status": self.status, "buyer": self.buyer,
                "updated_at": format_time(self.updated_at), "lines": self.lines,
                "shipped_at": format_time(self.shipped_at) if self.shipped_at else None,
                "total_cents": sum(ln["price_cents"] * ln["quantity"] for ln in self.lines)}


class FakeAcme:
    """Acme's state: orders by id, the shop's API key, the push secret."""

    def __init__(self, *, api_key: str = "acme-test-key",
                 push_secret: str = "acme-push-secret") -> None:  # noqa: S107 - test values
        self.api_key = api_key
        self.push_secret = push_secret
        self.lock = threading.Lock()
        self.orders: dict[str, FakeOrder] = {}
        self.writebacks = WriteBackLog()
        self._ids = itertools.count(1)
        self.revoked = False

    def create_order(self, sku: str, quantity: int = 1, *, buyer: str = "buyer-1",
                     price_cents: int = 1000) -> str:
        with self.lock:
            oid = f"A{next(self._ids):08d}"
            self.orders[oid] = FakeOrder(oid, [{"id": f"{oid}-1", "sku": sku,
                                                "quantity": quantity, "title": "Acme card",
                                                "price_cents": price_cents}], buyer)
            return oid

    def close_order(self, oid: str) -> None:
        with self.lock:
            order = self.orders[oid]
            order.status, order.updated_at = "closed", datetime.now(UTC)

    def signed_push(self, oid: str, event: str = "order.paid",
                    now: datetime | None = None) -> tuple[dict[str, str], bytes]:
        with self.lock:
            body = json.dumps({"id": f"evt-{oid}-{event}", "event": event,
                               "order": self.orders[oid].to_json()}).encode()
        stamp = str(int((now or datetime.now(UTC)).timestamp()))
        return {SIGNATURE_HEADER: push_signature(self.push_secret, stamp, body),
                TIMESTAMP_HEADER: stamp}, body

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {"orders": [o.to_json() | {"shipments": o.shipments, "memo": o.memo}
                               for o in self.orders.values()],
                    "write_backs": self.writebacks.to_json()}


def _refused(status: int, error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status)


def create_app(fake: FakeAcme) -> Starlette:  # noqa: C901 - mccabe sums the nested route handlers
    """The fake's routes: the API under ``/api``, the control API under ``/__fake__``."""

    def authorized(request: Request) -> bool:
        return (not fake.revoked
                and request.headers.get("authorization") == f"Bearer {fake.api_key}")

    async def list_orders(request: Request) -> Response:
        if not authorized(request):
            return _refused(401, "unauthorized")
        try:
            after = parse_time(request.query_params["updated_after"])
            before = parse_time(request.query_params["updated_before"])
            page = int(request.query_params.get("page", "1"))
        except (KeyError, ValueError):
            return _refused(400, "bad query")
        wanted = request.query_params.get("status")
        with fake.lock:
            found = sorted((o for o in fake.orders.values()
                            if after <= o.updated_at <= before
                            and (wanted is None or o.status == wanted)),
                           key=lambda o: (o.updated_at, o.order_id))
            rows = [o.to_json() for o in found[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]]
        return JSONResponse({"orders": rows, "has_more": len(found) > page * PAGE_SIZE})

    async def get_order(request: Request) -> Response:
        if not authorized(request):
            return _refused(401, "unauthorized")
        with fake.lock:
            order = fake.orders.get(request.path_params["oid"])
            return JSONResponse(order.to_json()) if order else _refused(404, "no such order")

    async def ship(request: Request) -> Response:
        if not authorized(request):
            return _refused(401, "unauthorized")
        oid = request.path_params["oid"]
        payload = await request.json()
        received = time.time()
        with fake.lock:
            order = fake.orders.get(oid)
            if order is None:
                outcome, answer = "refused: no such order", _refused(404, "no such order")
            elif order.status == "shipped":
                outcome, answer = "refused: already shipped", _refused(409, "already_shipped")
            elif order.status != "paid":
                outcome, answer = "refused: closed", _refused(410, "closed")
            else:
                order.ship()
                outcome, answer = "applied", JSONResponse({"shipped": True})
        fake.writebacks.record("ship", oid, {"line_ids": ",".join(payload.get("line_ids", [])),
                                             "note": payload.get("note")}, outcome,
                               received_at=received)
        return answer

    async def memo(request: Request) -> Response:
        if not authorized(request):
            return _refused(401, "unauthorized")
        oid = request.path_params["oid"]
        text = (await request.json()).get("memo")
        with fake.lock:
            order = fake.orders.get(oid)
            if order is not None:
                order.memo = text
        outcome = "applied" if order is not None else "refused: no such order"
        fake.writebacks.record("memo", oid, {"memo": text}, outcome)
        return JSONResponse({"ok": True}) if order is not None else _refused(404, "no such order")

    async def shop(request: Request) -> Response:
        return JSONResponse({"ok": True}) if authorized(request) else _refused(401, "unauthorized")

    async def state(request: Request) -> Response:
        return JSONResponse(fake.state())

    async def create(request: Request) -> Response:
        body = await request.json()
        oid = fake.create_order(str(body.get("sku", "ACME-SKU")), int(body.get("quantity", 1)))
        return JSONResponse({"id": oid})

    return Starlette(routes=[
        Route("/api/orders", list_orders),
        Route("/api/orders/{oid}", get_order),
        Route("/api/orders/{oid}/ship", ship, methods=["POST"]),
        Route("/api/orders/{oid}/memo", memo, methods=["POST"]),
        Route("/api/shop", shop),
        Route("/__fake__/state", state),
        Route("/__fake__/orders", create, methods=["POST"]),
    ])
