"""Alerts: tell people when stock runs low, orders pile up, a shop stops, or the log breaks.

:func:`evaluate` reads the database and says, for every alert key it checked, whether the
condition holds now. :class:`AlertEngine` turns those readings into messages: one when a
condition starts, one when it clears, and never more than one per key per
``alerts.min_interval`` (a flapping condition is reported when it has settled). What people
were last told lives in ``alert_state``; a transition is claimed by a guarded UPDATE (or the
primary key, for a key's first alert), so several processes and restarts send each
transition once. Messages go through a :class:`Notifier`: apprise in production,
:class:`MemoryNotifier` in tests.

Times in messages are in the robot's ``timezone:`` (the engine is given the zone), to the
second, with the zone named.

This module must never put a code, a credential or an alert target's URL in a message or a
log line: messages carry pool and shop names, counts and the robot's own error texts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any, Protocol

from pydantic import SecretStr
from sqlalchemy import Engine, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from robot import audit, orders
from robot.clock import DEFAULT_ZONE, format_age
from robot.config import AlertsConfig
from robot.display import format_time, zone_name
from robot.log import get_logger
from robot.schema import alert_state, pools, stock
from robot.states import OrderState

log = get_logger(__name__)

CHECK_INTERVAL = 60.0  # seconds between evaluations in the daemon
TITLE_PREFIX = "[robot]"
# Kinds evaluated on every run: an active key of one of these kinds that no reading mentions
# any more (its pool or shop is gone) is cleared. "audit" is only read when due.
ALWAYS_KINDS = frozenset({"low_stock", "orders", "shop_paused", "poll_lag", "expiring",
                          "clock"})
#: A stored clock offset older than this is no reading at all (the shop stopped polling:
#: poll_lag says so).
CLOCK_READING_MAX_AGE = timedelta(hours=1)
_REASON_MAX = 200


@dataclass(frozen=True)
class Condition:
    """One alert key's reading: ``active`` when the condition holds at this moment."""

    key: str  # "<kind>:<subject>", e.g. "low_stock:gift-100"
    active: bool
    title: str  # what the alert is about, e.g. "low stock in pool gift-100"
    detail: str = ""  # the figures behind it (shown when it starts)

    @property
    def kind(self) -> str:
        return self.key.partition(":")[0]


# ------------------------------------------------------------------------------- evaluation


def evaluate(engine: Engine, settings: AlertsConfig, now: datetime, *,
             shops: Sequence[str] | None = None, check_audit: bool = True,
             max_clock_offset: float | None = None,
             zone: tzinfo = DEFAULT_ZONE) -> list[Condition]:
    """Read every alert condition; ``shops`` limits shop alerts to these (the configured ones).

    ``check_audit=False`` leaves the (expensive) audit chain check out of the readings;
    ``max_clock_offset`` (seconds) turns on the platform clock alert; times in the details
    are shown in ``zone``.
    """
    st = orders.status(engine, shops or (), now=now)
    found: list[Condition] = []
    for p in st.pools:
        reasons = []
        if p.low_stock is not None and p.available <= p.low_stock:
            reasons.append(f"{p.available} available (alert at {p.low_stock} or fewer)")
        if (settings.low_cover_days is not None and p.days_of_cover is not None
                and p.days_of_cover < settings.low_cover_days):
            reasons.append(f"{p.days_of_cover} days of cover at last week's rate "
                           f"({p.sold_7d} sold; alert under {settings.low_cover_days:g} days)")
        found.append(Condition(f"low_stock:{p.pool}", bool(reasons),
                               f"low stock in pool {p.pool}", "; ".join(reasons)))
    thresholds = {OrderState.FAILED: settings.failed_above, OrderState.HELD: settings.held_above,
                  OrderState.WAITING_STOCK: settings.waiting_stock_above}
    for state, above in thresholds.items():
        n = st.attention.get(state, 0)
        found.append(Condition(f"orders:{state}", n > above, f"orders {state.replace('_', ' ')}",
                               f"{n} orders are {state} (alert above {above})"))
    wanted = set(shops) if shops is not None else None
    for s in st.shops:
        if wanted is not None and s.shop not in wanted:
            continue
        reason = (s.paused_reason or "no reason recorded")[:_REASON_MAX]
        found.append(Condition(f"shop_paused:{s.shop}", s.paused, f"shop {s.shop} paused",
                               f"polling and write-back stopped: {reason}"))
        lagging = (not s.paused and s.lag_seconds is not None
                   and s.lag_seconds > settings.poll_lag)
        found.append(Condition(
            f"poll_lag:{s.shop}", lagging, f"shop {s.shop} not polled",
            f"last successful poll {format_age(s.lag_seconds)} ago "
            f"(alert after {format_age(settings.poll_lag)})"))
        if max_clock_offset is not None:
            found.append(_clock_condition(s, max_clock_offset, now))
    names = {p.pool_id: p.name for p in _pool_names(engine)}
    soon = now + timedelta(days=settings.expiring_days)
    with engine.connect() as conn:
        expiring = {int(r[0]): (int(r[1]), r[2]) for r in conn.execute(
            select(stock.c.pool_id, func.count(), func.min(stock.c.expires_at))
            .where(stock.c.expires_at > now, stock.c.expires_at <= soon)
            .group_by(stock.c.pool_id))}
    for pid, name in sorted(names.items(), key=lambda kv: kv[1]):
        n, first = expiring.get(pid, (0, None))
        found.append(Condition(f"expiring:{name}", n > 0, f"codes expiring in pool {name}",
                               f"{n} available codes expire within "
                               f"{settings.expiring_days:g} days" + (
                                   f", the first at {format_time(first, zone=zone)} "
                                   f"({zone_name(zone)})" if first is not None else "")))
    if check_audit:
        result = audit.verify(engine)
        found.append(Condition("audit:chain", not result.ok, "audit chain broken",
                               result.problem or f"{result.entries} entries verified"))
    return found


def _clock_condition(s: orders.ShopStatus, limit: float, now: datetime) -> Condition:
    """The shop's platform clock is past ``limit`` seconds from ours (a recent reading)."""
    offset = s.clock_offset_s
    recent = (s.clock_checked_at is not None
              and now - s.clock_checked_at <= CLOCK_READING_MAX_AGE)
    active = recent and offset is not None and abs(offset) > limit
    side = "ahead of" if (offset or 0) > 0 else "behind"
    return Condition(f"clock:{s.shop}", active, f"shop {s.shop}: platform clock off",
                     f"the platform's clock is {abs(offset or 0):.0f}s {side} this machine's "
                     f"(alert above {limit:g}s); polling follows the platform's clock, but "
                     "check this machine's time (NTP)")


@dataclass(frozen=True)
class _PoolName:
    pool_id: int
    name: str


def _pool_names(engine: Engine) -> list[_PoolName]:
    with engine.connect() as conn:
        return [_PoolName(int(r.id), str(r.name))
                for r in conn.execute(select(pools.c.id, pools.c.name))]


# -------------------------------------------------------------------------------- notifiers


class Notifier(Protocol):
    """Where messages go. ``send`` returns whether every target accepted the message."""

    def send(self, title: str, body: str) -> bool: ...


@dataclass
class MemoryNotifier:
    """Keeps messages in a list (tests, dry runs); ``fail`` makes every send fail."""

    sent: list[tuple[str, str]] = field(default_factory=list)
    fail: bool = False

    def send(self, title: str, body: str) -> bool:
        if self.fail:
            return False
        self.sent.append((title, body))
        return True


def _apprise() -> Any:
    """The apprise module with its plugins loaded.

    Loading the e-mail plugin imports ``imghdr``, which warns that it is deprecated on
    Python 3.11/3.12; that warning is apprise's, not ours, so it is silenced for the load.
    """
    import apprise
    from apprise.plugins import N_MGR

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        N_MGR.load_modules()  # type: ignore[no-untyped-call]  # apprise's manager is untyped
    return apprise


@dataclass(frozen=True)
class TargetResult:
    target: str  # the URL as apprise prints it with privacy on (tokens elided)
    ok: bool
    error: str | None = None


class AppriseNotifier:
    """Sends through apprise to every URL in ``alerts.targets``."""

    def __init__(self, targets: Sequence[SecretStr]) -> None:
        self._apprise = _apprise()
        self._targets = list(targets)
        self._all = self._apprise.Apprise()
        for url in self._targets:
            self._all.add(url.get_secret_value())

    def send(self, title: str, body: str) -> bool:
        if not len(self._all):
            return False
        return bool(self._all.notify(title=title, body=body))

    def test(self, title: str, body: str) -> list[TargetResult]:
        """Send one message to each target on its own; the result per target."""
        results = []
        for i, url in enumerate(self._targets, 1):
            plugin = self._apprise.Apprise.instantiate(url.get_secret_value())
            if plugin is None:
                scheme = url.get_secret_value().partition("://")[0] or "?"
                results.append(TargetResult(f"target {i} ({scheme}://…)", False,
                                            "not a URL apprise understands"))
                continue
            shown = f"target {i}: {plugin.url(privacy=True)}"
            ok = bool(plugin.notify(title=title, body=body))
            results.append(TargetResult(shown, ok, None if ok else "the service refused it "
                                                                   "or could not be reached"))
        return results


# ----------------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class Sent:
    key: str
    active: bool  # True: the alert started; False: it cleared


class AlertEngine:
    """Applies readings to ``alert_state`` and sends each transition it wins, once."""

    def __init__(self, engine: Engine, notifier: Notifier, settings: AlertsConfig, *,
                 shops: Sequence[str] | None = None,
                 extra: Sequence[Callable[[], Condition]] = (),
                 max_clock_offset: float | None = None,
                 zone: tzinfo = DEFAULT_ZONE) -> None:
        self.engine = engine
        self.zone = zone  # the robot's timezone: times in messages
        self.notifier = notifier
        self.settings = settings
        self.shops = list(shops) if shops is not None else None
        #: Readings the process itself keeps (e.g. the pickup lookup guard), read each run.
        self.extra = list(extra)
        self.max_clock_offset = max_clock_offset
        self._next_audit: datetime | None = None

    def run_once(self, now: datetime) -> list[Sent]:
        """Evaluate, apply start / clear transitions, send them; returns what was sent."""
        check_audit = self._next_audit is None or now >= self._next_audit
        readings = evaluate(self.engine, self.settings, now, shops=self.shops,
                            check_audit=check_audit, max_clock_offset=self.max_clock_offset,
                            zone=self.zone)
        if check_audit:
            self._next_audit = now + timedelta(seconds=self.settings.audit_every)
        own = [read() for read in self.extra]
        readings = [*readings, *own]
        kinds = ALWAYS_KINDS | ({"audit"} if check_audit else set()) | {c.kind for c in own}
        by_key = {c.key: c for c in readings}
        with self.engine.connect() as conn:
            rows = {str(r.key): r for r in conn.execute(select(alert_state))}
        # Keys still active whose subject is gone (pool or shop removed) clear too.
        for key, old in rows.items():
            if old.active and key not in by_key and key.partition(":")[0] in kinds:
                by_key[key] = Condition(key, False, key.replace(":", " "))
        sent = []
        for cond in by_key.values():
            row = rows.get(cond.key)
            if self._claim(cond, row, now):
                sent.append(Sent(cond.key, cond.active))
                self._send(cond, row, now)
        return sent

    def _claim(self, cond: Condition, row: Any, now: datetime) -> bool:
        """Flip the key's state in the database; True only for the process that flipped it."""
        detail = _message(cond, row, now)[1]
        if row is None:
            if not cond.active:
                return False
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(alert_state).values(
                        key=cond.key, active=True, since=now, last_sent_at=now, detail=detail))
            except IntegrityError:
                return False  # another process saw it first and sends it
            return True
        if bool(row.active) == cond.active:
            if cond.active and cond.detail and row.detail != detail:
                # Still on, figures changed: keep `alerts list` current without a message.
                with self.engine.begin() as conn:
                    conn.execute(update(alert_state)
                                 .where(alert_state.c.key == cond.key,
                                        alert_state.c.active == True)  # noqa: E712 - SQL
                                 .values(detail=detail))
            return False
        quiet_since = now - timedelta(seconds=self.settings.min_interval)
        with self.engine.begin() as conn:
            flipped = conn.execute(
                update(alert_state)
                .where(alert_state.c.key == cond.key,
                       alert_state.c.active == (not cond.active),
                       or_(alert_state.c.last_sent_at.is_(None),
                           alert_state.c.last_sent_at <= quiet_since))
                .values(active=cond.active, since=now, last_sent_at=now, detail=detail)
            ).rowcount
        return flipped == 1

    def _send(self, cond: Condition, row: Any, now: datetime) -> None:
        title, body = _message(cond, row, now)
        # When it happened, in the merchant's zone (not in the stored detail, which would
        # then change on every run).
        body += f"\n({format_time(now, zone=self.zone)} {zone_name(self.zone)})"
        try:
            ok = self.notifier.send(title, body)
        except Exception as exc:  # noqa: BLE001 - a broken target never stops the robot
            log.error("alert_send_failed", alert=cond.key, error=type(exc).__name__)
            return
        if ok:
            log.info("alert_sent", alert=cond.key, active=cond.active)
        else:
            log.error("alert_send_failed", alert=cond.key, error="a target refused the message")


def _message(cond: Condition, row: Any, now: datetime) -> tuple[str, str]:
    if cond.active:
        return f"{TITLE_PREFIX} ALERT: {cond.title}", cond.detail or cond.title
    body = f"{cond.title}: resolved"
    if row is not None and row.since is not None:
        body += f" after {format_age((now - row.since).total_seconds())}"
    return f"{TITLE_PREFIX} resolved: {cond.title}", body


def active_alerts(engine: Engine) -> list[dict[str, Any]]:
    """Alerts currently on (as last told to people), oldest first."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(alert_state.c.key, alert_state.c.since, alert_state.c.last_sent_at,
                   alert_state.c.detail)
            .where(alert_state.c.active == True)  # noqa: E712 - SQL comparison
            .order_by(alert_state.c.since,
                                                            alert_state.c.key))]
