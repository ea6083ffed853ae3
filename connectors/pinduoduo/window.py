"""Incremental time windows for POP's ``*.increment.get`` polling (orders and refunds).

The planning itself is :mod:`connectors.common.window`; this module holds POP's cap. It must
never produce a window longer than POP's 30 minutes, nor one that ends later than
``now - lag`` (POP's doc: end at least 3 minutes before its clock to miss nothing).
"""

from __future__ import annotations

from datetime import timedelta

from connectors.common.window import Window, WindowPlanner, write_cursor

__all__ = ["MAX_WINDOW", "PLANNER", "Window", "plan_window", "read_cursor", "write_cursor"]

MAX_WINDOW = timedelta(minutes=30)
PLANNER = WindowPlanner("pinduoduo", max_window=MAX_WINDOW)
plan_window = PLANNER.plan_window
read_cursor = PLANNER.read_cursor
