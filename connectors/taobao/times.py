"""TOP's wall-clock format: ``yyyy-MM-dd HH:mm:ss`` in China Standard Time (GMT+8).

Every timestamp TOP sends or expects (system ``timestamp``, ``start_modified``, ``pay_time``,
``modified``) is a naive string in GMT+8. This module converts between that and aware UTC
datetimes; it must never return a naive datetime or guess a zone for an aware input.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

CST = timezone(timedelta(hours=8), "GMT+8")
TOP_FORMAT = "%Y-%m-%d %H:%M:%S"


def format_top_time(moment: datetime) -> str:
    """Render an aware datetime as TOP's GMT+8 string (seconds are truncated)."""
    if moment.tzinfo is None:
        raise ValueError("format_top_time needs an aware datetime")
    return moment.astimezone(CST).strftime(TOP_FORMAT)


def parse_top_time(text: str) -> datetime:
    """Parse TOP's GMT+8 string into an aware UTC datetime; ValueError if malformed."""
    return datetime.strptime(text.strip(), TOP_FORMAT).replace(tzinfo=CST).astimezone(UTC)
