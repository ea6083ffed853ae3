"""Set-based allocation: orders taken in together claim their codes as a set (one claim
statement per pool for the batch), each order still all-or-none, earliest expiry first,
and no code is lost or given twice whatever the batch's units do."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, func, select

from connectors.base import PushEvent, PushKind
from connectors.memory import MemoryConfig, MemoryConnector, MemoryPlatform
from robot import poller
from robot.clock import utcnow
from robot.config import PoolShare, SkuMapping
from robot.groupcommit import GroupCommit, run_together
from robot.matcher import claim, claim_ahead
from robot.pipeline import intake_in, pool_needs
from robot.schema import deliveries, orders, pools, stock
from robot.vault import Vault
from tests.factories import paid_order, seed_codes
from tests.http.conftest import shop_config


def _claims(engine: Engine) -> list[str]:
    """The claim statements the engine runs from now on (each dialect's first statement of
    a claim: PostgreSQL's and SQLite's DELETE … RETURNING, MySQL's SELECT … FOR UPDATE)."""
    seen: list[str] = []

    def note(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        flat = " ".join(statement.split()).upper()
        mysql_second = flat.startswith("DELETE FROM STOCK WHERE STOCK.CODE_ID IN")
        if (flat.startswith(("DELETE FROM STOCK", "WITH C AS")) and not mysql_second) or (
                flat.startswith("SELECT STOCK.CODE_ID") and "FOR UPDATE" in flat):
            seen.append(flat)

    event.listen(engine, "before_cursor_execute", note)
    return seen


def _stock(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(int(r[0]) for r in conn.execute(select(stock.c.code_id)))


def _delivered(engine: Engine) -> dict[str, list[int]]:
    with engine.connect() as conn:
        rows = conn.execute(select(orders.c.platform_order_id, deliveries.c.code_id)
                            .join(deliveries, deliveries.c.order_id == orders.c.id))
        out: dict[str, list[int]] = {}
        for oid, cid in rows:
            out.setdefault(str(oid), []).append(int(cid))
        return out


def _state(engine: Engine, platform_order_id: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(orders.c.state).where(
            orders.c.platform_order_id == platform_order_id)).scalar_one())


def _by_expiry(engine: Engine) -> list[int]:
    """Every code in stock, earliest expiry first."""
    with engine.connect() as conn:
        return [int(r[0]) for r in conn.execute(
            select(stock.c.code_id).order_by(stock.c.expires_at, stock.c.code_id))]


def _seed_spread(engine: Engine, vault: Vault, pool: str, count: int) -> None:
    """``count`` codes whose expiries run backwards to their ids (so expiry order is not
    id order)."""
    for i in range(count):
        seed_codes(engine, vault, pool, 1, expires_at=utcnow() + timedelta(days=100 - i))


def test_pushes_taken_in_together_claim_once_per_pool(engine: Engine, vault: Vault) -> None:
    """Five pushes in one batch (one a copy, one the same order under a new message): one
    claim statement for the batch, three orders each given the next earliest-expiring code,
    and the two codes claimed for the copies put back in stock."""
    _seed_spread(engine, vault, "p1", 8)
    earliest = _by_expiry(engine)
    shop = shop_config()
    assert isinstance(shop.platform_config, MemoryConfig)
    connector = MemoryConnector(MemoryPlatform.named(shop.platform_config.name))
    group = GroupCommit(engine)
    claims = _claims(engine)

    def push(order_id: str, message_id: str) -> PushEvent:
        return PushEvent(PushKind.PAID, order_id, message_id,
                         paid_order(order_id, ("s1", 1), buyer=f"b-{order_id}"))

    events = [push("G1", "g-1"), push("G2", "g-2"), push("G1", "g-1"), push("G3", "g-3"),
              push("G3", "g-3-bis")]

    async def main() -> list[int]:
        return list(await asyncio.gather(*(
            poller.apply_events(engine, shop, connector, [e], group=group) for e in events)))

    assert sum(asyncio.run(main())) == 3
    assert (group.batches, group.units) == (1, 5)
    assert len(claims) == 1
    given = _delivered(engine)
    assert [given["G1"], given["G2"], given["G3"]] == [[earliest[0]], [earliest[1]],
                                                       [earliest[2]]]
    assert _stock(engine) == sorted(earliest[3:])


def test_a_unit_that_fails_gives_its_codes_back(engine: Engine, vault: Vault) -> None:
    """A unit that claims and then fails is rolled back alone: its codes go back to stock,
    its neighbours keep theirs, and the batch still claimed each pool in one statement per
    transaction (the plain one, rolled back, and the one with savepoints)."""
    _seed_spread(engine, vault, "p1", 6)
    before = _stock(engine)
    shop = shop_config().model_copy(update={"items": [
        SkuMapping(sku_id="s1", pools=[PoolShare(pool="p1", quantity=2)])]})
    claims = _claims(engine)

    def failing(conn: Connection) -> Any:
        intake_in(conn, shop, paid_order("F1", ("s1", 1), buyer="b-f"), allocate=True)
        raise RuntimeError("the unit broke after its claim")

    units: list[Callable[[Connection], Any]] = [
             functools.partial(_intake, shop, paid_order("A1", ("s1", 1), buyer="b-a")),
             failing,
             functools.partial(_intake, shop, paid_order("C1", ("s1", 1), buyer="b-c"))]
    wanted = [pool_needs(shop, paid_order(o, ("s1", 1))) for o in ("A1", "F1", "C1")]
    assert wanted[0] == {"p1": 2}
    outcomes = run_together(engine, units, wanted)
    assert [ok for ok, _v in outcomes] == [True, False, True]
    assert isinstance(outcomes[1][1], RuntimeError)
    given = _delivered(engine)
    assert set(given) == {"A1", "C1"}
    assert len(given["A1"]) == len(given["C1"]) == 2
    taken = given["A1"] + given["C1"]
    assert len(set(taken)) == 4
    assert _stock(engine) == sorted(set(before) - set(taken))
    assert len(claims) == 2


def test_short_stock_is_all_or_none_per_order_and_loses_nothing(engine: Engine,
                                                                vault: Vault) -> None:
    """Five orders of two codes each against five codes: the first two orders get theirs,
    the rest wait with nothing, and the code no order could use is back in stock."""
    _seed_spread(engine, vault, "p1", 5)
    earliest = _by_expiry(engine)
    shop = shop_config()
    ids = [f"S{i}" for i in range(5)]
    snaps = [paid_order(o, ("s1", 2), buyer=f"b-{o}") for o in ids]
    outcomes = run_together(engine, [functools.partial(_intake, shop, s) for s in snaps],
                            [pool_needs(shop, s) for s in snaps])
    assert all(ok for ok, _v in outcomes)
    given = _delivered(engine)
    assert given == {"S0": sorted(earliest[0:2]), "S1": sorted(earliest[2:4])}
    assert [_state(engine, o) for o in ids] == ["allocated", "allocated", "waiting_stock",
                                                "waiting_stock", "waiting_stock"]
    assert _stock(engine) == [earliest[4]]


def _intake(shop: Any, snap: Any, conn: Connection) -> Any:
    return intake_in(conn, shop, snap, allocate=True)


def test_a_claim_ahead_never_outlives_its_transaction(engine: Engine, vault: Vault) -> None:
    """Codes claimed ahead in a transaction that was rolled back are not handed out by a
    later transaction on the same connection: its claim takes them from stock again."""
    seed_codes(engine, vault, "p1", 3)
    now = utcnow()
    with engine.connect() as conn:
        pid = int(conn.execute(select(pools.c.id).where(pools.c.name == "p1")).scalar_one())
    claimed: list[int] = []

    def claim_then_fail() -> None:
        with engine.begin() as conn:
            claimed.append(claim_ahead(conn, {"p1": 3}, now))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        claim_then_fail()
    assert claimed == [3]
    with engine.begin() as conn:
        got = claim(conn, pid, 1, now)
    assert len(got) == 1
    assert got[0] not in _stock(engine)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(stock)).scalar_one() == 2
