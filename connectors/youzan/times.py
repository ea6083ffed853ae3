"""Youzan's wall-clock format: ``yyyy-MM-dd HH:mm:ss`` in China Standard Time (GMT+8).

Order times (``created``, ``update_time``, ``pay_time``, the ``start_update`` / ``end_update``
window) are naive GMT+8 strings; refund search windows and token expiry are epoch numbers.
This module must never return a naive datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

CST = timezone(timedelta(hours=8), "GMT+8")
YZ_FORMAT = "%Y-%m-%d %H:%M:%S"


def format_yz_time(moment: datetime) -> str:
    """Render an aware datetime as Youzan's GMT+8 string (seconds are truncated)."""
    if moment.tzinfo is None:
        raise ValueError("format_yz_time needs an aware datetime")
    return moment.astimezone(CST).strftime(YZ_FORMAT)


def parse_yz_time(text: str) -> datetime:
    """Parse Youzan's GMT+8 string into an aware UTC datetime; ValueError if malformed."""
    return datetime.strptime(text.strip(), YZ_FORMAT).replace(tzinfo=CST).astimezone(UTC)


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_epoch_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)
