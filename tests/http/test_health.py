"""``/healthz``: 200 while the robot can do its job, 503 with reasons when it cannot."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert

from robot import audit, shops
from robot.clock import utcnow
from robot.db import make_engine
from robot.outbox import pause_shop
from robot.schema import metadata, orders, outbox
from robot.vault import Vault
from tests.http.conftest import make_http
from tests.http.test_hooks import message, signed
from tests.outage import FailingWrites, Switch, switchable_database


class Switchable:
    """An engine on a database a test can take away (``down``) and give back (``up``)."""

    def __init__(self, engine: Engine, switch: Switch) -> None:
        self.engine = engine
        self.down = switch.down
        self.up = switch.up


@pytest.fixture
def switchable(backend: str, db_url: str, tmp_path: Path) -> Iterator[Switchable]:
    """The test database behind a switch (a fresh SQLite file with the schema on SQLite)."""
    with switchable_database(backend, None if backend == "sqlite" else db_url,
                             tmp_path) as switch:
        engine = make_engine(switch.url)
        if backend == "sqlite":
            metadata.create_all(engine)
            with engine.begin() as conn:
                audit.ensure_head(conn)
        yield Switchable(engine, switch)
        engine.dispose()


def test_healthz_turns_503_when_the_database_goes_and_200_when_it_returns(
        switchable: Switchable, vault: Vault) -> None:
    """Database unreachable → 503 naming it; back → 200."""
    h = make_http(switchable.engine, vault)
    with h.client:
        first = h.client.get("/healthz")
        assert first.status_code == 200, first.json()
        assert first.json()["database"] == {"ok": True}
        switchable.down()
        down = h.client.get("/healthz")
        assert down.status_code == 503
        assert down.json()["database"]["ok"] is False
        assert "database unreachable" in down.json()["reasons"]
        switchable.up()
        back = h.client.get("/healthz")
        assert back.status_code == 200, back.json()


def test_stale_poll_is_unhealthy_until_a_poll_succeeds(engine: Engine, vault: Vault) -> None:
    """A shop with no successful poll for max(3×interval, 120 s) makes the robot unhealthy."""
    h = make_http(engine, vault, started_at=utcnow() - timedelta(minutes=10))
    with h.client:
        response = h.client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["shops"]["mem"]["stale"] is True
        shops.ensure_row(engine, "mem")
        shops.save_poll(engine, "mem", {"seq": 1})
        response = h.client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["shops"]["mem"]["last_poll_ok_age_s"] < 60


def test_paused_shop_is_reported_without_failing(engine: Engine, vault: Vault) -> None:
    """A paused shop shows as paused (no reason text) and does not turn the check red."""
    h = make_http(engine, vault, started_at=utcnow() - timedelta(hours=1))
    pause_shop(engine, "mem", "secret-ish platform message")
    with h.client:
        response = h.client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["shops"]["mem"]["paused"] is True
    assert "secret-ish" not in response.text


def test_broken_shops_and_overdue_write_backs_are_unhealthy(engine: Engine,
                                                            vault: Vault) -> None:
    """A shop whose connector failed, or ship jobs overdue > 5 min, give 503 with reasons."""
    h = make_http(engine, vault, broken_shops=lambda: {"tb": "TypeError: credential xyz"})
    with h.client:
        response = h.client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["broken_shops"] == ["tb"]
        assert "credential" not in response.text
        h.ctx.broken_shops = dict
        assert h.client.get("/healthz").status_code == 200
        now = utcnow()
        with engine.begin() as conn:
            oid = conn.execute(insert(orders).values(
                shop="mem", platform="memory", platform_order_id="O1", state="allocated",
                platform_status="paid", received_at=now, updated_at=now, due_at=now,
                total_cents=0, currency="CNY", extra="{}")).inserted_primary_key[0]
            conn.execute(insert(outbox).values(order_id=oid, kind="ship", state="pending",
                                               attempts=3, due_at=now - timedelta(minutes=6),
                                               created_at=now))
        response = h.client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["outbox_backlog"] == 1




def test_healthz_turns_503_at_the_first_failed_write_though_reads_answer(
        engine: Engine, vault: Vault) -> None:
    """Writes failing with EIO while SELECT 1 answers (a full or failing disk): /healthz is
    503 from the first failed write on, and 200 again after the next successful write."""
    fault = FailingWrites()
    fault.install(engine)
    h = make_http(engine, vault)
    body = message("H1", "h-1")
    with h.client:
        assert h.client.get("/healthz").status_code == 200
        fault.failing = True
        assert h.client.post("/hooks/mem", content=body, headers=signed(body)).status_code == 503
        down = h.client.get("/healthz")
        assert down.status_code == 503, down.json()
        assert down.json()["database"] == {"ok": True}  # reads still answer
        assert down.json()["database_writes"]["ok"] is False
        assert any(r.startswith("database writes failing") for r in down.json()["reasons"])
        fault.failing = False
        assert h.client.post("/hooks/mem", content=body, headers=signed(body)).status_code == 200
        back = h.client.get("/healthz")
        assert back.status_code == 200, back.json()
        assert "database_writes" not in back.json()
