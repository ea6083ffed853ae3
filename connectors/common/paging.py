"""Paging over a modified-time window from the last page back to the first.

Platforms sort these results by modification time, newest first; a row modified while we
page leaves the window and shifts the rows after it one place up. Paging backwards (as TOP's
and POP's docs advise) turns that shift into a duplicate instead of a silently skipped row,
which is why the total count (not a ``has_next`` flag) decides the pages. Rows can repeat;
callers de-duplicate. This module must never stop early on a short page.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from connectors.common.values import as_int

#: Fetches one page (1-based) of a window query and returns the API's answer object.
FetchPage = Callable[[int], Awaitable[Mapping[str, Any]]]
#: The rows inside one answer object.
Rows = Callable[[Mapping[str, Any]], list[dict[str, Any]]]


async def fetch_backwards(fetch: FetchPage, *, rows: Rows, total_key: str,
                          page_size: int) -> list[dict[str, Any]]:
    """Every row of a window: page 1 for the total, then the last page back to the first."""
    first = await fetch(1)
    found = rows(first)
    total = as_int(first.get(total_key))
    if total <= page_size:
        return found
    for number in range(math.ceil(total / page_size), 0, -1):
        found.extend(rows(await fetch(number)))
    return found
