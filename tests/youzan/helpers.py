"""Helpers for the Youzan tests: an in-memory ShopContext, configs, the fake on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from connectors.common.context import MemoryContext as SharedMemoryContext
from connectors.testing.loopback import serve_in_thread
from connectors.youzan import YouzanConnector
from connectors.youzan.fake import FakeClock, FakeYouzan, create_app
from connectors.youzan.harness import CLIENT_ID, CLIENT_SECRET, KDT_ID, make_config, make_fake

#: Re-exported from the plugin's contract harness.
__all__ = ["CLIENT_ID", "CLIENT_SECRET", "KDT_ID", "make_config", "make_fake"]


class MemoryContext(SharedMemoryContext):
    """A ShopContext keeping secrets in a dict (shared by connectors given the same one)."""

    def __init__(self, shop: str = "yz-shop") -> None:
        super().__init__(shop)


def make_real_time_fake() -> FakeYouzan:
    """The fake on the wall clock (for the daemon, which polls with real time)."""
    return FakeYouzan(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, kdt_id=KDT_ID)


#: Serve an app with uvicorn on a free loopback port in a thread; yields its base URL.
serve = serve_in_thread


@contextmanager
def live_fake(fake: FakeYouzan) -> Iterator[str]:
    """The fake served over loopback; yields the base URL for ``YouzanConfig.base_url``."""
    with serve(create_app(fake)) as url:
        yield url


def connector_for(base_url: str, context: MemoryContext | None = None, *,
                  clock: FakeClock | None = None, pooled: bool = True,
                  **overrides: Any) -> YouzanConnector:
    """A connector on the fake. ``pooled=False`` keeps no idle connection, for connectors
    driven from several successive event loops (each ``asyncio.run``): a pooled connection
    cannot outlive the loop it was opened on."""
    transport = None if pooled else httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_keepalive_connections=0))
    return YouzanConnector(make_config(base_url, **overrides), context or MemoryContext(),
                           transport=transport, clock=clock.now if clock else None)


def in_process(fake: FakeYouzan, context: MemoryContext | None = None, *,
               clock: FakeClock | None = None, **overrides: Any) -> YouzanConnector:
    """A connector talking to the fake in-process (httpx ASGI transport, no socket)."""
    return YouzanConnector(make_config(**overrides), context or MemoryContext(),
                           transport=httpx.ASGITransport(app=create_app(fake)),
                           clock=clock.now if clock else None)
