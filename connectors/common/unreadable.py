"""Orders the platform sent but we cannot read, handed to the core instead of being dropped.

A connector that cannot normalize one order (a field missing, null or out of shape) returns
an :class:`connectors.base.UnreadableOrder` in its place (the type is contract, so it lives in
:mod:`connectors.base`; see there what the core does with it).

Every connector uses the same two helpers (:func:`normalize_each` for rows already in hand,
:func:`fetch_each` for orders read one by one), so the rule is one piece of code. Nothing here
may put platform data other than the id and the problem text into an UnreadableOrder: the
problem goes into logs and the order's reason, so it must never carry a secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from connectors.base import Order, unreadable
from connectors.errors import BadPlatformData, Skippable

Row = TypeVar("Row")


def normalize_each(rows: Iterable[Row], normalize: Callable[[Row], Order],
                   id_of: Callable[[Row], Any]) -> tuple[Order, ...]:
    """``normalize`` every row; a row it cannot read becomes an :class:`UnreadableOrder`."""
    found: list[Order] = []
    for row in rows:
        try:
            found.append(normalize(row))
        except BadPlatformData as exc:
            found.append(unreadable(id_of(row), exc.message))
    return tuple(found)


async def fetch_each(ids: Sequence[str], fetch: Callable[[str], Awaitable[Order]], *,
                     on_skip: Callable[[str, Skippable], None],
                     concurrency: int = 1) -> tuple[Order, ...]:
    """Read each order (``concurrency`` at a time, keeping the given order).

    Bad data becomes an :class:`UnreadableOrder` under the id we asked for; any other
    Skippable (the order vanished, the platform refuses to show it) is passed to ``on_skip``
    and left out. Retriable and Fatal errors propagate: the whole step fails and is repeated.
    """
    gate = asyncio.Semaphore(max(1, concurrency))

    async def read(platform_order_id: str) -> Order | None:
        async with gate:
            try:
                return await fetch(platform_order_id)
            except BadPlatformData as exc:
                return unreadable(platform_order_id, exc.message)
            except Skippable as exc:
                on_skip(platform_order_id, exc)
                return None

    found = await asyncio.gather(*(read(i) for i in ids))
    return tuple(order for order in found if order is not None)
