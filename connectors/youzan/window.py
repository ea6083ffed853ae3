"""Update-time windows for polling ``youzan.trades.sold.get``, and the stored cursor.

The planning itself is :mod:`connectors.common.window`; Youzan adds no cap beyond the
configured window. It must never produce a window ending later than ``now - lag`` (Youzan's
list APIs lag behind the trades).
"""

from __future__ import annotations

from connectors.common.window import Window, WindowPlanner, write_cursor

__all__ = ["PLANNER", "Window", "plan_window", "read_cursor", "write_cursor"]

PLANNER = WindowPlanner("youzan")
plan_window = PLANNER.plan_window
read_cursor = PLANNER.read_cursor
