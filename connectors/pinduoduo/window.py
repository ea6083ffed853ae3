"""Incremental time windows for POP's ``*.increment.get`` polling (orders and refunds).

One pure function decides the next window from the stored cursor and "now"; the connector
stores the window's end as the new cursor only after the core has committed its orders.
It must never produce a window longer than POP's 30 minutes, nor one that ends later than
``now - lag`` (POP's doc: end at least 3 minutes before its clock to miss nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from robot.errors import ConfigError

MAX_WINDOW = timedelta(minutes=30)


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
) -> Window:
    """The next window after ``last_end`` (None on the first run) as of ``now`` (aware)."""
    window = min(window, MAX_WINDOW)
    horizon = now.replace(microsecond=0) - lag
    if last_end is None:
        start = now.replace(microsecond=0) - initial_lookback
    elif last_end >= horizon:
        return Window(start=last_end, end=last_end, more=False)
    else:
        start = last_end - overlap
    end = min(start + window, horizon)
    return Window(start=start, end=end, more=end < horizon)


def read_cursor(cursor: Mapping[str, Any] | None) -> datetime | None:
    """The window end stored in a cursor ``{"end": iso}``; None for the first run."""
    if not cursor:
        return None
    try:
        end = datetime.fromisoformat(str(cursor["end"]))
    except (KeyError, ValueError) as exc:
        raise ConfigError("pinduoduo poll cursor is malformed (expected {'end': iso}") from exc
    if end.tzinfo is None:
        raise ConfigError("pinduoduo poll cursor time has no zone")
    return end


def write_cursor(end: datetime) -> dict[str, str]:
    return {"end": end.isoformat()}
