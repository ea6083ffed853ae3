"""Helpers for the Youzan tests: an in-memory ShopContext, configs, the fake on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from connectors.youzan import YouzanConfig, YouzanConnector
from connectors.youzan.fake import FakeClock, FakeYouzan, create_app

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"
KDT_ID = "56232"


class MemoryContext:
    """A ShopContext keeping secrets in a dict (shared by connectors given the same one)."""

    def __init__(self, shop: str = "yz-shop") -> None:
        self._shop = shop
        self.secrets: dict[str, str] = {}
        self.stores = 0

    @property
    def shop(self) -> str:
        return self._shop

    def load_secret(self, name: str) -> str | None:
        return self.secrets.get(name)

    def store_secret(self, name: str, value: str) -> None:
        self.stores += 1
        self.secrets[name] = value


def make_config(base_url: str = "http://youzan.fake", **overrides: Any) -> YouzanConfig:
    values: dict[str, Any] = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                              "grant_id": KDT_ID, "base_url": base_url}
    values.update(overrides)
    return YouzanConfig(**values)


def make_fake(clock: FakeClock | None = None, **kwargs: Any) -> FakeYouzan:
    """The fake with the test credentials, on ``clock`` (a fresh FakeClock when None)."""
    return FakeYouzan(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, kdt_id=KDT_ID,
                      clock=(clock or FakeClock()).now, **kwargs)


def make_real_time_fake() -> FakeYouzan:
    """The fake on the wall clock (for the daemon, which polls with real time)."""
    return FakeYouzan(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, kdt_id=KDT_ID)


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue from now on, so no readiness wait is needed
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive()


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
