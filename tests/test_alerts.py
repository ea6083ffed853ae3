"""Alerts: each kind fires once when its condition starts and once when it clears.

Readings come from the real database (every backend); messages go to a MemoryNotifier, and
one test sends through apprise's ``json://`` to a receiver on loopback.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr
from sqlalchemy import Engine, delete, insert, select, update

import robot.cli
from robot import audit, shops
from robot.alerts import AlertEngine, AppriseNotifier, MemoryNotifier, active_alerts, evaluate
from robot.cli.common import App
from robot.clock import DEFAULT_ZONE
from robot.config import AlertsConfig
from robot.schema import alert_state, audit_log, deliveries, orders, pools, shop_state, stock
from robot.vault import Vault
from tests.factories import ensure_pool, seed_codes

T0 = datetime(2026, 3, 1, 12, 0, 0)
LATER = timedelta(minutes=11)  # past the default min_interval (10 min)
_ids = iter(range(1, 1_000_000))


def _engine(engine: Engine, notifier: MemoryNotifier, **settings: object) -> AlertEngine:
    return AlertEngine(engine, notifier, AlertsConfig.model_validate(settings))


def _titles(notifier: MemoryNotifier) -> list[str]:
    return [title for title, _ in notifier.sent]


def _add_order(engine: Engine, state: str, *, shop: str = "shop-a") -> int:
    with engine.begin() as conn:
        return int(conn.execute(insert(orders).values(
            shop=shop, platform="memory", platform_order_id=f"o-{next(_ids)}", state=state,
            platform_status="paid", total_cents=1000, received_at=T0, updated_at=T0, due_at=T0,
        )).inserted_primary_key[0])


def _set_orders(engine: Engine, state: str, to: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(orders).where(orders.c.state == state).values(state=to))


def _sell(engine: Engine, pool: str, n: int, at: datetime) -> None:
    """Move ``n`` codes of ``pool`` from stock to a delivered order (sales for days of cover)."""
    oid = _add_order(engine, "shipped")
    with engine.begin() as conn:
        pid = conn.execute(select(pools.c.id).where(pools.c.name == pool)).scalar_one()
        ids = [int(r[0]) for r in conn.execute(
            select(stock.c.code_id).where(stock.c.pool_id == pid).limit(n))]
        conn.execute(delete(stock).where(stock.c.code_id.in_(ids)))
        conn.execute(insert(deliveries), [
            {"order_id": oid, "line_no": 0, "n": i, "code_id": cid, "pool_id": pid,
             "state": "delivered", "created_at": at} for i, cid in enumerate(ids)])


def _set_low_stock(engine: Engine, pool: str, threshold: int | None) -> None:
    with engine.begin() as conn:
        conn.execute(update(pools).where(pools.c.name == pool).values(low_stock=threshold))


def _shop(engine: Engine, name: str, **values: object) -> None:
    shops.ensure_row(engine, name)
    with engine.begin() as conn:
        conn.execute(update(shop_state).where(shop_state.c.shop == name).values(**values))


def _fires_then_clears(alerts: AlertEngine, notifier: MemoryNotifier, key_title: str,
                       start: object, clear: object) -> None:
    """Shared shape: quiet, start (one message), steady (none), clear (one), steady (none)."""
    assert alerts.run_once(T0) == [] and notifier.sent == []
    assert callable(start) and callable(clear)
    start()
    sent = alerts.run_once(T0 + timedelta(minutes=1))
    assert [(s.active) for s in sent] == [True]
    assert _titles(notifier) == [f"[robot] ALERT: {key_title}"]
    assert alerts.run_once(T0 + timedelta(minutes=2)) == []
    clear()
    sent = alerts.run_once(T0 + timedelta(minutes=1) + LATER)
    assert [(s.active) for s in sent] == [False]
    assert _titles(notifier) == [f"[robot] ALERT: {key_title}", f"[robot] resolved: {key_title}"]
    assert alerts.run_once(T0 + 2 * LATER) == []
    assert len(notifier.sent) == 2


def test_low_stock_threshold_fires_once_and_clears_once(engine: Engine, vault: Vault) -> None:
    """A pool at or below its low_stock threshold alerts once; restocking resolves it once."""
    seed_codes(engine, vault, "gift-100", 3)
    notifier = MemoryNotifier()
    _fires_then_clears(_engine(engine, notifier), notifier, "low stock in pool gift-100",
                       lambda: _set_low_stock(engine, "gift-100", 5),
                       lambda: seed_codes(engine, vault, "gift-100", 10))
    assert "3 available (alert at 5 or fewer)" in notifier.sent[0][1]


def test_low_days_of_cover_fires_once_and_clears_once(engine: Engine, vault: Vault) -> None:
    """Stock lasting fewer than alerts.low_cover_days at last week's rate alerts, then clears."""
    seed_codes(engine, vault, "gift-50", 20)
    notifier = MemoryNotifier()
    _fires_then_clears(_engine(engine, notifier, low_cover_days=3),
                       notifier, "low stock in pool gift-50",
                       lambda: _sell(engine, "gift-50", 15, T0),  # 5 left: 2.3 days
                       lambda: seed_codes(engine, vault, "gift-50", 30))
    assert "2.3 days of cover at last week's rate (15 sold" in notifier.sent[0][1]


@pytest.mark.parametrize("state", ["failed", "held", "waiting_stock"])
def test_orders_needing_attention_fire_once_and_clear_once(engine: Engine, state: str) -> None:
    """More failed / held / waiting orders than the threshold alerts; fewer resolves it."""
    _add_order(engine, state)  # at the threshold below: no alert yet
    notifier = MemoryNotifier()
    _fires_then_clears(_engine(engine, notifier, **{f"{state}_above": 1}), notifier,
                       f"orders {state.replace('_', ' ')}",
                       lambda: _add_order(engine, state),
                       lambda: _set_orders(engine, state, "shipped"))
    assert f"2 orders are {state}" in notifier.sent[0][1]


def test_paused_shop_fires_once_and_clears_once(engine: Engine) -> None:
    """A paused shop alerts once with its reason; resuming it resolves the alert once."""
    _shop(engine, "shop-a", last_poll_ok_at=T0)
    notifier = MemoryNotifier()
    _fires_then_clears(
        _engine(engine, notifier), notifier, "shop shop-a paused",
        lambda: _shop(engine, "shop-a", paused=True, paused_reason="authorization expired"),
        lambda: _shop(engine, "shop-a", paused=False, paused_reason=None,
                      last_poll_ok_at=T0 + LATER))
    assert "authorization expired" in notifier.sent[0][1]


def test_poll_lag_fires_once_and_clears_once(engine: Engine) -> None:
    """A shop not polled successfully for longer than alerts.poll_lag alerts, then clears."""
    _shop(engine, "shop-a", last_poll_ok_at=T0)
    notifier = MemoryNotifier()
    alerts = _engine(engine, notifier, poll_lag="90s")
    assert alerts.run_once(T0 + timedelta(seconds=60)) == []
    assert [s.key for s in alerts.run_once(T0 + timedelta(seconds=120))] == ["poll_lag:shop-a"]
    assert alerts.run_once(T0 + timedelta(seconds=180)) == []
    _shop(engine, "shop-a", last_poll_ok_at=T0 + timedelta(seconds=120) + LATER)
    sent = alerts.run_once(T0 + timedelta(seconds=120) + LATER)
    assert [(s.key, s.active) for s in sent] == [("poll_lag:shop-a", False)]
    assert _titles(notifier) == ["[robot] ALERT: shop shop-a not polled",
                                 "[robot] resolved: shop shop-a not polled"]


def test_shop_alerts_only_for_configured_shops(engine: Engine) -> None:
    """A paused shop that is no longer configured raises no alert."""
    _shop(engine, "gone", paused=True, paused_reason="permission lost")
    _shop(engine, "kept", last_poll_ok_at=T0)
    notifier = MemoryNotifier()
    alerts = AlertEngine(engine, notifier, AlertsConfig(), shops=["kept"])
    assert alerts.run_once(T0) == []
    assert notifier.sent == []


def test_expiring_codes_fire_once_and_clear_once(engine: Engine, vault: Vault) -> None:
    """Available codes expiring within alerts.expiring_days alert; no plaintext in messages."""
    plain = seed_codes(engine, vault, "gift-10", 2, expires_at=T0 + timedelta(days=30))
    notifier = MemoryNotifier()
    _fires_then_clears(_engine(engine, notifier, expiring_days=3), notifier,
                       "codes expiring in pool gift-10",
                       lambda: plain.extend(seed_codes(engine, vault, "gift-10", 1,
                                                       expires_at=T0 + timedelta(days=2))),
                       lambda: _delete_soon(engine, T0 + timedelta(days=3)))
    assert "1 available codes expire within 3 days" in notifier.sent[0][1]
    for title, body in notifier.sent:
        assert not any(code in title or code in body for code in plain)


def _delete_soon(engine: Engine, before: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(delete(stock).where(stock.c.expires_at <= before))


def test_broken_audit_chain_fires_once_and_clears_once(engine: Engine) -> None:
    """An altered audit entry alerts once; restoring it resolves the alert once."""
    with engine.begin() as conn:
        for i in range(3):
            audit.append(conn, actor="test", action="import", subject=f"batch:{i}")
    with engine.connect() as conn:
        original = conn.execute(select(audit_log.c.subject).where(audit_log.c.seq == 2)).scalar()

    def tamper(subject: str) -> None:
        with engine.begin() as conn:
            conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(subject=subject))

    notifier = MemoryNotifier()
    _fires_then_clears(_engine(engine, notifier, audit_every="1m"), notifier,
                       "audit chain broken", lambda: tamper("batch:forged"),
                       lambda: tamper(str(original)))
    assert "entry 2 was altered" in notifier.sent[0][1]


def test_audit_chain_checked_at_most_every_audit_every(engine: Engine) -> None:
    """Between audit checks, a broken chain is not seen (and not wrongly cleared either)."""
    with engine.begin() as conn:
        audit.append(conn, actor="test", action="import", subject="batch:1")
    notifier = MemoryNotifier()
    alerts = _engine(engine, notifier)  # audit_every: 1h
    assert alerts.run_once(T0) == []
    with engine.begin() as conn:
        conn.execute(update(audit_log).values(subject="forged"))
    assert alerts.run_once(T0 + timedelta(minutes=59)) == []
    assert [s.key for s in alerts.run_once(T0 + timedelta(minutes=60))] == ["audit:chain"]
    assert [s.key for s in alerts.run_once(T0 + timedelta(minutes=61))] == []


def test_flapping_condition_is_rate_limited(engine: Engine, vault: Vault) -> None:
    """On/off every minute sends one start, then one clear once min_interval has passed."""
    seed_codes(engine, vault, "gift-1", 3)
    notifier = MemoryNotifier()
    alerts = _engine(engine, notifier, min_interval="10m")
    for minute in range(15):
        _set_low_stock(engine, "gift-1", 5 if minute % 2 == 0 else None)
        alerts.run_once(T0 + timedelta(minutes=minute))
    # Started at minute 0; off at 1, 3, ... 9 is held back; off at 11 is >= 10 min later.
    assert _titles(notifier) == ["[robot] ALERT: low stock in pool gift-1",
                                 "[robot] resolved: low stock in pool gift-1"]
    _set_low_stock(engine, "gift-1", 5)
    alerts.run_once(T0 + timedelta(minutes=16))  # on again within 10 min of the clear
    assert len(notifier.sent) == 2
    alerts.run_once(T0 + timedelta(minutes=21))  # now it may be told
    assert _titles(notifier)[-1] == "[robot] ALERT: low stock in pool gift-1"
    assert len(notifier.sent) == 3


def test_two_engines_send_each_transition_once(engine: Engine, vault: Vault) -> None:
    """Two processes' engines on one database: each start and each clear is sent once."""
    seed_codes(engine, vault, "gift-2", 1)
    ensure_pool(engine, "gift-2")
    first, second = MemoryNotifier(), MemoryNotifier()
    a, b = _engine(engine, first), _engine(engine, second)
    _set_low_stock(engine, "gift-2", 5)
    a.run_once(T0)
    b.run_once(T0)
    assert len(first.sent) + len(second.sent) == 1
    seed_codes(engine, vault, "gift-2", 10)
    b.run_once(T0 + LATER)
    a.run_once(T0 + LATER)
    assert len(first.sent) + len(second.sent) == 2
    assert [t for t, _ in first.sent + second.sent] == [
        "[robot] ALERT: low stock in pool gift-2", "[robot] resolved: low stock in pool gift-2"]


def test_racing_claims_on_stale_reads_send_once(engine: Engine, vault: Vault) -> None:
    """Engines that both read the old state before either claims: only one UPDATE wins."""
    seed_codes(engine, vault, "gift-3", 1)
    _set_low_stock(engine, "gift-3", 5)
    engines = [_engine(engine, MemoryNotifier()) for _ in range(3)]
    [cond] = [c for c in evaluate(engine, AlertsConfig(), T0) if c.key == "low_stock:gift-3"]
    assert [e._claim(cond, None, T0) for e in engines].count(True) == 1
    seed_codes(engine, vault, "gift-3", 10)
    [clear] = [c for c in evaluate(engine, AlertsConfig(), T0 + LATER)
               if c.key == "low_stock:gift-3"]
    with engine.connect() as conn:
        row = conn.execute(select(alert_state)).one()  # what every engine read before claiming
    assert [e._claim(clear, row, T0 + LATER) for e in engines].count(True) == 1


def test_failed_send_is_logged_and_not_repeated(engine: Engine, vault: Vault) -> None:
    """A target that refuses the message does not make the alert repeat every minute."""
    seed_codes(engine, vault, "gift-4", 1)
    _set_low_stock(engine, "gift-4", 5)
    notifier = MemoryNotifier(fail=True)
    alerts = _engine(engine, notifier)
    assert [s.key for s in alerts.run_once(T0)] == ["low_stock:gift-4"]
    assert alerts.run_once(T0 + LATER) == []
    assert [a["key"] for a in active_alerts(engine)] == ["low_stock:gift-4"]


# --- apprise over loopback -----------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    posts: list[tuple[str, dict[str, object]]]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        self.server.posts.append((self.path, body))  # type: ignore[attr-defined]
        self.send_response(500 if self.path.startswith("/refuse") else 200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass  # keep test output clean


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    """An HTTP server on loopback recording JSON posts (apprise's json:// target)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.posts = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


def test_apprise_json_target_receives_alert(engine: Engine, vault: Vault,
                                            receiver: ThreadingHTTPServer) -> None:
    """Through real apprise, a started alert reaches a json:// target on loopback."""
    port = receiver.server_address[1]
    notifier = AppriseNotifier([SecretStr(f"json://127.0.0.1:{port}/hook")])
    seed_codes(engine, vault, "gift-5", 1)
    _set_low_stock(engine, "gift-5", 5)
    alerts = AlertEngine(engine, notifier, AlertsConfig())
    assert [s.key for s in alerts.run_once(T0)] == ["low_stock:gift-5"]
    posts = receiver.posts  # type: ignore[attr-defined]
    assert [(p, b["title"]) for p, b in posts] == [
        ("/hook", "[robot] ALERT: low stock in pool gift-5")]
    assert "1 available" in posts[0][1]["message"]


@pytest.fixture
def cli_app(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    """The CLI, talking to the test database instead of a configured one."""
    robot.cli._register()
    app = App(config_path=tmp_path / "robot.yaml")
    app._engine = engine
    app.zone = DEFAULT_ZONE  # no robot file: its default timezone
    monkeypatch.setattr(robot.cli, "App", lambda config_path: app)
    return app


def test_cli_alerts_test_reports_each_target(cli_app: App, tmp_path: Path,
                                             receiver: ThreadingHTTPServer) -> None:
    """`robot alerts test` sends to each target, reports which failed, and hides tokens."""
    port = receiver.server_address[1]
    (tmp_path / "robot.yaml").write_text(
        "shops: []\nalerts:\n  targets:\n"
        f"    - json://bot:TOKEN123secret@127.0.0.1:{port}/ok\n"
        f"    - json://bot:TOKEN456secret@127.0.0.1:{port}/refuse\n", encoding="utf-8")
    result = CliRunner().invoke(robot.cli.cli, ["alerts", "test", "--json"])
    assert result.exit_code == 1, result.output
    reported = json.loads(result.stdout)
    assert [r["ok"] for r in reported] == [True, False]
    assert "secret" not in result.output
    paths = sorted(p for p, _ in receiver.posts)  # type: ignore[attr-defined]
    assert paths == ["/ok", "/refuse"]


def test_cli_alerts_list_shows_active_alerts(cli_app: App, engine: Engine,
                                             vault: Vault) -> None:
    """`robot alerts list --json` shows the alerts that are on, and only those."""
    seed_codes(engine, vault, "gift-6", 1)
    _set_low_stock(engine, "gift-6", 5)
    _add_order(engine, "held")
    AlertEngine(engine, MemoryNotifier(), AlertsConfig()).run_once(T0)
    result = CliRunner().invoke(robot.cli.cli, ["alerts", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert sorted(a["key"] for a in json.loads(result.stdout)) == [
        "low_stock:gift-6", "orders:held"]


def test_alert_settings_default_and_parse_durations() -> None:
    """Existing configs stay valid; durations take '5m' / '1h' like the rest of the file."""
    default = AlertsConfig()
    assert (default.min_interval, default.audit_every, default.low_cover_days) == (
        600.0, 3600.0, None)
    custom = AlertsConfig.model_validate({"poll_lag": "5m", "audit_every": "2h",
                                          "min_interval": 30, "expiring_days": 3})
    assert (custom.poll_lag, custom.audit_every, custom.min_interval) == (300.0, 7200.0, 30.0)


def test_daemon_sends_alerts_through_its_scheduled_job(tmp_path: Path,
                                                       receiver: ThreadingHTTPServer,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`robot run`'s scheduler evaluates alerts: a held order reaches the json:// target."""
    import asyncio
    import uuid

    from connectors.memory import MemoryPlatform
    from robot import alerts as alerts_module
    from robot.config import load_config
    from robot.daemon import Robot
    from tests.factories import paid_order
    from tests.test_daemon import wait_for, write_config

    monkeypatch.setattr(alerts_module, "CHECK_INTERVAL", 0.2)
    name = f"alerts-{uuid.uuid4().hex}"
    config_path = write_config(tmp_path, name)
    port = receiver.server_address[1]
    with config_path.open("a") as fh:
        fh.write(f"alerts:\n  targets:\n    - json://127.0.0.1:{port}/hook\n")
    MemoryPlatform.named(name).put_order(paid_order("UNMAPPED-1", ("no-such-sku", 1)))
    posts = receiver.posts  # type: ignore[attr-defined]

    async def scenario() -> int:
        robot = Robot(load_config(config_path), drain_timeout=5)
        await asyncio.to_thread(robot.prepare)
        task = asyncio.create_task(robot.run(install_signals=False))
        await wait_for(lambda: any("held" in str(b["title"]) for _, b in posts))
        robot.stop()
        return await task

    assert asyncio.run(scenario()) == 0
    titles = [str(b["title"]) for _, b in posts]
    assert sum("held" in t for t in titles) == 1  # once, not on every check
