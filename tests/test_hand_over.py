"""Codes handed to a platform that shows them to the buyer: only a connector that declares
``shows_codes`` gets them, only in a ship job, each with the order line it was allocated to,
wrapped so that no repr shows them; every attempt is audited with the codes masked."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import ClassVar
from urllib.parse import quote

from sqlalchemy import Engine, select

from connectors.base import Shipment, ShipOutcome, shows_codes
from connectors.memory import MemoryConnector, MemoryPlatform
from robot import pipeline, poolpage
from robot.clock import utcnow
from robot.outbox import Dispatcher, RetryPolicy
from robot.schema import audit_log
from robot.vault import Vault, mask
from tests.factories import Shop, ensure_pool, paid_order, seed_codes, sku

SHOP = Shop(items=(sku("s1", ("p1", 1)), sku("s2", ("p2", 2))))


class _Recording(MemoryConnector):
    """Keeps every shipment it was asked for."""

    def __init__(self, backend: MemoryPlatform) -> None:
        super().__init__(backend)
        self.shipments: list[Shipment] = []

    async def ship(self, shipment: Shipment) -> ShipOutcome:
        self.shipments.append(shipment)
        return await super().ship(shipment)


class _ShowsCodes(_Recording):
    shows_codes: ClassVar[bool] = True


def _ship_one(engine: Engine, vault: Vault, connector: _Recording) -> list[str]:
    """A two-line order (1 code of p1, 2 of p2) shipped through the outbox; its codes."""
    codes = seed_codes(engine, vault, "p1", 1) + seed_codes(engine, vault, "p2", 2)
    order = paid_order("H1", ("s1", 1), ("s2", 1))
    connector.backend.put_order(order)
    pipeline.intake(engine, SHOP, order, allocate=True)
    dispatcher = Dispatcher(engine, vault, {SHOP.name: connector}, {SHOP.name: SHOP},
                            RetryPolicy(), worker="w")
    for _ in range(3):  # the ship job, then its memo job
        asyncio.run(dispatcher.run_once(now=utcnow() + timedelta(minutes=1)))
    return codes


def _hand_overs(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [json.loads(r.details) for r in conn.execute(
            select(audit_log.c.details).where(audit_log.c.action == "hand_over"))]


def test_a_connector_that_shows_codes_gets_them_per_line(engine: Engine, vault: Vault) -> None:
    """The shipment carries each code with its line's id, plaintext only through reveal();
    the hand-over is audited with the masked codes."""
    connector = _ShowsCodes(MemoryPlatform())
    codes = _ship_one(engine, vault, connector)
    assert shows_codes(connector)
    (shipment,) = connector.shipments
    assert [(c.line_id, c.number.reveal()) for c in shipment.handed] == [
        ("H1-0", codes[0]), ("H1-1", codes[1]), ("H1-1", codes[2])]
    assert not any(code in repr(shipment) for code in codes)
    assert _hand_overs(engine) == [{"shop": SHOP.name, "attempt": 1,
                                    "codes": [mask(c) for c in codes]}]


def test_other_connectors_never_get_a_plaintext_code(engine: Engine, vault: Vault) -> None:
    """A connector that does not declare shows_codes ships with masked codes only, and
    nothing is audited as handed over."""
    connector = _Recording(MemoryPlatform())
    codes = _ship_one(engine, vault, connector)
    assert not shows_codes(connector)
    (shipment,) = connector.shipments
    assert shipment.handed == ()
    assert sorted(shipment.masked_codes) == sorted(mask(c) for c in codes)
    assert _hand_overs(engine) == []


def test_handed_codes_carry_their_pools_redemption_link(engine: Engine, vault: Vault) -> None:
    """A pool with a redemption link template: each of its codes is handed with the link (the
    code URL-encoded into it); a pool without one hands no link (the connector falls back to
    the pickup link)."""
    ensure_pool(engine, "p1")
    poolpage.set_page(engine, vault, "p1",
                      {"redeem_url": "https://redeem.example.invalid/x?c={code}"}, actor="test")
    connector = _ShowsCodes(MemoryPlatform())
    codes = _ship_one(engine, vault, connector)
    (shipment,) = connector.shipments
    assert [c.link for c in shipment.handed] == [
        "https://redeem.example.invalid/x?c=" + quote(codes[0], safe=""), None, None]
    assert not any(code in repr(shipment) for code in codes)
