"""China Standard Time (GMT+8) wall-clock strings, as TOP, POP and Youzan write them.

Their order and window times are naive ``yyyy-MM-dd HH:mm:ss`` strings in GMT+8. This module
converts between those and aware UTC datetimes; it must never return a naive datetime or
guess a zone for an aware input.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

CST = timezone(timedelta(hours=8), "GMT+8")
CST_FORMAT = "%Y-%m-%d %H:%M:%S"


def format_cst(moment: datetime) -> str:
    """Render an aware datetime as a GMT+8 wall-clock string (seconds are truncated)."""
    if moment.tzinfo is None:
        raise ValueError("a GMT+8 time string needs an aware datetime")
    return moment.astimezone(CST).strftime(CST_FORMAT)


def parse_cst(text: str) -> datetime:
    """Parse a GMT+8 wall-clock string into an aware UTC datetime; ValueError if malformed."""
    return datetime.strptime(text.strip(), CST_FORMAT).replace(tzinfo=CST).astimezone(UTC)


def to_epoch(moment: datetime) -> int:
    """Whole Unix seconds of an aware datetime (Pinduoduo's wire timestamps)."""
    if moment.tzinfo is None:
        raise ValueError("to_epoch needs an aware datetime")
    return int(moment.timestamp())


def from_epoch(seconds: int | float) -> datetime:
    """The aware UTC datetime of Unix seconds."""
    return datetime.fromtimestamp(seconds, UTC)


def epoch_ms(moment: datetime) -> int:
    """Unix milliseconds of an aware datetime (Youzan's refund windows and token expiry)."""
    if moment.tzinfo is None:
        raise ValueError("epoch_ms needs an aware datetime")
    return int(moment.timestamp() * 1000)


def from_epoch_ms(value: int) -> datetime:
    """The aware UTC datetime of Unix milliseconds."""
    return datetime.fromtimestamp(value / 1000, UTC)
