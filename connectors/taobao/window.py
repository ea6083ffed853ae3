"""Incremental time windows for TOP's ``*.increment.get`` / ``refunds.receive.get`` polling.

The planning itself is :mod:`connectors.common.window`; this module holds TOP's cap. It must
never produce a window longer than TOP's one-day limit, nor one that ends later than
``now - lag`` (trades modified in the last moments may not be indexed yet).
"""

from __future__ import annotations

from datetime import timedelta

from connectors.common.window import Window, WindowPlanner, write_cursor

__all__ = ["MAX_WINDOW", "PLANNER", "Window", "plan_window", "read_cursor", "write_cursor"]

MAX_WINDOW = timedelta(days=1)  # TOP refuses end_modified - start_modified > 1 day
PLANNER = WindowPlanner("taobao", max_window=MAX_WINDOW)
plan_window = PLANNER.plan_window
read_cursor = PLANNER.read_cursor
