"""Push intake: verified pushes become orders exactly once; anything else writes nothing."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

from connectors.base import DEFAULT_PUSH_WINDOW, PushBatch, PushEvent, push_window
from connectors.memory import TEST_PUSH_SECRET, MemoryConnector, order_to_json, sign_push
from connectors.wechat.client import WechatConnector
from connectors.youzan.client import YouzanConnector
from robot.db import make_engine
from robot.http.hooks import ANSWER_SHARE
from robot.schema import deliveries, orders, push_seen
from robot.vault import Vault
from tests.factories import paid_order, seed_codes
from tests.http.conftest import Http, make_http


def signed(body: bytes) -> dict[str, str]:
    return {"X-Memory-Sign": sign_push(TEST_PUSH_SECRET, body), "Content-Type": "application/json"}


def message(order_id: str, message_id: str = "m-1") -> bytes:
    return json.dumps({"message_id": message_id,
                       "order": order_to_json(paid_order(order_id, ("s1", 1)))}).encode()


def order_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(orders)).scalar_one())


def test_good_push_creates_the_order_and_wakes_the_allocator(http: Http) -> None:
    """A correctly signed push is committed as an order, with its codes claimed in the same
    transaction, before the platform's reply."""
    body = message("P1")
    response = http.client.post("/hooks/mem", content=body, headers=signed(body))
    assert response.status_code == 200
    assert response.content == b'{"ok":true}'
    with http.engine.connect() as conn:
        row = conn.execute(select(orders.c.platform_order_id, orders.c.state)).one()
        seen = conn.execute(select(push_seen.c.shop, push_seen.c.message_id)).all()
    assert tuple(row) == ("P1", "allocated")
    assert [tuple(s) for s in seen] == [("mem", "m-1")]
    with http.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 1
    assert http.woken


def test_push_allocated_at_intake_wakes_the_shipper_only(engine: Engine, vault: Vault) -> None:
    """With the daemon's ``wake_for``, a push whose order was allocated at intake hands the
    loops its order's state (allocated: the shipper's work alone, no empty allocator or
    sourcing round); a push that changed nothing wakes nobody."""
    seed_codes(engine, vault, "p1", 10)
    states: list[list[str]] = []
    h = make_http(engine, vault, wake_for=lambda t: states.append([r.state for r in t]))
    with h.client:
        body = message("W1", "m-w1")
        assert h.client.post("/hooks/mem", content=body, headers=signed(body)).status_code == 200
        assert h.client.post("/hooks/mem", content=body, headers=signed(body)).status_code == 200
    assert states == [["allocated"]]  # the replay changed nothing: no wake-up at all
    assert h.woken == []  # wake_for given: the catch-all wake is not used


def test_replayed_push_makes_one_order(http: Http) -> None:
    """The same message twice, or the same order under a new message id, is one order."""
    body = message("P3", "m-3")
    for _ in range(3):
        assert http.client.post("/hooks/mem", content=body, headers=signed(body)).status_code == 200
    again = message("P3", "m-3-bis")
    assert http.client.post("/hooks/mem", content=again, headers=signed(again)).status_code == 200
    assert order_count(http.engine) == 1
    with http.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(push_seen)).scalar_one() == 2


def test_push_and_its_message_record_commit_together(http: Http, monkeypatch: Any) -> None:
    """The order and the record that its message was applied are one transaction: when the
    record cannot be written, the order is not kept either, and the push is refused (503)
    until both can be stored."""
    from robot import poller

    def broken(*_args: object) -> None:
        raise RuntimeError("record refused")

    monkeypatch.setattr(poller, "_mark_in", broken)
    body = message("P9", "m-9")
    assert http.client.post("/hooks/mem", content=body, headers=signed(body)).status_code == 503
    assert order_count(http.engine) == 0
    monkeypatch.undo()
    assert http.client.post("/hooks/mem", content=body, headers=signed(body)).status_code == 200
    assert order_count(http.engine) == 1
    with http.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(push_seen)).scalar_one() == 1


class ThinConnector(MemoryConnector):
    """Pushes that carry only the order id (the core must fetch the order)."""

    def parse_push(self, headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
        batch = super().parse_push(headers, body, now)
        return PushBatch(events=tuple(PushEvent(e.kind, e.platform_order_id, e.message_id)
                                      for e in batch.events), reply_body=b"success",
                         reply_content_type="text/plain")


def test_thin_push_fetches_the_order_and_platform_failure_is_503(engine: Engine,
                                                                 vault: Vault) -> None:
    """A thin message is completed from the platform; if that fails, 503 and no order."""
    seed_codes(engine, vault, "p1", 2)
    h = make_http(engine, vault)
    h.ctx.connectors = {"mem": ThinConnector(h.platform)}  # type: ignore[misc]
    h.platform.put_order(paid_order("T1", ("s1", 1)))
    body = message("T1", "thin-1")
    h.platform.inject("fetch", "unavailable")
    with h.client:
        assert h.client.post("/hooks/mem", content=body, headers=signed(body)).status_code == 503
        assert order_count(engine) == 0
        response = h.client.post("/hooks/mem", content=body, headers=signed(body))
    assert response.status_code == 200
    assert response.text == "success"
    assert order_count(engine) == 1


class QuickConnector(MemoryConnector):
    """A platform that waits one second for a push's answer."""

    push_window: ClassVar[float] = 1.0


@contextmanager
def orders_locked(engine: Engine, db_url: str) -> Iterator[None]:
    """Another connection holds a write lock on ``orders`` (SQLite: on the database)."""
    if engine.dialect.name == "sqlite":
        raw = sqlite3.connect(str(make_url(db_url).database), isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            raw.execute("ROLLBACK")
            raw.close()
        return
    locker = make_engine(db_url)
    try:
        with locker.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"))
            else:
                conn.execute(text("LOCK TABLES orders WRITE"))
            try:
                yield
            finally:
                if engine.dialect.name != "postgresql":
                    conn.execute(text("UNLOCK TABLES"))
                conn.rollback()
    finally:
        locker.dispose()


def test_push_on_a_locked_database_is_refused_in_time_and_its_retry_taken_in_once(
        engine: Engine, vault: Vault, db_url: str) -> None:
    """With the orders table locked by another connection, a push is answered within its
    platform's window with a refusal (never a 2xx for what is not stored); once the lock is
    gone, the platform's retry makes exactly one order with one claim."""
    seed_codes(engine, vault, "p1", 2)
    h = make_http(engine, vault)
    h.ctx.connectors = {"mem": QuickConnector(h.platform)}  # type: ignore[misc]
    body = message("L1", "lock-1")
    with h.client:
        with orders_locked(engine, db_url):
            started = time.monotonic()
            refused = h.client.post("/hooks/mem", content=body, headers=signed(body))
            took = time.monotonic() - started
        assert refused.status_code == 503
        assert refused.json()["error"] == "retry"
        assert took < QuickConnector.push_window
        # The abandoned attempt's database thread finishes (it may or may not commit).
        deadline = time.monotonic() + 60
        while engine.pool.checkedout():  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the abandoned attempt never finished"
            time.sleep(0.02)
        again = h.client.post("/hooks/mem", content=body, headers=signed(body))
        assert again.status_code == 200
        assert h.client.post("/hooks/mem", content=body, headers=signed(body)).status_code == 200
    assert order_count(engine) == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(push_seen)).scalar_one() == 1


def test_push_windows_are_declared_by_the_connectors() -> None:
    """Youzan and WeChat Pay answer within 5 s; a connector that says nothing gets 3 s."""
    assert push_window(YouzanConnector) == push_window(WechatConnector) == 5.0
    assert push_window(MemoryConnector) == DEFAULT_PUSH_WINDOW == 3.0
    assert ANSWER_SHARE * 5.0 < 5.0
