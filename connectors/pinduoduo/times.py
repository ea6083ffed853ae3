"""Pinduoduo's time formats: Unix seconds on the wire, ``yyyy-MM-dd HH:mm:ss`` Beijing time
in order and refund fields (the GMT+8 strings are :mod:`connectors.common.times`).

This module converts between those and aware UTC datetimes; it must never return a naive
datetime or guess a zone for an aware input.
"""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.common.times import CST, CST_FORMAT
from connectors.common.times import format_cst as format_pdd_time
from connectors.common.times import parse_cst as parse_pdd_time

__all__ = ["CST", "PDD_FORMAT", "format_pdd_time", "from_epoch", "parse_pdd_time", "to_epoch"]

PDD_FORMAT = CST_FORMAT


def to_epoch(moment: datetime) -> int:
    """Whole Unix seconds of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("to_epoch needs an aware datetime")
    return int(moment.timestamp())


def from_epoch(seconds: int | float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
