"""A platform access token kept in the shop's encrypted store, renewed before it expires.

The token record lives in the core's per-shop secret store
(:class:`connectors.base.ShopContext`), so a restart or a second process reuses it instead of
asking the platform again. :meth:`DurableToken.token` renews it ``margin`` before expiry;
:meth:`DurableToken.after_rejection` handles a token the platform refused: first the one this
process already replaced it with, then a newer one in the store (another process may have
renewed it), and only then a new one from the platform. How a token is obtained is each
platform's (:meth:`DurableToken.renew`, :meth:`DurableToken.replace`).

This module must never log, or put into an exception, a token or a credential.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from connectors.base import ShopContext

Clock = Callable[[], datetime]


class TokenRecord(Protocol):
    """What the store keeps: the token and enough to tell whether it is still fresh."""

    @property
    def access_token(self) -> str: ...

    def fresh(self, now: datetime, margin: timedelta) -> bool: ...

    def dumps(self) -> str: ...


RecordT = TypeVar("RecordT", bound=TokenRecord)


class DurableToken(Generic[RecordT]):
    """Hands out a valid access token for one shop, renewing it when needed."""

    def __init__(self, context: ShopContext, clock: Clock, *, secret_name: str,
                 margin: timedelta) -> None:
        self._context = context
        self._clock = clock
        self._secret_name = secret_name
        self._margin = margin
        self._record: RecordT | None = None
        self._locks: dict[int, asyncio.Lock] = {}
        self.renewals = 0  # tokens obtained from the platform by this process (tests, status)

    # -- what each platform provides -------------------------------------------------------

    def parse(self, text: str) -> RecordT | None:
        """The stored record, or None when it is unreadable (behave as if nothing was stored)."""
        raise NotImplementedError

    async def renew(self, previous: RecordT | None) -> RecordT:
        """A new token because ``previous`` (None: nothing known) is missing or near expiry."""
        raise NotImplementedError

    async def replace(self, rejected: str, previous: RecordT | None) -> RecordT:
        """A new token because the platform refused ``rejected``."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------

    def _lock(self) -> asyncio.Lock:
        # One lock per loop: an asyncio.Lock must not be shared between event loops.
        key = id(asyncio.get_running_loop())
        if key not in self._locks:
            self._locks = {key: asyncio.Lock()}
        return self._locks[key]

    def _load(self) -> RecordT | None:
        text = self._context.load_secret(self._secret_name)
        return self.parse(text) if text else None

    async def save(self, record: RecordT) -> None:
        """Keep a newly obtained ``record`` in the shop's store and count the renewal."""
        await asyncio.to_thread(self._context.store_secret, self._secret_name, record.dumps())
        self.renewals += 1

    async def token(self) -> str:
        """A token valid for at least the refresh margin (renewed first if it is not)."""
        record = self._record
        if record is not None and record.fresh(self._clock(), self._margin):
            return record.access_token
        async with self._lock():
            record = self._record
            if record is None or not record.fresh(self._clock(), self._margin):
                stored = await asyncio.to_thread(self._load)
                if stored is not None and stored.fresh(self._clock(), self._margin):
                    record = stored
                else:
                    record = await self.renew(stored or record)
                self._record = record
            return record.access_token

    async def after_rejection(self, rejected: str) -> str:
        """The platform refused ``rejected``: a newer known token, or a brand new one."""
        async with self._lock():
            current = self._record
            if current is not None and current.access_token != rejected:
                return current.access_token  # someone in this process renewed it already
            stored = await asyncio.to_thread(self._load)
            if (stored is not None and stored.access_token != rejected
                    and stored.fresh(self._clock(), timedelta(0))):
                self._record = stored
                return stored.access_token
            record = await self.replace(rejected, stored or current)
            self._record = record
            return record.access_token
