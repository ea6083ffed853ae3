"""Measuring a platform's clock, planning windows in its time, and telling people when it is
far off: the kit's PlatformClock and windowed step, the fakes' clock offset, and the core's
log lines, ``robot status``, ``/healthz`` and alert."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select
from structlog.testing import capture_logs

from connectors.base import ClockReading, Order
from connectors.common.clock import MAX_CORRECTION, SAMPLE_MAX_AGE, PlatformClock, parse_http_date
from connectors.common.window import Window, WindowPlanner
from connectors.fakekit import FakeClock
from connectors.taobao.fake import FakeTop, create_app
from robot import shops
from robot.alerts import AlertEngine, MemoryNotifier
from robot.cli import _register, cli
from robot.clock import utcnow
from robot.config import AlertsConfig, load_config
from robot.daemon import Robot, ShopHealth
from robot.schema import orders
from robot.vault import Vault
from tests.factories import paid_order
from tests.http.conftest import make_http
from tests.test_daemon import write_config

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
_register()  # the CLI's commands, as `robot` loads them


def _date(moment: datetime) -> httpx.Response:
    return httpx.Response(200, headers={"Date": format_datetime(moment, usegmt=True)})


# ------------------------------------------------------------------------------ the kit


def test_offset_is_the_median_so_one_slow_answer_does_not_move_it() -> None:
    """Four answers 600 s behind and one slow one (15 s later than it claims) read -600."""
    clock = FakeClock(T0)
    platform = PlatformClock(clock.now)
    for _ in range(4):
        platform.observe_response(_date(T0 - timedelta(seconds=600)))
    platform.observe_response(_date(T0 - timedelta(seconds=615)))
    reading = platform.reading()
    assert reading is not None and reading.offset_seconds == -600 and reading.samples == 5
    assert platform.now() == T0 - timedelta(seconds=600)


def test_unusable_date_headers_are_no_sample() -> None:
    """A missing, repeated, zone-less or garbage Date is ignored; unmeasured reads zero."""
    platform = PlatformClock(FakeClock(T0).now)
    platform.observe_response(httpx.Response(200))
    twice = [("Date", "Tue, 02 Jan 2024 03:04:05 GMT"), ("Date", "Tue, 02 Jan 2024 03:14:05 GMT")]
    platform.observe_response(httpx.Response(200, headers=twice))
    platform.observe_response(httpx.Response(200, headers={"Date": "yesterday"}))
    platform.observe_response(httpx.Response(200, headers={"Date": "x" * 500}))
    assert parse_http_date("Tue, 02 Jan 2024 03:04:05 -0000") is None
    assert platform.reading() is None and platform.offset == timedelta(0)
    assert parse_http_date("Tue, 02 Jan 2024 03:04:05 GMT") == T0


def test_an_offset_beyond_the_correction_limit_is_reported_but_not_applied() -> None:
    """A Date a year off (a proxy's, say) is shown but never moves windows."""
    clock = FakeClock(T0)
    platform = PlatformClock(clock.now)
    platform.observe_response(_date(T0 + timedelta(days=365)))
    reading = platform.reading()
    assert reading is not None and not reading.applied
    assert reading.offset_seconds > MAX_CORRECTION.total_seconds()
    assert platform.offset == timedelta(0)


def test_old_samples_are_forgotten() -> None:
    """Samples older than SAMPLE_MAX_AGE no longer count: the clock is measured afresh."""
    clock = FakeClock(T0)
    platform = PlatformClock(clock.now)
    platform.observe_response(_date(T0 + timedelta(seconds=90)))
    assert platform.offset == timedelta(seconds=90)
    clock.advance(SAMPLE_MAX_AGE + timedelta(seconds=1))
    assert not platform.measured and platform.offset == timedelta(0)


class _Config:
    window_minutes = 30
    lag_seconds = 60
    overlap_seconds = 300
    initial_lookback_minutes = 10


def test_a_window_planned_on_a_clock_that_was_off_does_not_move_the_cursor_past_it() -> None:
    """First poll on an unmeasured clock, platform 600 s behind: the answer measures it, the
    cursor stays unset and the step repeats; later, a cursor is held at the horizon."""
    clock = FakeClock(T0)
    platform = PlatformClock(clock.now)
    planner = WindowPlanner("test")
    asked: list[Window] = []

    async def fetch(window: Window) -> tuple[Order, ...]:
        asked.append(window)
        platform.observe(clock.now() - timedelta(seconds=600))  # what the answer's Date says
        return ()

    first = asyncio.run(planner.step(_Config(), None, clock.now(), platform, fetch))
    assert first.cursor == {} and first.more
    again = asyncio.run(planner.step(_Config(), first.cursor, clock.now(), platform, fetch))
    assert datetime.fromisoformat(again.cursor["end"]) == T0 - timedelta(seconds=660)
    assert (asked[1].start, asked[1].end) == (T0 - timedelta(seconds=1200),
                                              T0 - timedelta(seconds=660))
    # A cursor written under a clock that was wrong is held, never moved back or on.
    stale = {"end": (T0 - timedelta(seconds=700)).isoformat()}
    platform2 = PlatformClock(clock.now)

    async def fetch2(window: Window) -> tuple[Order, ...]:
        platform2.observe(clock.now() - timedelta(seconds=600))
        return ()

    held = asyncio.run(planner.step(_Config(), stale, clock.now(), platform2, fetch2))
    assert datetime.fromisoformat(held.cursor["end"]) == T0 - timedelta(seconds=660)
    assert not held.more


def test_trailing_windows_cover_the_period_within_the_platform_cap() -> None:
    """24 h in the platform's time, cut into ≤30-minute windows ending at its horizon."""
    clock = FakeClock(T0)
    platform = PlatformClock(clock.now)
    platform.observe(T0 + timedelta(seconds=600))
    windows = WindowPlanner("test", max_window=timedelta(minutes=30)).trailing(
        _Config(), clock.now(), timedelta(hours=24), platform)
    assert len(windows) == 48
    assert windows[-1].end == T0 + timedelta(seconds=540)
    assert windows[0].start == windows[-1].end - timedelta(hours=24)
    assert all(a.end == b.start for a, b in itertools.pairwise(windows))


# ----------------------------------------------------------------------------- the fakes


def test_a_fake_dates_its_answers_and_times_its_orders_by_its_offset_clock() -> None:
    """FakeTop(clock_offset=-600): Date header, trade times and /__fake__/clock/offset all
    follow the platform's clock; a bad offset is refused with 400."""
    clock = FakeClock(T0)
    top = FakeTop(clock=clock.now, clock_offset=-600)
    tid = top.create_trade()
    assert top.trades[tid].modified == T0 - timedelta(seconds=600)

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(top))
        async with httpx.AsyncClient(transport=transport, base_url="http://top") as client:
            first = await client.get("/router/rest")
            moved = await client.post("/__fake__/clock/offset", json={"offset_seconds": 600})
            bad = await client.post("/__fake__/clock/offset", json={"offset_seconds": "nan"})
            return first, moved, bad

    first, moved, bad = asyncio.run(scenario())
    assert parse_http_date(first.headers["date"]) == T0 - timedelta(seconds=600)
    assert moved.json()["offset_seconds"] == 600 and top.now() == T0 + timedelta(seconds=600)
    assert bad.status_code == 400 and top.clock_offset == 600


@pytest.mark.parametrize("platform", ["taobao", "pinduoduo", "youzan", "wechat", "douyin"])
def test_every_fake_command_takes_a_clock_offset(platform: str) -> None:
    """`robot fake <platform> --clock-offset SECONDS` exists; a value past a week is refused."""
    runner = CliRunner()
    shown = runner.invoke(cli, ["fake", platform, "--help"])
    assert shown.exit_code == 0 and "--clock-offset" in shown.output
    refused = runner.invoke(cli, ["fake", platform, "--clock-offset", "1e9"])
    assert refused.exit_code == 2 and "clock-offset" in refused.output


# ------------------------------------------------------------------------------ the core


class _Skewed:
    """A connector stand-in whose platform clock reads ``offset``."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def clock_reading(self) -> ClockReading:
        return ClockReading(self.offset, 5, datetime.now(UTC))


def test_a_large_offset_is_logged_once_and_its_recovery_once_and_shown(tmp_path: Path) -> None:
    """Past intake.max_clock_offset: one clock_offset_large, then one clock_offset_recovered;
    /healthz lists it while it lasts; `robot status` shows it from the database."""
    name = f"skew-{uuid.uuid4().hex}"
    config = load_config(write_config(tmp_path, name))
    robot = Robot(config)
    robot.prepare()
    try:
        robot.connectors["mem"] = _Skewed(-600)  # type: ignore[assignment]

        async def watch(times: int) -> None:
            for _ in range(times):
                await robot._watch_clock("mem")

        with capture_logs() as logs:
            asyncio.run(watch(3))
            assert robot.clock_skewed() == {"mem": -600}
            out = CliRunner().invoke(cli, ["-c", str(config.path), "status"])
            robot.connectors["mem"] = _Skewed(-2)  # type: ignore[assignment]
            asyncio.run(watch(3))
        events = [e["event"] for e in logs if e["event"].startswith("clock_offset")]
        assert events == ["clock_offset_large", "clock_offset_recovered"]
        assert out.exit_code == 0, out.output
        assert "clock is -600s from this machine" in out.output and "NTP" in out.output
        assert robot.clock_skewed() == {}
    finally:
        robot.release()


def test_healthz_is_degraded_while_a_platform_clock_is_off(engine: Engine, vault: Vault) -> None:
    """A skewed platform clock makes /healthz 503 "degraded" naming the shop; back → 200."""
    skewed: dict[str, float] = {"mem": 600.0}
    h = make_http(engine, vault, clock_skewed=lambda: skewed, max_clock_offset=60.0)
    with h.client:
        shops.save_poll(engine, "mem", None)
        off = h.client.get("/healthz")
        assert off.status_code == 503
        body = off.json()
        assert body["status"] == "degraded" and body["clock_offset_s"] == {"mem": 600.0}
        assert any("mem" in r and "600s ahead" in r for r in body["reasons"])
        skewed.clear()
        back = h.client.get("/healthz")
        assert back.status_code == 200, back.json()


def test_clock_alert_fires_once_and_clears_once(engine: Engine) -> None:
    """A stored offset past the limit alerts once; back within it, resolved once."""
    shops.ensure_row(engine, "shop-a")
    shops.save_poll(engine, "shop-a", None)
    notifier = MemoryNotifier()
    alerts = AlertEngine(engine, notifier, AlertsConfig(min_interval=1), shops=["shop-a"],
                         max_clock_offset=60)
    now = utcnow()
    shops.save_clock(engine, "shop-a", -600, now)
    assert [(s.key, s.active) for s in alerts.run_once(now)] == [("clock:shop-a", True)]
    assert alerts.run_once(now + timedelta(seconds=30)) == []
    shops.save_clock(engine, "shop-a", 1.5, now + timedelta(minutes=1))
    later = now + timedelta(minutes=2)
    assert [(s.key, s.active) for s in alerts.run_once(later)] == [("clock:shop-a", False)]
    assert [t for t, _ in notifier.sent] == ["[robot] ALERT: shop shop-a: platform clock off",
                                             "[robot] resolved: shop shop-a: platform clock off"]
    assert "600s behind" in notifier.sent[0][1]


class _Sweeper:
    """A connector stand-in that lists one recent order, ``R1``, and counts the listings."""

    def __init__(self) -> None:
        self.listings = 0

    async def recent_order_ids(self, now: datetime, period: timedelta) -> list[str]:
        self.listings += 1
        return ["R1"]

    async def fetch_order(self, platform_order_id: str) -> Order:
        return paid_order(platform_order_id, ("s1", 1))

    async def aclose(self) -> None:
        return None


def test_the_sweep_runs_only_on_the_shops_polling_leader(tmp_path: Path, engine: Engine) -> None:
    """A robot that does not hold a shop's polling lease does not sweep it; once it leads,
    its sweep takes the missed order in."""
    config = load_config(write_config(tmp_path, f"sweep-{uuid.uuid4().hex}"))
    robot = Robot(config, owner="me")
    robot._engine = engine  # the test's database (prepare() would open the configured one)
    robot.shops = {shop.name: shop for shop in config.shops}
    sweeper = _Sweeper()
    robot.connectors = {"mem": sweeper}  # type: ignore[dict-item]
    robot.health.shops["mem"] = ShopHealth()
    shops.ensure_row(engine, "mem")
    assert shops.take_lease(engine, "mem", "other", timedelta(minutes=5))
    asyncio.run(robot._reconcile("mem"))
    assert sweeper.listings == 0
    shops.release_lease(engine, "mem", "other")
    asyncio.run(robot._reconcile("mem"))
    assert sweeper.listings == 1
    with engine.connect() as conn:
        held = {r[0] for r in conn.execute(select(orders.c.platform_order_id))}
    assert held == {"R1"}
