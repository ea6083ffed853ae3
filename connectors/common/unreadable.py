"""Orders the platform sent but we cannot read, handed to the core instead of being dropped.

A connector that cannot normalize one order (a field missing, null or out of shape) returns
an :class:`UnreadableOrder` in its place: the core parks it as ``held`` with the problem as
the reason (DESIGN.md: a Skippable error parks one order, the shop goes on), and takes it in
normally once the platform sends a readable snapshot. When even the order's id cannot be
read, ``platform_order_id`` is ``""``: the core cannot park it, so it logs and audits it.

Every connector uses the same two helpers (:func:`normalize_each` for rows already in hand,
:func:`fetch_each` for orders read one by one), so the rule is one piece of code. Nothing here
may put platform data other than the id and the problem text into an UnreadableOrder: the
problem goes into logs and the order's reason, so it must never carry a secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from connectors.base import Order, PlatformStatus
from robot.errors import BadPlatformData, Skippable

#: The longest problem text kept (it becomes the order's reason and a log field).
PROBLEM_MAX = 300

Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class UnreadableOrder(Order):
    """An order the platform sent that could not be normalized; ``problem`` says why.

    Only ``platform_order_id`` (``""`` when unreadable too) and ``problem`` mean anything;
    ``status`` is PAID so that a connector's "paid orders only" filter passes it on to the
    core, which checks for this type before looking at anything else.
    """

    problem: str = "unreadable"


def readable_id(value: Any) -> str:
    """A platform order id as text, or ``""`` when it is missing or not an id at all."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return str(value).strip()


def unreadable(platform_order_id: Any, problem: str) -> UnreadableOrder:
    """The stand-in for one order that could not be read (``platform_order_id`` may be None)."""
    return UnreadableOrder(platform_order_id=readable_id(platform_order_id),
                           status=PlatformStatus.PAID, lines=(),
                           problem=" ".join(problem.split())[:PROBLEM_MAX] or "unreadable")


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
