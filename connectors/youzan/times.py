"""Youzan's wall-clock format: ``yyyy-MM-dd HH:mm:ss`` in China Standard Time (GMT+8).

Order times (``created``, ``update_time``, ``pay_time``, the ``start_update`` / ``end_update``
window) are naive GMT+8 strings; refund search windows and token expiry are epoch numbers.
The GMT+8 strings are :mod:`connectors.common.times`. This module must never return a
naive datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.common.times import CST, CST_FORMAT
from connectors.common.times import format_cst as format_yz_time
from connectors.common.times import parse_cst as parse_yz_time

__all__ = ["CST", "YZ_FORMAT", "epoch_ms", "format_yz_time", "from_epoch_ms", "parse_yz_time"]

YZ_FORMAT = CST_FORMAT


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_epoch_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)
