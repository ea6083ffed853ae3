"""The lookup form's guard against harvesting: growing delays instead of lockouts.

A lookup (``POST /p``) that finds nothing — unknown order number, wrong check, malformed
value — is a *miss*. Two things slow guessing down, both by spacing lookups apart in time,
never by refusing the right buyer for long:

* **per order number**: after ``order_free_misses`` misses on one (normalized) order number,
  its lookups are spaced 1 s, 2 s, 4 s … apart, at most ``order_max_delay``; a miss is
  forgiven every ``order_forget`` seconds. A buyer whose order is being guessed at still gets
  in, within ``order_max_delay`` plus one wait.
* **globally**: when ``threshold`` misses (all clients together) fall within ``window``, the
  guard *engages*: every further miss raises its level by one, each level doubling the
  spacing between any two lookups, from ``base_delay`` up to ``max_delay``; a level is
  forgiven every ``recovery`` seconds. Under a sustained attack from any number of
  addresses at most one lookup per ``max_delay`` is checked (120 an hour with the defaults),
  so at ±1 minute a harvester who knows the day of payment opens about one order in four
  hours at the most, and needs to know the order number too. The guard engaging and
  releasing are logged once each and read by the alerts (:meth:`LookupGuard.reading`).

A lookup reserves its slot when it arrives (:meth:`LookupGuard.admit`) and the handler
awaits the wait (``asyncio.sleep``: the event loop stays free), so concurrent requests queue
rather than pass together; one whose slot is more than ``max_wait`` away gets the busy page
at once and is not checked. State is per process (like :mod:`robot.http.ratelimit`): with
several processes the allowances add up. The clock is injectable (tests play an hour in a
moment). This module must never be the only reason a code is safe: the check is.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from robot.alerts import Condition
from robot.log import get_logger

log = get_logger(__name__)

ALERT_KEY = "pickup_guard:lookup"
_STEPS = 60  # the window is counted in this many slices


@dataclass(frozen=True)
class GuardSettings:
    """The guard's thresholds and delays (seconds)."""

    threshold: int = 20
    window: float = 600.0
    base_delay: float = 1.0
    max_delay: float = 30.0
    recovery: float = 60.0
    max_wait: float = 10.0
    order_free_misses: int = 5
    order_max_delay: float = 60.0
    order_forget: float = 360.0
    max_orders: int = 100_000

    @property
    def max_level(self) -> float:
        # A few levels beyond the cap: the slowdown holds a while after the attack stops.
        return math.log2(self.max_delay / self.base_delay) + 4


@dataclass
class _Order:
    misses: float
    at: float  # when ``misses`` was last brought up to date
    last_slot: float  # when its latest admitted lookup was checked (or will be)


class LookupGuard:
    """Spacing of lookups per order number and globally (see the module docstring)."""

    def __init__(self, settings: GuardSettings | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or GuardSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._slices = [0] * _STEPS
        self._slice_at = [0] * _STEPS  # which slice number each counter belongs to
        self._level = 0.0
        self._level_at = clock()
        self._last_slot = -math.inf
        self._engaged = False
        self._engaged_since_reading = False
        self._orders: OrderedDict[str, _Order] = OrderedDict()

    # ---------------------------------------------------------------- global state

    def _slice(self, now: float) -> int:
        return int(now // (self.settings.window / _STEPS))

    def _recent(self, now: float) -> int:
        """Misses within the window."""
        current = self._slice(now)
        return sum(n for n, at in zip(self._slices, self._slice_at, strict=True)
                   if current - at < _STEPS)

    def _decay(self, now: float) -> None:
        elapsed = max(0.0, now - self._level_at)
        self._level = max(0.0, self._level - elapsed / self.settings.recovery)
        self._level_at = now
        if self._engaged and self._level <= 0.0 and self._recent(now) < self.settings.threshold:
            self._engaged = False
            log.info("lookup_guard_released")

    def _spacing(self) -> float:
        if self._level <= 0.0:
            return 0.0
        s = self.settings
        return min(s.max_delay, s.base_delay * 2 ** (self._level - 1))

    def _order(self, key: str, now: float) -> _Order | None:
        state = self._orders.get(key)
        if state is not None:
            forgiven = max(0.0, now - state.at) / self.settings.order_forget
            state.misses = max(0.0, state.misses - forgiven)
            state.at = now
        return state

    def _order_spacing(self, state: _Order | None) -> float:
        s = self.settings
        if state is None or state.misses < s.order_free_misses:
            return 0.0
        return min(s.order_max_delay, 2 ** (state.misses - s.order_free_misses))

    # ---------------------------------------------------------------- the handler's calls

    def admit(self, key: str) -> float | None:
        """Reserve the next slot for one lookup of order number ``key``: the seconds to wait
        before checking it, or None (busy: answer at once, check nothing)."""
        with self._lock:
            now = self._clock()
            self._decay(now)
            spacing = self._spacing()
            order = self._order(key, now)
            order_spacing = self._order_spacing(order)
            slot = max(now, self._last_slot + spacing)
            if order is not None:
                slot = max(slot, order.last_slot + order_spacing)
            if slot - now > self.settings.max_wait:
                return None
            self._last_slot = slot
            if order is not None:
                order.last_slot = slot
            return slot - now

    def record(self, key: str | None, *, found: bool) -> None:
        """The outcome of one lookup (``key`` None: the order number was malformed)."""
        if found:
            return
        with self._lock:
            now = self._clock()
            self._decay(now)
            current = self._slice(now)
            i = current % _STEPS
            if self._slice_at[i] != current:
                self._slices[i], self._slice_at[i] = 0, current
            self._slices[i] += 1
            recent = self._recent(now)
            if recent >= self.settings.threshold:
                self._level = min(self.settings.max_level, self._level + 1.0)
                if not self._engaged:
                    self._engaged = self._engaged_since_reading = True
                    log.warning("lookup_guard_engaged", misses=recent,
                                window_s=self.settings.window)
            if key is not None:
                self._miss_on(key, now)

    def _miss_on(self, key: str, now: float) -> None:
        order = self._order(key, now)
        if order is None:
            order = _Order(misses=0.0, at=now, last_slot=now)
            self._orders[key] = order
            while len(self._orders) > self.settings.max_orders:
                self._orders.popitem(last=False)
        else:
            self._orders.move_to_end(key)
        order.misses += 1.0

    # ---------------------------------------------------------------- what people see

    @property
    def engaged(self) -> bool:
        """Whether lookups are being slowed down globally now."""
        with self._lock:
            self._decay(self._clock())
            return self._engaged

    def spacing(self) -> float:
        """Seconds between two lookups now (0: no global slowdown)."""
        with self._lock:
            self._decay(self._clock())
            return self._spacing()

    def reading(self) -> Condition:
        """The alert condition: active while engaged, and once for an engagement that ended
        since the last reading (so a burst between two alert checks is still told)."""
        with self._lock:
            now = self._clock()
            self._decay(now)
            active = self._engaged or self._engaged_since_reading
            self._engaged_since_reading = False
            recent, spacing = self._recent(now), self._spacing()
        return Condition(
            ALERT_KEY, active, "pickup lookups slowed down (someone may be guessing orders)",
            f"{recent} failed lookups in the last {self.settings.window / 60:g} minutes "
            f"(slowdown from {self.settings.threshold}); lookups now {spacing:g}s apart",
        )
