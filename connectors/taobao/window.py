"""Incremental time windows for TOP's ``*.increment.get`` / ``refunds.receive.get`` polling.

One pure function decides the next window from the stored cursor and "now"; the connector
stores the window's end as the new cursor only after the core has committed its orders.
It must never produce a window longer than TOP's one-day limit, nor one that ends later
than ``now - lag`` (trades modified in the last moments may not be indexed yet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from robot.errors import ConfigError

MAX_WINDOW = timedelta(days=1)  # TOP refuses end_modified - start_modified > 1 day


@dataclass(frozen=True, slots=True)
class Window:
    """``[start, end]`` to query (both inclusive, whole seconds); ``empty`` means wait."""

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
) -> Window:
    """The next window after ``last_end`` (None on the first run) as of ``now`` (aware)."""
    window = min(window, MAX_WINDOW)
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


def read_cursor(cursor: Mapping[str, Any] | None) -> datetime | None:
    """The window end stored in a cursor ``{"end": iso}``; None for the first run."""
    if not cursor:
        return None
    try:
        end = datetime.fromisoformat(str(cursor["end"]))
    except (KeyError, ValueError) as exc:
        raise ConfigError("taobao poll cursor is malformed (expected {'end': iso-time})") from exc
    if end.tzinfo is None:
        raise ConfigError("taobao poll cursor time has no zone")
    return end


def write_cursor(end: datetime) -> dict[str, str]:
    return {"end": end.isoformat()}


def _whole_seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)
