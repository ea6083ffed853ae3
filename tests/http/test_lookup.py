"""The lookup form opens an order only for someone who knows what its buyer knows: the minute
they paid (and the buyer id's end), never the public price alone; guessing is slowed down
per order and globally by growing delays, never by locking the buyer out for long; and no
value a request sends can stall the robot."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta

import httpx
from sqlalchemy import Engine

from robot.alerts import AlertEngine, MemoryNotifier
from robot.config import AlertsConfig, PickupConfig
from robot.http import checks
from robot.http.app import build_app
from robot.http.guard import ALERT_KEY, GuardSettings, LookupGuard
from robot.http.ratelimit import Bucket, RateLimits
from robot.http.server import HttpServer, bind
from robot.vault import Vault
from tests.factories import seed_codes
from tests.http.conftest import Http, make_http, shop_config
from tests.http.lookup_helpers import SimClock, paid_at_order

#: 2026-12-05 14:03:27 in Shanghai (UTC+8), stored as naive UTC.
PAID = datetime(2026, 12, 5, 6, 3, 27)
MANY_ADDRESSES = RateLimits(per_ip=Bucket(10**9, 10**9), per_order=Bucket(10, 10 / 3600))


def lookup_http(engine: Engine, vault: Vault, checks_: list[str] | str, *, codes: int = 5,
                clock: SimClock | None = None, **ctx: object) -> Http:
    seed_codes(engine, vault, "p1", codes)
    extra: dict[str, object] = dict(ctx)
    clock = clock or SimClock()  # guessing delays are simulated, never slept
    extra.update(clock=clock, sleep=clock.sleep)
    return make_http(engine, vault, shop=shop_config(pickup=PickupConfig(lookup_check=checks_)),
                     **extra)  # type: ignore[arg-type]


def post(h: Http, **form: str) -> int:
    return h.client.post("/p", data=form, follow_redirects=False).status_code


# ------------------------------------------------------------------ the checks


def test_paid_at_opens_with_the_minute_in_the_shop_time_zone(engine: Engine,
                                                             vault: Vault) -> None:
    """The payment minute as the buyer's order page shows it (Beijing time), ±1 minute, in
    the usual spellings; another minute, day or time zone's clock opens nothing."""
    clock = SimClock()
    h = lookup_http(engine, vault, "paid_at", clock=clock)
    paid_at_order(h, "T100", PAID)
    with h.client:
        for right in ("2026-12-05 14:03", "2026/12/05 14:03:27", "2026年12月5日 14:03",
                      "12-05 14:04", "14:02", "１４：０３", "2026-12-05T14:03", "14时03分"):
            assert post(h, order="T100", paid_at=right) == 303, right
        for wrong in ("2026-12-05 14:05", "2026-12-05 14:01", "2026-12-06 14:03",
                      "06:03", "2026-12-05 06:03", "14:03 PM", "1e999000", "", "99:99"):
            clock.advance(600.0)  # a buyer's pace: the misses never make the order wait long
            assert post(h, order="T100", paid_at=wrong) == 404, wrong
        assert post(h, order="T100", check="14:03") == 303  # a lone check may come as `check`


def test_paid_at_follows_the_robot_timezone(engine: Engine, vault: Vault) -> None:
    """With ``timezone: Europe/Berlin`` the same payment is 07:03 on the buyer's page."""
    h = lookup_http(engine, vault, "paid_at", timezone="Europe/Berlin")
    paid_at_order(h, "T101", PAID)
    with h.client:
        assert post(h, order="T101", paid_at="2026-12-05 07:03") == 303
        assert post(h, order="T101", paid_at="2026-12-05 14:03") == 404


def test_two_checks_must_both_match(engine: Engine, vault: Vault) -> None:
    """``[paid_at, paid_amount]``: the right price with a wrong minute opens nothing."""
    h = lookup_http(engine, vault, ["paid_at", "paid_amount"])
    paid_at_order(h, "T102", PAID)
    with h.client:
        form = h.client.get("/p").text
        assert 'name="paid_at"' in form and 'name="paid_amount"' in form
        assert "付款时间" in form and "Time of payment" in form
        assert post(h, order="T102", paid_amount="10.00", paid_at="2026-12-05 15:03") == 404
        assert post(h, order="T102", paid_amount="10.01", paid_at="2026-12-05 14:03") == 404
        assert post(h, order="T102", paid_amount="10.00") == 404
        assert post(h, order="T102", check="10.00") == 404  # `check` stands for a lone check only
        for amount in ("10", "10.00", "¥10.0", "10元", "１０.００"):
            assert post(h, order="T102", paid_amount=amount,
                        paid_at="2026-12-05 14:03") == 303, amount
        for amount in ("1e999000", "10.001", "NaN", "-10", "1e3", "9" * 200):
            assert post(h, order="T102", paid_amount=amount,
                        paid_at="2026-12-05 14:03") == 404, amount


def test_an_order_without_a_payment_time_never_matches_paid_at(engine: Engine,
                                                               vault: Vault) -> None:
    """No recorded payment time: no minute can open the order (nothing to compare with)."""
    clock = SimClock()
    h = lookup_http(engine, vault, "paid_at", clock=clock)
    h.order("T103")
    with h.client:
        statuses = set()
        for minute in range(0, 1440, 3):  # every minute, ±1
            clock.advance(60.0)
            statuses.add(post(h, order="T103", paid_at=f"{minute // 60:02d}:{minute % 60:02d}"))
    assert statuses == {404}


# ------------------------------------------------------------------ harvesting


def test_harvester_opens_no_order_in_a_simulated_hour(engine: Engine, vault: Vault) -> None:
    """Sequential order numbers, the public price and guessed minutes of the right day, from
    as many addresses as it takes (the per-address limit never binds): no code in an hour,
    because at most ~150 guesses are checked at all."""
    clock = SimClock()
    h = lookup_http(engine, vault, ["paid_at", "paid_amount"], codes=40, clock=clock,
                    limits=MANY_ADDRESSES)
    rng = random.Random(15)
    day = datetime(2026, 12, 4, 16, 0)  # 2026-12-05 00:00 in Shanghai
    for i in range(30):  # the shop's orders: every third number
        paid_at_order(h, str(7_300_000_000 + 3 * i), day + timedelta(minutes=rng.randrange(1440)))
    start, opened, checked, busy, n = clock.now, 0, 0, 0, 0
    with h.client:
        while clock.now - start < 3600:
            order = str(7_300_000_000 + n % 90)
            n += 1
            minute = rng.randrange(1440)
            clock.advance(0.01)
            status = post(h, order=order, paid_amount="10.00",
                          paid_at=f"2026-12-05 {minute // 60:02d}:{minute % 60:02d}")
            if status == 429:
                busy += 1
                clock.advance(1.0)  # busy answers check nothing; asking faster gains nothing
            else:
                checked += 1
                opened += status == 303
    assert opened == 0
    assert checked <= 160, checked  # threshold + the doubling steps + 120 at max_delay
    assert busy > 1000  # it kept trying for the whole hour
    assert h.ctx.guard.engaged


def test_guesses_on_an_order_delay_its_buyer_by_about_a_minute_not_lock_them_out(
        engine: Engine, vault: Vault) -> None:
    """After 50 wrong guesses on one order (10 used to lock it for 6 minutes a try), its
    buyer with the right minute is in within the per-order cap plus one wait."""
    clock = SimClock()
    h = lookup_http(engine, vault, "paid_at", clock=clock, limits=MANY_ADDRESSES)
    paid_at_order(h, "T200", PAID)
    settings = h.ctx.guard.settings
    with h.client:
        wrong = 0
        while wrong < 50:
            clock.advance(0.01)
            if post(h, order="T200", paid_at="2026-12-05 03:00") == 429:
                clock.advance(1.0)
            else:
                wrong += 1
        asked = clock.now
        while post(h, order="T200", paid_at="2026-12-05 14:03") != 303:
            clock.advance(1.0)
            assert clock.now - asked < settings.order_max_delay + settings.max_wait + 2
    assert clock.now - asked <= settings.order_max_delay + settings.max_wait + 2


def test_guard_spaces_concurrent_lookups_and_refuses_beyond_the_longest_wait() -> None:
    """Once engaged, lookups arriving together get successive slots; those beyond
    ``max_wait`` are busy at once; the spacing grows with misses up to ``max_delay``."""
    clock = SimClock()
    guard = LookupGuard(GuardSettings(threshold=5, base_delay=1.0, max_delay=4.0,
                                      max_wait=10.0), clock=clock)
    for i in range(5):
        assert guard.admit(f"k{i}") == 0.0
        guard.record(f"k{i}", found=False)
    assert guard.engaged
    waits = [guard.admit(f"n{i}") for i in range(11)]
    assert waits == [float(i) for i in range(1, 11)] + [None]
    for i in range(5):
        guard.record(f"m{i}", found=False)
    assert guard.spacing() == 4.0


def test_guard_alert_fires_once_when_it_engages_and_once_when_it_clears(
        engine: Engine) -> None:
    """The guard's reading goes through the alert engine: one message when lookups start
    being slowed down, none while it lasts, one when it has cleared."""
    clock = SimClock()
    guard = LookupGuard(clock=clock)
    notifier = MemoryNotifier()
    alerts = AlertEngine(engine, notifier, AlertsConfig(min_interval=600), extra=[guard.reading])
    now = datetime(2026, 12, 5, 6, 0)
    assert alerts.run_once(now) == [] or all(s.key != ALERT_KEY for s in alerts.run_once(now))
    for i in range(200):
        guard.record(f"o{i}", found=False)
        clock.advance(1.0)
    ours = [t for t, _ in notifier.sent if "pickup lookups" in t]
    alerts.run_once(now + timedelta(minutes=4))
    alerts.run_once(now + timedelta(minutes=5))
    ours = [t for t, _ in notifier.sent if "pickup lookups" in t]
    assert ours == ["[robot] ALERT: pickup lookups slowed down (someone may be guessing orders)"]
    clock.advance(3600)  # the attack stopped an hour ago
    alerts.run_once(now + timedelta(minutes=70))
    alerts.run_once(now + timedelta(minutes=80))
    ours = [t for t, _ in notifier.sent if "pickup lookups" in t]
    assert ours[1:] == ["[robot] resolved: pickup lookups slowed down "
                        "(someone may be guessing orders)"]


# ------------------------------------------------------------------ hostile values


def test_hostile_values_are_refused_before_any_conversion() -> None:
    """Exponents, huge digit strings and overlong values are malformed, each in well under a
    millisecond (``1e999000`` once cost 25 seconds)."""
    for value in ("1e999000", "9" * 100_000, "1" + "0" * 127, "1E999999999", "١٢٣"):
        started = time.perf_counter()
        assert checks.parse_amount(value) is None
        assert checks.parse_paid_at(value) is None
        assert checks.order_number(value * 2) is None or len(value * 2) <= 64
        assert time.perf_counter() - started < 0.01


def test_health_answers_quickly_while_hostile_lookups_arrive(engine: Engine,
                                                            vault: Vault) -> None:
    """The real app over loopback: while hostile lookups (``1e999000`` amounts, huge order
    numbers) are in flight, ``/healthz`` keeps answering within a generous 500 ms, and every
    hostile request gets the neutral page (or busy)."""
    h = lookup_http(engine, vault, ["paid_at", "paid_amount"])
    paid_at_order(h, "H1", PAID)
    sock = bind("127.0.0.1:0")
    server = HttpServer(build_app(h.ctx), sock)
    hostile = [{"order": "H1", "paid_at": "2026-12-05 14:03", "paid_amount": "1e999000"},
               {"order": "9" * 4000, "paid_amount": "10"},
               {"order": "H1", "paid_at": "1" * 4000, "paid_amount": "10"},
               {"order": "H1", "check": "1e999000"}]

    async def scenario() -> tuple[list[float], set[int]]:
        stop = asyncio.Event()
        serving = asyncio.create_task(server.serve(stop))
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            while not server.started:
                await asyncio.sleep(0.01)
            attacks = [asyncio.create_task(client.post("/p", data=hostile[i % len(hostile)]))
                       for i in range(40)]
            latencies = []
            for _ in range(20):
                started = time.perf_counter()
                assert (await client.get("/healthz")).status_code in (200, 503)
                latencies.append(time.perf_counter() - started)
            statuses = {r.status_code for r in await asyncio.gather(*attacks)}
        stop.set()
        await serving
        return latencies, statuses

    latencies, statuses = asyncio.run(scenario())
    assert max(latencies) < 0.5, latencies
    assert statuses <= {404, 429}
