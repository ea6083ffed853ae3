"""Time in one place: naive UTC datetimes for the database, aware ones at the edges."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

#: The robot file's default ``timezone:`` (robot.config.DEFAULT_TIMEZONE): the zone a
#: library call that names none uses for days and times shown.
DEFAULT_ZONE = ZoneInfo("Asia/Shanghai")

# Codes that never expire sort last in the stock index under this sentinel.
NEVER = datetime(9999, 12, 31)
#: "Valid through a day" ends at this wall-clock time of the day (its last whole second).
END_OF_DAY = time(23, 59, 59)


def utcnow() -> datetime:
    """Now as a naive UTC datetime (how every column stores time)."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_naive_utc(value: datetime) -> datetime:
    """Convert an aware datetime to naive UTC; naive input is taken as UTC already."""
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def to_aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def format_age(seconds: float | None) -> str:
    """A duration for people: ``45s``, ``12m``, ``3.5h``; ``never`` for None."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def to_zone(value: datetime, zone: tzinfo) -> datetime:
    """A stored (naive UTC) time as the wall-clock time in ``zone`` (e.g. the shops' time
    zone, :func:`robot.config.zone`), aware."""
    return to_aware(value).astimezone(zone)


def local_to_utc(local: datetime, zone: tzinfo) -> datetime:
    """A wall-clock time in ``zone`` (naive) as naive UTC. An aware input keeps its own
    offset. In a DST gap or fold the earlier reading (``fold=0``) is taken."""
    if local.tzinfo is not None:
        return to_naive_utc(local)
    return to_naive_utc(local.replace(tzinfo=zone))


def day_start(day: date, zone: tzinfo) -> datetime:
    """The first moment of the local ``day`` in ``zone`` (its midnight), naive UTC."""
    return local_to_utc(datetime.combine(day, time()), zone)


def day_end(day: date, zone: tzinfo) -> datetime:
    """The last second of the local ``day`` in ``zone`` (23:59:59 there), naive UTC: what
    "valid through that day" stores."""
    return local_to_utc(datetime.combine(day, END_OF_DAY), zone)


def local_day(value: datetime, zone: tzinfo) -> date:
    """The local date in ``zone`` of a stored (naive UTC) time."""
    return to_zone(value, zone).date()


def offset_seconds(value: datetime, zone: tzinfo) -> int:
    """The UTC offset of ``zone`` (seconds) at the stored (naive UTC) time ``value``."""
    offset = to_zone(value, zone).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


@lru_cache(maxsize=32)  # one report asks for the same window several times
def offset_changes(since: datetime, until: datetime,
                   zone: tzinfo) -> tuple[tuple[datetime, int], ...]:
    """The offsets ``zone`` keeps in ``[since, until)`` (naive UTC): ``[(start, offset_s)]``,
    the first starting at ``since``, each next one at the instant (to the second) the zone's
    offset changed (a DST switch). One entry for a zone without changes there."""
    changes = [(since, offset_seconds(since, zone))]
    step = timedelta(hours=6)  # well under the gap between two changes of any real zone
    at = since.replace(microsecond=0)  # whole seconds: zones change offset on a second
    while at < until:
        nxt = min(at + step, until)
        if offset_seconds(nxt, zone) != changes[-1][1]:
            lo, hi = 0, int((nxt - at).total_seconds() + 1)  # changed in (at+lo, at+hi]
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset_seconds(at + timedelta(seconds=mid), zone) == changes[-1][1]:
                    lo = mid
                else:
                    hi = mid
            hi_at = min(at + timedelta(seconds=hi), nxt)
            if hi_at < until:
                changes.append((hi_at, offset_seconds(hi_at, zone)))
        at = nxt
    return tuple(changes)
