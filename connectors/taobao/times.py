"""TOP's wall-clock format: ``yyyy-MM-dd HH:mm:ss`` in China Standard Time (GMT+8).

Every timestamp TOP sends or expects (system ``timestamp``, ``start_modified``, ``pay_time``,
``modified``) is a naive string in GMT+8; the conversion is :mod:`connectors.common.times`.
It must never return a naive datetime or guess a zone for an aware input.
"""

from __future__ import annotations

from connectors.common.times import CST, CST_FORMAT
from connectors.common.times import format_cst as format_top_time
from connectors.common.times import parse_cst as parse_top_time

__all__ = ["CST", "TOP_FORMAT", "format_top_time", "parse_top_time"]

TOP_FORMAT = CST_FORMAT
