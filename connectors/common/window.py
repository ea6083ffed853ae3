"""Overlapping time windows for incremental polling, and the cursor that remembers them.

One pure function decides the next window from the stored cursor and "now"; the connector
returns the window's end as the new cursor, which the core stores only after committing the
window's orders. It must never produce a window ending later than ``now - lag`` (platforms
index recent changes late) nor longer than the configured window or the platform's cap.

Windows and cursors are in the *platform's* time: :meth:`WindowPlanner.step` (the windowed
poll every connector shares) turns our "now" into the platform's with the connector's
:class:`~connectors.common.clock.PlatformClock`, measured afresh by every answer, and never
stores a cursor beyond the platform's horizon as measured after the window was fetched.
:meth:`WindowPlanner.trailing` cuts the reconciliation sweep's period into windows the
platform accepts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from connectors.base import Order, PollResult
from connectors.common.clock import PlatformClock
from connectors.errors import ConfigError

#: A window may end this much past the platform's horizon as measured after the fetch
#: before the cursor is held back (the ``Date`` header has one-second resolution).
SETTLE_TOLERANCE = timedelta(seconds=2)

FetchWindow = Callable[["Window"], Awaitable[Sequence[Order]]]


class WindowConfig(Protocol):
    """The polling settings every polled platform's config carries (whole units)."""

    @property
    def window_minutes(self) -> int: ...
    @property
    def lag_seconds(self) -> int: ...
    @property
    def overlap_seconds(self) -> int: ...
    @property
    def initial_lookback_minutes(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Window:
    """``[start, end]`` to query (whole seconds); ``empty`` means nothing to ask yet."""

    start: datetime
    end: datetime
    more: bool  # the window stops short of the horizon: call again at once

    @property
    def empty(self) -> bool:
        return self.end <= self.start


def plan_window(
    last_end: datetime | None,
    now: datetime,
    *,
    window: timedelta,
    lag: timedelta,
    overlap: timedelta,
    initial_lookback: timedelta,
    max_window: timedelta | None = None,
) -> Window:
    """The next window after ``last_end`` (None on the first run) as of ``now`` (aware)."""
    if max_window is not None:
        window = min(window, max_window)
    horizon = _whole_seconds(now - lag)
    if last_end is None:
        start = _whole_seconds(now - initial_lookback)
    elif last_end >= horizon:
        return Window(start=last_end, end=last_end, more=False)  # caught up: nothing new yet
    else:
        start = _whole_seconds(last_end - overlap)
    end = min(start + window, horizon)
    # Continue until a window reaches the horizon, not merely until the gap is under one
    # window: the next window starts ``overlap`` earlier, so a gap of (window - overlap, window]
    # would otherwise need two scheduled polls. The last step ends exactly at the horizon.
    return Window(start=start, end=end, more=end < horizon)


def read_cursor(cursor: Mapping[str, Any] | None, *, platform: str) -> datetime | None:
    """The window end stored in a cursor ``{"end": iso}``; None for the first run."""
    if not cursor:
        return None
    try:
        end = datetime.fromisoformat(str(cursor["end"]))
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"{platform} poll cursor is malformed (expected {{'end': iso-time}})") from exc
    if end.tzinfo is None:
        raise ConfigError(f"{platform} poll cursor time has no zone")
    return end


@dataclass(frozen=True, slots=True)
class WindowPlanner:
    """One platform's windows: its name (for messages) and its longest allowed window."""

    platform: str
    max_window: timedelta | None = None

    def plan_window(self, last_end: datetime | None, now: datetime, *, window: timedelta,
                    lag: timedelta, overlap: timedelta, initial_lookback: timedelta) -> Window:
        """:func:`plan_window` capped at this platform's ``max_window``."""
        return plan_window(last_end, now, window=window, lag=lag, overlap=overlap,
                           initial_lookback=initial_lookback, max_window=self.max_window)

    def read_cursor(self, cursor: Mapping[str, Any] | None) -> datetime | None:
        return read_cursor(cursor, platform=self.platform)

    def next(self, config: WindowConfig, cursor: Mapping[str, Any] | None,
             now: datetime) -> Window:
        """The next window for a shop, from its stored ``cursor`` and its polling settings."""
        return self.plan_window(
            self.read_cursor(cursor),
            now,
            window=timedelta(minutes=config.window_minutes),
            lag=timedelta(seconds=config.lag_seconds),
            overlap=timedelta(seconds=config.overlap_seconds),
            initial_lookback=timedelta(minutes=config.initial_lookback_minutes),
        )


    async def step(self, config: WindowConfig, cursor: Mapping[str, Any] | None,
                   now: datetime, clock: PlatformClock, fetch: FetchWindow) -> PollResult:
        """One windowed poll step: the next window in the platform's time after ``cursor``
        as of ``now`` (our clock), its orders from ``fetch``, and the cursor to store.

        The window's own answers measure the platform's clock; only when there is nothing to
        ask on an unmeasured clock is the platform probed first. If the answers show that the
        window reached past the platform's horizon (it was planned on a clock that was off),
        the cursor is held at that horizon (never moved back); on a first run it stays unset
        and the step is repeated at once with the measured clock.
        """
        last_end = self.read_cursor(cursor)
        window = self.next(config, cursor, clock.platform(now))
        if window.empty and not clock.measured:
            # Nothing to ask on our clock, but the platform's may be ahead: measure it
            # rather than wait until ours catches up.
            await clock.ensure_measured()
            window = self.next(config, cursor, clock.platform(now))
        if window.empty:
            return PollResult(orders=(), cursor=dict(cursor or {}), more=False)
        orders = tuple(await fetch(window))
        horizon = _whole_seconds(clock.platform(now) - timedelta(seconds=config.lag_seconds))
        if window.end <= horizon + SETTLE_TOLERANCE:
            return PollResult(orders=orders, cursor=write_cursor(window.end), more=window.more)
        if last_end is None:
            return PollResult(orders=orders, cursor=dict(cursor or {}), more=True)
        return PollResult(orders=orders, cursor=write_cursor(max(horizon, last_end)),
                          more=False)

    def trailing(self, config: WindowConfig, now: datetime, period: timedelta,
                 clock: PlatformClock) -> list[Window]:
        """Windows covering ``period`` up to the platform's horizon as of ``now`` (our
        clock), each within the platform's cap, oldest first (the reconciliation sweep)."""
        end = _whole_seconds(clock.platform(now) - timedelta(seconds=config.lag_seconds))
        start = end - period
        size = self.max_window or period
        windows = []
        while start < end:
            stop = min(start + size, end)
            windows.append(Window(start=start, end=stop, more=stop < end))
            start = stop
        return windows


def write_cursor(end: datetime) -> dict[str, str]:
    return {"end": end.isoformat()}


def _whole_seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)
