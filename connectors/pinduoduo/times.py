"""Pinduoduo's time formats: Unix seconds on the wire, ``yyyy-MM-dd HH:mm:ss`` Beijing time
in order and refund fields.

This module converts between those and aware UTC datetimes; it must never return a naive
datetime or guess a zone for an aware input.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

CST = timezone(timedelta(hours=8), "GMT+8")
PDD_FORMAT = "%Y-%m-%d %H:%M:%S"


def to_epoch(moment: datetime) -> int:
    """Whole Unix seconds of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("to_epoch needs an aware datetime")
    return int(moment.timestamp())


def from_epoch(seconds: int | float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def format_pdd_time(moment: datetime) -> str:
    """An aware datetime as PDD's Beijing-time string (seconds truncated)."""
    if moment.tzinfo is None:
        raise ValueError("format_pdd_time needs an aware datetime")
    return moment.astimezone(CST).strftime(PDD_FORMAT)


def parse_pdd_time(text: str) -> datetime:
    """PDD's Beijing-time string as aware UTC; ValueError if malformed."""
    return datetime.strptime(text.strip(), PDD_FORMAT).replace(tzinfo=CST).astimezone(UTC)
