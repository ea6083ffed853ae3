"""The Douyin connector through the real pipeline over loopback HTTP, on every supported
database: a multi-line order is taken in, each line allocated from its own pool, and each
sub-order synced its own codes (coupons.syncV2) — the plaintext the buyer sees on Douyin,
handed over once per attempt and audited with the codes masked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from connectors.douyin.harness import DouyinHarness, make_harness
from robot.schema import audit_log, deliveries, order_lines, orders
from robot.vault import Vault, mask
from tests.douyin.helpers import (
    SHOP,
    deliver,
    shop_connector,
    stock_pools,
    take_in_by_push,
    two_line_order,
)


@pytest.fixture
def harness() -> Iterator[DouyinHarness]:
    with make_harness() as h:
        yield h


def test_multi_line_order_gets_each_line_its_codes_in_the_buyer_view(
        engine: Engine, vault: Vault, harness: DouyinHarness, tmp_path: Path) -> None:
    """Two sub-orders (2 plain codes, 1 number / PIN pair): each line is allocated from its
    pool, each sub-order holds exactly its line's codes in the buyer's view, the order is
    shipped once, and the hand-over is audited with the codes masked."""
    codes, pairs = stock_pools(engine, vault, tmp_path)
    oid = two_line_order(harness)
    connector = shop_connector(engine, vault, harness)

    async def scenario() -> None:
        await take_in_by_push(engine, connector, harness, oid)
        await take_in_by_push(engine, connector, harness, oid)  # pushed twice: one order
        await deliver(engine, vault, connector)
        await connector.aclose()

    asyncio.run(scenario())
    with engine.connect() as conn:
        state = conn.execute(select(orders.c.id, orders.c.state)
                             .where(orders.c.shop == SHOP.name)).all()
        per_line = conn.execute(select(order_lines.c.line_id, deliveries.c.n)
                                .join(deliveries, (deliveries.c.order_id == order_lines.c.order_id)
                                      & (deliveries.c.line_no == order_lines.c.line_no))).all()
        handed = [json.loads(r.details) for r in conn.execute(
            select(audit_log.c.details).where(audit_log.c.action == "hand_over"))]
    assert [s.state for s in state] == ["shipped"]
    view = harness.fake.buyer_view(oid)
    first, second = view[0], view[1]
    assert len(first["certificates"]) == 2
    assert all(c["cert_no"] in codes and "cert_key" not in c for c in first["certificates"])
    assert len({c["cert_no"] for c in first["certificates"]}) == 2
    (pair,) = second["certificates"]
    assert (pair["cert_no"], pair["cert_key"]) in pairs
    assert sorted(line for line, _n in per_line) == sorted(
        [first["sub_order_id"]] * 2 + [second["sub_order_id"]])
    assert harness.shipments(oid) == 1
    shown = [c["cert_no"] for c in first["certificates"]]
    assert handed == [{"shop": SHOP.name, "attempt": 1,
                       "codes": [*(mask(c) for c in shown),
                                 mask(f"{pair['cert_no']}\x1f{pair['cert_key']}")]}]


def test_a_second_write_back_is_refused_by_douyin_and_counts_as_shipped(
        engine: Engine, vault: Vault, harness: DouyinHarness, tmp_path: Path) -> None:
    """When the order was synced but our outcome was lost, the repeated write-back sends the
    very same certificates, which Douyin refuses as already processed (000008) for every
    sub-order: the robot records the order shipped, with the buyer's view unchanged."""
    stock_pools(engine, vault, tmp_path)
    oid = two_line_order(harness)
    connector = shop_connector(engine, vault, harness)
    lost = {"armed": True}
    original = connector.ship

    async def ship_and_lose_the_answer(shipment):  # type: ignore[no-untyped-def]
        outcome = await original(shipment)
        if lost["armed"]:
            lost["armed"] = False
            raise TimeoutError  # the answer never reached us: the job is retried
        return outcome

    connector.ship = ship_and_lose_the_answer  # type: ignore[method-assign]

    async def scenario() -> None:
        await take_in_by_push(engine, connector, harness, oid)
        await deliver(engine, vault, connector)
        await connector.aclose()

    asyncio.run(scenario())
    with engine.connect() as conn:
        assert conn.execute(select(orders.c.state)).scalar_one() == "shipped"
        attempts = conn.execute(select(audit_log.c.details)
                                .where(audit_log.c.action == "hand_over")).all()
    assert len(attempts) == 2  # each attempt that handed the codes over is audited
    ships = [c.outcome for c in harness.fake.writebacks.calls if c.kind == "ship"]
    assert ships[:2] == ["applied", "applied"]
    assert all("000008" in o for o in ships[2:]) and len(ships) == 4
    assert harness.shipments(oid) == 1
