"""A client-side limiter holding calls under POP's published rate limits (PLATFORMS.md §2.8).

Sliding-window counters per (API, scope): *merchant* limits count one shop's calls, *app*
limits every shop of one client_id in this process, *api* limits every caller in this
process. A call that would exceed a limit waits (through an injectable ``sleep``) until the
oldest call in the window leaves it. This keeps us out of 52101/70031 answers; it is not a
lock and never the reason anything is safe. It must never drop or reorder a call.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

Scope = Literal["merchant", "app", "api"]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Limit:
    calls: int
    per_seconds: float
    scope: Scope


LIMITS: dict[str, tuple[Limit, ...]] = {
    "pdd.order.number.list.increment.get": (Limit(3000, 60, "merchant"),),
    "pdd.order.information.get": (Limit(30000, 60, "merchant"), Limit(2000, 1, "api")),
    "pdd.refund.list.increment.get": (
        Limit(100, 10, "merchant"),
        Limit(5500, 1, "api"),
        Limit(500, 1, "app"),
    ),
    "pdd.logistics.online.send": (Limit(5000, 1, "api"),),
}


class RateLimiter:
    """Sliding-window limits shared by every connector holding this instance."""

    def __init__(
        self,
        limits: dict[str, tuple[Limit, ...]] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._limits = LIMITS if limits is None else limits
        self._clock = clock
        self._sleep = sleep
        self._windows: dict[tuple[str, ...], deque[float]] = {}
        self._lock = threading.Lock()
        self.waited = 0.0  # total seconds spent waiting (for tests and metrics)

    def _keys(self, api: str, client_id: str, merchant: str) -> list[tuple[tuple[str, ...], Limit]]:
        keys = []
        for limit in self._limits.get(api, ()):
            if limit.scope == "merchant":
                key: tuple[str, ...] = (api, "merchant", client_id, merchant)
            elif limit.scope == "app":
                key = (api, "app", client_id)
            else:
                key = (api, "api")
            keys.append(((*key, str(limit.per_seconds)), limit))
        return keys

    def _try(self, keys: list[tuple[tuple[str, ...], Limit]]) -> float:
        """Take a slot in every window and return 0, or return how long to wait (taking none)."""
        with self._lock:
            now = self._clock()
            wait = 0.0
            for key, limit in keys:
                window = self._windows.setdefault(key, deque())
                while window and window[0] <= now - limit.per_seconds:
                    window.popleft()
                if len(window) >= limit.calls:
                    wait = max(wait, window[0] + limit.per_seconds - now)
            if wait > 0:
                return wait
            for key, _ in keys:
                self._windows[key].append(now)
            return 0.0

    async def acquire(self, api: str, *, client_id: str, merchant: str) -> None:
        """Wait until one more ``api`` call fits every limit, then count it."""
        keys = self._keys(api, client_id, merchant)
        if not keys:
            return
        while True:
            wait = self._try(keys)
            if wait <= 0:
                return
            self.waited += wait
            await self._sleep(wait)


#: The limiter every connector built by the factory shares (one process, many shops).
SHARED = RateLimiter()
