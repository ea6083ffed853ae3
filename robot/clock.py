"""Time in one place: naive UTC datetimes for the database, aware ones at the edges."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

# Codes that never expire sort last in the stock index under this sentinel.
NEVER = datetime(9999, 12, 31)


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
