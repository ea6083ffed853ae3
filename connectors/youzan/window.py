"""Update-time windows for polling ``youzan.trades.sold.get``, and the stored cursor.

One pure function decides the next window from the stored cursor and "now"; the connector
returns the window's end as the new cursor, which the core stores only after committing the
window's orders. It must never produce a window ending later than ``now - lag`` (Youzan's
list APIs lag behind the trades) nor longer than the configured window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from robot.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Window:
    """``[start, end]`` to query (whole seconds); ``empty`` means nothing to do yet."""

    start: datetime
    end: datetime
    more: bool  # the window stops short of the horizon: call again at once

    @property
    def empty(self) -> bool:
        return self.end <= self.start


def plan_window(last_end: datetime | None, now: datetime, *, window: timedelta,
                lag: timedelta, overlap: timedelta, initial_lookback: timedelta) -> Window:
    """The next window after ``last_end`` (None on the first run) as of ``now`` (aware)."""
    horizon = _whole_seconds(now - lag)
    if last_end is None:
        start = _whole_seconds(now - initial_lookback)
    elif last_end >= horizon:
        return Window(start=last_end, end=last_end, more=False)  # caught up
    else:
        start = _whole_seconds(last_end - overlap)
    end = min(start + window, horizon)
    return Window(start=start, end=end, more=end < horizon)


def read_cursor(cursor: Mapping[str, Any] | None) -> datetime | None:
    """The window end stored in a cursor ``{"end": iso}``; None for the first run."""
    if not cursor:
        return None
    try:
        end = datetime.fromisoformat(str(cursor["end"]))
    except (KeyError, ValueError) as exc:
        raise ConfigError("youzan poll cursor is malformed (expected {'end': iso-time})") from exc
    if end.tzinfo is None:
        raise ConfigError("youzan poll cursor time has no zone")
    return end


def write_cursor(end: datetime) -> dict[str, str]:
    return {"end": end.isoformat()}


def _whole_seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)
