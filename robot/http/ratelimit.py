"""In-process token buckets that slow down enumeration of pickup links and order numbers.

Each process keeps its own buckets: with several robot processes behind one address, a
client gets each process's allowance (the limits multiply by the number of processes). That
still bounds guessing to a rate at which 192-bit tokens and order number + check pairs stay
out of reach; a shared limit would need the database or a proxy in front.

Keys are opaque strings (hashes of IPs, tokens and order numbers); the table is bounded and
forgets the least recently used keys first. This module must never be the reason something is
safe: it only makes guessing slow.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    """``burst`` requests at once, then ``per_second`` more each second."""

    burst: float
    per_second: float


@dataclass(frozen=True)
class RateLimits:
    """The pickup page's limits (per client IP, and per link or order number) and the
    delivery API's limits on failed authentications."""

    per_ip: Bucket = Bucket(burst=30, per_second=30 / 60)
    per_order: Bucket = Bucket(burst=10, per_second=10 / 3600)
    #: Delivery API: failed authentications a client (its address, an IPv6 /64) may make,
    #: and a shop name may take from everyone together (see robot.http.delivery).
    api_failures_per_client: Bucket = Bucket(burst=10, per_second=10 / 600)
    api_failures_per_shop: Bucket = Bucket(burst=60, per_second=60 / 600)


class TokenBuckets:
    """Many buckets of one shape, one per key."""

    def __init__(self, shape: Bucket, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.shape = shape
        self._max = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def has(self, key: str) -> bool:
        """Whether ``key``'s bucket holds a token, without taking it."""
        now = self._clock()
        with self._lock:
            tokens, at = self._state.get(key, (self.shape.burst, now))
        return min(self.shape.burst, tokens + (now - at) * self.shape.per_second) >= 1.0

    def allow(self, key: str) -> bool:
        """Take one token for ``key``; False when its bucket is empty."""
        now = self._clock()
        with self._lock:
            tokens, at = self._state.pop(key, (self.shape.burst, now))
            tokens = min(self.shape.burst, tokens + (now - at) * self.shape.per_second)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._state[key] = (tokens, now)
            while len(self._state) > self._max:
                self._state.popitem(last=False)
            return allowed
