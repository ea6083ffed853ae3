"""Per-shop state: polling leases (one shop or all at once) and what a poll reads first."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, select, update

from robot import shops
from robot.clock import utcnow
from robot.schema import shop_state

TTL = timedelta(seconds=10)


def owners(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return {r.shop: r.lease_owner for r in conn.execute(
            select(shop_state.c.shop, shop_state.c.lease_owner))}


def test_take_leases_takes_free_keeps_own_and_leaves_others(engine: Engine) -> None:
    """One renewal for every shop: free and expired leases are taken, ours renewed, a live
    lease of another process left alone; the answer is exactly the shops we lead."""
    for name in ("a", "b", "c", "d"):
        shops.ensure_row(engine, name)
    now = utcnow()
    assert shops.take_lease(engine, "b", "other", TTL, now=now)
    assert shops.take_lease(engine, "c", "other", TTL, now=now - 2 * TTL)  # expired since
    assert shops.take_lease(engine, "d", "me", TTL, now=now)

    led = shops.take_leases(engine, ["d", "c", "b", "a"], "me", TTL, now=now)

    assert led == {"a", "c", "d"}
    assert owners(engine) == {"a": "me", "b": "other", "c": "me", "d": "me"}
    with engine.connect() as conn:
        until = dict(conn.execute(select(shop_state.c.shop, shop_state.c.lease_until)).all())
    assert all(until[n] == now + TTL for n in ("a", "c", "d"))
    # The other process cannot take ours back before they expire, and gets none.
    assert shops.take_leases(engine, ["a", "b", "c", "d"], "other", TTL, now=now) == {"b"}
    assert shops.take_leases(engine, ["a"], "other", TTL, now=now + TTL * 1.5) == {"a"}


def test_poll_start_reads_pause_and_the_kinds_cursor(engine: Engine) -> None:
    """A poll's first read: the pause flag and the cursor of its own kind."""
    assert shops.poll_start(engine, "nowhere") == shops.PollStart(False, None)
    shops.ensure_row(engine, "s")
    assert shops.poll_start(engine, "s", "poll") == shops.PollStart(False, None)
    shops.save_poll(engine, "s", {"end": "2026-12-04T10:00:00"}, kind="poll")
    shops.save_poll(engine, "s", {"end": "2026-12-01T00:00:00"}, kind="refund")
    assert shops.poll_start(engine, "s", "poll").cursor == {"end": "2026-12-04T10:00:00"}
    assert shops.poll_start(engine, "s", "refund").cursor == {"end": "2026-12-01T00:00:00"}
    with engine.begin() as conn:
        conn.execute(update(shop_state).where(shop_state.c.shop == "s").values(paused=True))
    assert shops.poll_start(engine, "s", "refund") == shops.PollStart(
        True, {"end": "2026-12-01T00:00:00"})
