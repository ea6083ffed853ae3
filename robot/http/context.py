"""What the HTTP side borrows from the daemon: engine, vault, shops, connectors and hooks.

Built by the daemon (:meth:`robot.daemon.Robot.http_task`) or by a test; the Starlette app
reads it from ``app.state.ctx``. This module must never open connections or read files: it
only holds references.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from connectors.base import Connector
from connectors.supplier import Supplier
from robot.clock import utcnow
from robot.config import DEFAULT_TIMEZONE, ShopConfig, SkuMapping, zone
from robot.groupcommit import GroupCommit
from robot.http.address import IPNetwork
from robot.http.guard import GuardSettings, LookupGuard
from robot.http.links import derive_key, link_key
from robot.http.metrics import Metrics
from robot.http.ratelimit import RateLimits, TokenBuckets
from robot.poolpage import page_key
from robot.vault import Vault

if TYPE_CHECKING:
    from robot.pipeline import IntakeResult

MAX_PUSH_BODY = 1024 * 1024  # 1 MiB: larger pushes get 413
MAX_FORM_BODY = 4096  # the pickup forms are a few fields


def _nothing() -> None:
    return None


def _no_broken() -> Mapping[str, str]:
    return {}


def _no_skew() -> Mapping[str, float]:
    return {}


@dataclass
class HttpContext:
    """Everything the endpoints need; ``shops`` and ``connectors`` hold running shops only."""

    engine: Engine
    vault: Vault
    shops: Mapping[str, ShopConfig]
    connectors: Mapping[str, Connector]
    public_url: str = "http://127.0.0.1:8080"
    #: New orders arrived (the daemon's ``Robot.wake``).
    wake: Callable[[], None] = _nothing
    #: Orders were just taken in with these results (the daemon's ``Robot.wake_for``: only
    #: the loops with work for them, allocated orders handed to the shipper); None: :attr:`wake`.
    wake_for: Callable[[Collection[IntakeResult]], None] | None = None
    #: Shops whose connector failed to build, with the reason.
    broken_shops: Callable[[], Mapping[str, str]] = _no_broken
    #: Shops whose platform clock is past ``max_clock_offset`` from ours, with the offset (s).
    clock_skewed: Callable[[], Mapping[str, float]] = _no_skew
    max_clock_offset: float = 60.0
    limits: RateLimits = field(default_factory=RateLimits)
    max_push_body: int = MAX_PUSH_BODY
    db_timeout: float = 2.0  # seconds for the health check's SELECT 1
    started_at: datetime = field(default_factory=utcnow)
    metrics: Metrics = field(default_factory=Metrics)
    #: The shops' time zone (``timezone`` in the robot file): the lookup's ``paid_at``.
    timezone: str = DEFAULT_TIMEZONE
    guard_settings: GuardSettings = field(default_factory=GuardSettings)
    #: Monotonic seconds and a non-blocking wait (tests inject a simulated clock).
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    #: Reverse proxies whose X-Forwarded-For is believed (``http.trusted_proxies``).
    trusted_proxies: tuple[IPNetwork, ...] = ()
    #: Supplier clients by the robot file's name (their callbacks), and the sourcing
    #: worker's wake-up (the daemon's ``Robot.wake_sourcing``).
    suppliers: Mapping[str, Supplier] = field(default_factory=dict)
    wake_sourcing: Callable[[], None] = _nothing
    #: Pushes arriving together are taken in in shared transactions (the daemon's, shared
    #: with the write-back); None: one transaction per push.
    group: GroupCommit | None = None

    def __post_init__(self) -> None:
        self.link_key = link_key(self.vault)
        self.ip_key = derive_key(self.vault, "ip-hash")
        self.csrf_key = derive_key(self.vault, "pickup-csrf")
        self.pool_page_key = page_key(self.vault)
        self.per_ip = TokenBuckets(self.limits.per_ip, clock=self.clock)
        self.per_order = TokenBuckets(self.limits.per_order, clock=self.clock)
        self.guard = LookupGuard(self.guard_settings, clock=self.clock)
        self.zone = zone(self.timezone)
        self.api_client_failures = TokenBuckets(self.limits.api_failures_per_client,
                                               clock=self.clock)
        self.api_shop_failures = TokenBuckets(self.limits.api_failures_per_shop,
                                              clock=self.clock)

    def items_of(self, shop: str) -> Sequence[SkuMapping]:
        """The shop's item mappings (none for a shop that is not running)."""
        config = self.shops.get(shop)
        return config.items if config is not None else ()
