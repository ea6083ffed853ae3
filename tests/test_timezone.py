"""The merchant's day, on every backend: every time shown is in the robot file's
``timezone:`` (to the second, JSON with the zone's offset), and every day boundary (report
days, ``--since DATE``, an import's date, the daily risk limit) is that zone's midnight, in a
zone without DST (Asia/Shanghai) and across DST changes (Europe/Berlin). Storage stays UTC."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result
from rich.console import Console
from sqlalchemy import Engine, insert, select, update

import robot.cli
from robot import alerts, pipeline, report
from robot.cli.common import App
from robot.clock import day_end, day_start, offset_changes
from robot.config import AlertsConfig
from robot.display import format_time, format_time_json, json_times
from robot.errors import UserError
from robot.http.handover import code_rows, views
from robot.importer import parse_expiry
from robot.reporthtml import HtmlReport, render, window_days
from robot.schema import codes, orders, shop_state, stock
from robot.vault import Vault
from tests.factories import Shop, paid_order, seed_codes, sku

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
SHOP_YAML = """name: mem
platform: memory
unmapped: hold
items:
  - {sku_id: s1, pool: p1}
platform_config: {name: tz-mem}
risk: {buyer_amount_per_day_yuan: 25.50}
"""
#: A time with microseconds: none of them may reach the screen.
PAID = datetime(2026, 12, 5, 17, 30, 0, 123456)
MICROSECONDS = re.compile(r"\.\d{6}")


@dataclass
class Robot:
    """A robot file with ``timezone:`` and one memory shop, driven through the CLI."""

    engine: Engine
    vault: Vault
    tmp: Path
    app: App

    def cli(self, *args: str) -> Result:
        robot.cli._register()
        result = CliRunner().invoke(robot.cli.cli, list(args), obj=self.app)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def order(self, number: str, paid: datetime, *, quantity: int = 1) -> int:
        """A shipped order of ``quantity`` s1 paid (and taken in) at ``paid`` (naive UTC)."""
        seed_codes(self.engine, self.vault, "p1", quantity)
        shop = self.app.config.shop("mem")
        result = pipeline.intake(self.engine, shop, paid_order(number, ("s1", quantity)),
                                 now=paid, allocate=True, zone=self.app.zone)
        assert result.order_id is not None
        with self.engine.begin() as conn:
            conn.execute(update(orders).where(orders.c.id == result.order_id).values(
                paid_at=paid, received_at=paid + timedelta(seconds=5, microseconds=500),
                shipped_at=paid + timedelta(seconds=60, microseconds=250), state="shipped"))
        return result.order_id


def make_robot(engine: Engine, vault: Vault, tmp_path: Path, db_url: str, key_file: Path,
               zone: str) -> Robot:
    (tmp_path / "shops").mkdir(exist_ok=True)
    (tmp_path / "robot.yaml").write_text(
        f"database: {db_url}\nkey_file: {key_file}\nshops: shops/*.yaml\ntimezone: {zone}\n")
    (tmp_path / "shops" / "mem.yaml").write_text(SHOP_YAML)
    app = App(config_path=tmp_path / "robot.yaml")
    app._engine = engine
    app.__dict__["console"] = Console(width=250, color_system=None)
    return Robot(engine, vault, tmp_path, app)


@pytest.fixture
def shanghai(engine: Engine, vault: Vault, tmp_path: Path, db_url: str,
             key_file: Path) -> Robot:
    return make_robot(engine, vault, tmp_path, db_url, key_file, "Asia/Shanghai")


@pytest.fixture
def berlin(engine: Engine, vault: Vault, tmp_path: Path, db_url: str, key_file: Path) -> Robot:
    return make_robot(engine, vault, tmp_path, db_url, key_file, "Europe/Berlin")


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """``robot report`` and ``codes export`` run on 2026-12-10 (after every order here)."""
    now = datetime(2026, 12, 10, 12, 0)
    from robot.cli import cmd_pools, cmd_report

    monkeypatch.setattr(cmd_report, "utcnow", lambda: now)
    monkeypatch.setattr(cmd_pools, "utcnow", lambda: now)
    return now


def _poll_ok(engine: Engine, at: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(insert(shop_state).values(shop="mem", last_poll_ok_at=at, paused=False,
                                               updated_at=at))


# ----------------------------------------------------------------------------- on screen


def test_every_screen_shows_the_shanghai_time_of_a_utc_evening_order(
        shanghai: Robot, frozen_now: datetime) -> None:
    """An order paid at 2026-12-05 17:30 UTC reads 2026-12-06 01:30 in status, orders list,
    show and find, and falls on day 2026-12-06 in the report (table and JSON)."""
    oid = shanghai.order("TZ-100001", PAID)
    _poll_ok(shanghai.engine, PAID)
    local = "2026-12-06 01:30:00"
    assert local in shanghai.cli("status").stdout
    listed = shanghai.cli("orders", "list").stdout
    assert local in listed and "2026-12-06 01:30:05" in listed and "Asia/Shanghai" in listed
    assert f"paid {local}" in shanghai.cli("orders", "show", str(oid)).stdout
    assert local in shanghai.cli("orders", "find", "TZ-100001").stdout
    assert shanghai.json("orders", "show", str(oid))["paid_at"] == "2026-12-06T01:30:00+08:00"
    assert shanghai.json("orders", "list")[0]["paid_at"] == "2026-12-06T01:30:00+08:00"
    found = shanghai.json("orders", "find", "TZ-100001")["matches"][0]
    assert found["paid_at"] == "2026-12-06T01:30:00+08:00"
    status = shanghai.json("status")
    assert status["shops"][0]["last_poll_ok_at"] == "2026-12-06T01:30:00+08:00"

    by_day = shanghai.json("report", "--since", "2026-12-01", "--by", "day")
    assert [r["key"] for r in by_day["rows"]] == ["2026-12-06"]
    assert by_day["since"] == "2026-12-01T00:00:00+08:00"
    assert by_day["timezone"] == "Asia/Shanghai"
    assert [r["key"] for r in by_day["paid_to_shipped"][:-1]] == ["2026-12-06"]
    table = shanghai.cli("report", "--since", "2026-12-01", "--by", "day").stdout
    assert "2026-12-06" in table and "2026-12-05" not in table
    assert "2026-12-01 00:00 to 2026-12-10 20:00 Asia/Shanghai" in table
    # Storage stays UTC.
    with shanghai.engine.connect() as conn:
        stored = conn.execute(select(orders.c.paid_at).where(orders.c.id == oid)).scalar_one()
    assert stored.replace(microsecond=0) == datetime(2026, 12, 5, 17, 30)


def test_report_days_follow_berlin_across_both_dst_changes(
        berlin: Robot, frozen_now: datetime) -> None:
    """Europe/Berlin is UTC+1 in winter and UTC+2 in summer: each order lands on its local
    day on both sides of the March and October changes (one offset for the whole window, or
    UTC days, would misplace some)."""
    paid = {
        "BER-000001": datetime(2026, 3, 28, 22, 30),  # 23:30 +01:00 → 03-28
        "BER-000002": datetime(2026, 3, 28, 23, 30),  # 00:30 +01:00 → 03-29
        "BER-000003": datetime(2026, 3, 29, 21, 30),  # 23:30 +02:00 → 03-29
        "BER-000004": datetime(2026, 3, 29, 22, 30),  # 00:30 +02:00 → 03-30
        "BER-000005": datetime(2026, 10, 24, 22, 30),  # 00:30 +02:00 → 10-25
        "BER-000006": datetime(2026, 10, 25, 22, 30),  # 23:30 +01:00 → 10-25
        "BER-000007": datetime(2026, 10, 25, 23, 30),  # 00:30 +01:00 → 10-26
    }
    ids = {number: berlin.order(number, at) for number, at in paid.items()}
    data = berlin.json("report", "--since", "2026-03-01", "--by", "day")
    assert {r["key"]: r["orders"] for r in data["rows"]} == {
        "2026-03-28": 1, "2026-03-29": 2, "2026-03-30": 1, "2026-10-25": 2, "2026-10-26": 1}
    assert data["since"] == "2026-03-01T00:00:00+01:00"
    latency = {r["key"]: r["shipped"] for r in data["paid_to_shipped"][:-1]}
    assert latency == {r["key"]: r["orders"] for r in data["rows"]}
    shown = berlin.json("orders", "show", str(ids["BER-000004"]))
    assert shown["paid_at"] == "2026-03-30T00:30:00+02:00"
    assert "paid 2026-10-25 23:30:00" in berlin.cli("orders", "show",
                                                   str(ids["BER-000006"])).stdout


def test_report_by_day_sql_matches_the_zone_database(engine: Engine, vault: Vault) -> None:
    """The SQL day of every hour of a year in Berlin and in Shanghai is the zone database's
    local date of that instant."""
    shop = Shop(name="hours", items=(sku("s1", ("p1", 1)),))
    start = datetime(2026, 1, 1)
    hours = [start + timedelta(hours=h, minutes=59) for h in range(0, 365 * 24, 7)]
    with engine.begin() as conn:
        for i, at in enumerate(hours):
            conn.execute(insert(orders).values(
                shop=shop.name, platform="memory", platform_order_id=f"H{i}", state="received",
                platform_status="paid",
                total_cents=100, currency="CNY", extra="{}", paid_at=at, received_at=at,
                updated_at=at, due_at=at))
    for zone in (BERLIN, SHANGHAI, UTC):
        rep = report.build(engine, since=start, until=start + timedelta(days=366), by="day",
                           now=start + timedelta(days=366), zone=zone)
        expected: dict[str, int] = {}
        for at in hours:
            key = at.replace(tzinfo=UTC).astimezone(zone).date().isoformat()
            expected[key] = expected.get(key, 0) + 1
        assert {r.key: r.orders for r in rep.rows} == expected, zone


def test_since_a_date_is_local_midnight(shanghai: Robot, frozen_now: datetime) -> None:
    """``--since 2026-12-01`` starts at midnight in the robot's zone (16:00 UTC the day
    before in Shanghai): an order at 00:30 local on 1 December counts, one at 23:30 local on
    30 November does not."""
    shanghai.order("SINCE-0001", datetime(2026, 11, 30, 15, 30))  # 23:30 local, 30 Nov
    shanghai.order("SINCE-0002", datetime(2026, 11, 30, 16, 30))  # 00:30 local, 1 Dec
    assert shanghai.json("report", "--since", "2026-12-01")["total"]["orders"] == 1
    now = datetime(2026, 12, 10)
    assert report.parse_since("2026-12-01", now, SHANGHAI) == datetime(2026, 11, 30, 16)
    assert report.parse_since("2026-12-01", now, BERLIN) == datetime(2026, 11, 30, 23)
    assert report.parse_since("2026-07-01", now, BERLIN) == datetime(2026, 6, 30, 22)
    assert report.parse_since("2026-12-01 08:00", now, SHANGHAI) == datetime(2026, 12, 1)
    assert report.parse_since("2026-12-01T08:00+00:00", now, SHANGHAI) == datetime(
        2026, 12, 1, 8)


def test_codes_export_since_is_local_midnight_and_times_are_local(
        shanghai: Robot, frozen_now: datetime, tmp_path: Path) -> None:
    """``codes export --since DATE`` is local midnight too, and its CSV times carry the
    zone's offset."""
    shanghai.order("EXP-000001", datetime(2026, 11, 30, 15, 30))
    with shanghai.engine.begin() as conn:
        conn.execute(update(codes).values(created_at=datetime(2026, 11, 30, 16, 30)))
    out = tmp_path / "x.csv"

    def exported(since: str) -> list[dict[str, str]]:
        shanghai.cli("codes", "export", "p1", "--since", since, "--csv", str(out))
        with out.open(encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    assert len(exported("2026-12-01")) == 1  # imported 00:30 local on 1 December
    assert exported("2026-12-02") == []


def test_since_out_of_range_is_a_clear_error() -> None:
    """A --since before 1970 or beyond the calendar is refused with one line, not a
    traceback."""
    now = datetime(2026, 12, 10)
    for text in ("0001-01-01", "99999999d", "1969-12-31"):
        with pytest.raises(UserError, match="1970 or later"):
            report.parse_since(text, now, SHANGHAI)


# ----------------------------------------------------------------------------- imports


@pytest.mark.parametrize(("zone", "stored"), [("Asia/Shanghai", datetime(2026, 12, 31, 15, 59, 59)),
                                              ("Europe/Berlin", datetime(2026, 12, 31, 22, 59, 59))])
def test_an_imported_date_means_the_end_of_that_local_day(
        engine: Engine, vault: Vault, tmp_path: Path, db_url: str, key_file: Path,
        zone: str, stored: datetime) -> None:
    """``expires_at: 2026-12-31`` is valid through 31 December in the robot's zone: it is
    stored as 23:59:59 local in UTC, and shown back as 2026-12-31 23:59:59."""
    bot = make_robot(engine, vault, tmp_path, db_url, key_file, zone)
    bot.cli("pools", "create", "p9")
    (tmp_path / "c.csv").write_text("code,expires_at\nEXPIRY-CODE-0001,2026-12-31\n"
                                    "EXPIRY-CODE-0002,2027-07-01 12:00\n")
    bot.cli("pools", "import", "p9", str(tmp_path / "c.csv"))
    with engine.connect() as conn:
        rows = conn.execute(select(codes.c.expires_at, stock.c.expires_at)
                            .join(stock, stock.c.code_id == codes.c.id)
                            .order_by(codes.c.id)).all()
    summer = datetime(2027, 7, 1, 4) if zone == "Asia/Shanghai" else datetime(2027, 7, 1, 10)
    assert [tuple(r) for r in rows] == [(stored, stored), (summer, summer)]
    listed = bot.cli("codes", "list", "p9").stdout
    assert "2026-12-31 23:59:59" in listed and "2027-07-01 12:00:00" in listed
    offset = "+08:00" if zone == "Asia/Shanghai" else "+01:00"
    listed_json = bot.json("codes", "list", "p9")  # newest first
    assert listed_json[-1]["expires_at"] == f"2026-12-31T23:59:59{offset}"


def test_parse_expiry_end_of_day_in_each_zone() -> None:
    """A date alone is 23:59:59 that day in the given zone, in winter and in summer; a date
    and time is that local moment; an explicit offset wins over the zone."""
    assert parse_expiry("2026-12-31", SHANGHAI) == datetime(2026, 12, 31, 15, 59, 59)
    assert parse_expiry("2026-12-31", BERLIN) == datetime(2026, 12, 31, 22, 59, 59)
    assert parse_expiry("2026-07-31", BERLIN) == datetime(2026, 7, 31, 21, 59, 59)
    assert parse_expiry("2026年12月31日", SHANGHAI) == datetime(2026, 12, 31, 15, 59, 59)
    assert parse_expiry("2026-07-31 08:00", BERLIN) == datetime(2026, 7, 31, 6)
    assert parse_expiry("2026-07-31T08:00+00:00", BERLIN) == datetime(2026, 7, 31, 8)
    assert day_end(date(2026, 3, 29), BERLIN) == datetime(2026, 3, 29, 21, 59, 59)
    assert day_start(date(2026, 3, 29), BERLIN) == datetime(2026, 3, 28, 23)


# ----------------------------------------------------------------------------- risk


def test_daily_amount_limit_resets_at_local_midnight(shanghai: Robot) -> None:
    """``buyer_amount_per_day_yuan`` counts the buyer's orders since midnight in the robot's
    zone: a new local day starts afresh even minutes later, and UTC midnight resets nothing."""
    shop, zone = shanghai.app.config.shop("mem"), shanghai.app.zone

    def take(number: str, at: datetime, quantity: int) -> str | None:
        return pipeline.intake(shanghai.engine, shop, paid_order(number, ("s1", quantity)),
                               now=at, zone=zone).state

    # 23:50 and 00:10 Shanghai: two local days, 20 minutes apart.
    assert take("R-0000001", datetime(2026, 12, 5, 15, 50), 2) == "received"  # 20.00
    assert take("R-0000002", datetime(2026, 12, 5, 16, 10), 2) == "received"  # 20.00 today
    assert take("R-0000003", datetime(2026, 12, 5, 16, 20), 1) == "held"  # 30.00 today
    # 07:50 and 08:10 Shanghai: UTC midnight between them is no new day here.
    assert take("R-0000004", datetime(2026, 12, 6, 23, 50), 2) == "received"
    assert take("R-0000005", datetime(2026, 12, 7, 0, 10), 1) == "held"
    with shanghai.engine.connect() as conn:
        reason = conn.execute(select(orders.c.reason).where(
            orders.c.platform_order_id == "R-0000005")).scalar_one()
    assert reason == "risk: buyer_amount_per_day 30.00 yuan today > 25.50"


# ----------------------------------------------------------------------------- no microseconds


def test_no_microseconds_anywhere_on_screen(shanghai: Robot, frozen_now: datetime) -> None:
    """Every command that shows a time, as a table and as JSON, shows it to the second."""
    oid = shanghai.order("MICRO-0001", PAID)
    _poll_ok(shanghai.engine, PAID + timedelta(microseconds=777))
    shanghai.cli("blacklist", "add", "--buyer", "someone", "--reason", "test")
    with shanghai.engine.begin() as conn:
        conn.execute(update(codes).values(expires_at=datetime(2027, 1, 1, 1, 2, 3, 456789)))
    commands = [("status",), ("orders", "list"), ("orders", "show", str(oid)),
                ("orders", "find", "MICRO-0001"), ("codes", "list", "p1"), ("audit", "list"),
                ("alerts", "list"), ("shops", "list"), ("blacklist", "list"),
                ("risk", "dry-run", "--days", "3650"), ("codes", "defects"),
                ("report", "--since", "2026-12-01", "--by", "day")]
    for command in commands:
        for extra in ((), ("--json",)):
            out = shanghai.cli(*command, *extra).stdout
            assert not MICROSECONDS.search(out), (command, extra, out)
    assert "MICRO-0001" in shanghai.cli("orders", "list").stdout


def test_display_helpers_show_the_zone_to_the_second() -> None:
    """format_time and the JSON helpers convert stored UTC to the zone and drop
    microseconds; JSON keeps the zone's offset."""
    assert format_time(PAID, zone=SHANGHAI) == "2026-12-06 01:30:00"
    assert format_time_json(PAID, SHANGHAI) == "2026-12-06T01:30:00+08:00"
    assert format_time_json(PAID) == "2026-12-05T17:30:00+00:00"
    assert json_times({"a": [PAID], "d": date(2026, 1, 2)}, BERLIN) == {
        "a": ["2026-12-05T18:30:00+01:00"], "d": "2026-01-02"}
    assert offset_changes(datetime(2026, 1, 1), datetime(2027, 1, 1), BERLIN) == (
        (datetime(2026, 1, 1), 3600), (datetime(2026, 3, 29, 1), 7200),
        (datetime(2026, 10, 25, 1), 3600))
    assert offset_changes(datetime(2026, 1, 1), datetime(2027, 1, 1), SHANGHAI) == (
        (datetime(2026, 1, 1), 28800),)


# ----------------------------------------------------------------------------- HTML, alerts, pickup


def test_html_report_days_and_labels_are_in_the_zone(engine: Engine, vault: Vault) -> None:
    """The HTML report's day range is the local days of the window and its labels name the
    zone, not UTC."""
    since, until = datetime(2026, 11, 30, 16), datetime(2026, 12, 7, 16)  # a Shanghai week
    views_ = [report.build(engine, since=since, until=until, by=by, now=until, zone=SHANGHAI)
              for by in ("day", "sku", "shop")]
    assert window_days(views_[0]) == [f"2026-12-0{d}" for d in range(1, 8)]
    page = render(HtmlReport(*views_, report.paid_to_shipped(
        engine, since=since, until=until, zone=SHANGHAI), until))
    assert "2026-12-01 00:00 – 2026-12-08 00:00" in page and "Asia/Shanghai" in page
    assert "UTC" not in page


def test_alert_messages_carry_local_times(engine: Engine, vault: Vault) -> None:
    """An alert says when it happened, and when the first code expires, in the robot's zone."""
    seed_codes(engine, vault, "soon", 2, expires_at=datetime(2026, 12, 31, 15, 59, 59))
    notifier = alerts.MemoryNotifier()
    settings = AlertsConfig(targets=[], expiring_days=30)
    checker = alerts.AlertEngine(engine, notifier, settings, shops=[], zone=SHANGHAI)
    checker.run_once(datetime(2026, 12, 20, 17, 30))
    bodies = dict(notifier.sent)
    body = bodies["[robot] ALERT: codes expiring in pool soon"]
    assert "the first at 2026-12-31 23:59:59 (Asia/Shanghai)" in body
    assert "(2026-12-21 01:30:00 Asia/Shanghai)" in body
    assert not MICROSECONDS.search(" ".join(bodies.values()))


def test_pickup_page_shows_code_expiry_in_the_shops_zone(shanghai: Robot) -> None:
    """The buyer reads a code's expiry in the shops' zone, to the second."""
    oid = shanghai.order("PICK-00001", PAID)
    with shanghai.engine.begin() as conn:
        conn.execute(update(codes).values(expires_at=datetime(2026, 12, 31, 15, 59, 59)))
        rows = code_rows(conn, oid)
    [view] = views(shanghai.vault, rows, masked=True, zone=SHANGHAI)
    assert view.expires == "2026-12-31 23:59:59"
    from robot.http.pages import masked_page

    assert "2026-12-31 23:59:59" in masked_page("PICK-00001", [view], csrf="x", action="/r")
