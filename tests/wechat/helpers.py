"""Helpers for the WeChat tests: an in-memory ShopContext, configs, the fake on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from connectors.wechat import WechatConfig, WechatConnector
from connectors.wechat.fake import FakeClock, FakeWechat, create_app

SKU = "wx-card"
PREFIX = "CT"
UNIT = 1000
BACKEND_SECRET = "backend-hmac-secret"


class MemoryContext:
    """A ShopContext keeping secrets in a dict (shared by connectors given the same one)."""

    def __init__(self, shop: str = "wx-shop") -> None:
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


def platform_config(fake: FakeWechat, base_url: str = "http://wechat.fake",
                    **overrides: Any) -> dict[str, Any]:
    """The ``platform_config`` mapping for a shop on ``fake`` (as a shop file would hold)."""
    values: dict[str, Any] = {
        "appid": fake.appid, "app_secret": fake.app_secret, "mchid": fake.mchid,
        "apiv3_key": fake.apiv3_key,
        "wechatpay_public_keys": {fake.serial: fake.public_key_pem},
        "backend_secret": BACKEND_SECRET,
        "sku_rules": [{"prefix": PREFIX, "sku": SKU, "unit_price_cents": UNIT}],
        "base_url": base_url,
    }
    values.update(overrides)
    return values


def make_config(fake: FakeWechat, base_url: str = "http://wechat.fake",
                **overrides: Any) -> WechatConfig:
    return WechatConfig(**platform_config(fake, base_url, **overrides))


def make_fake(clock: FakeClock | None = None, **kwargs: Any) -> FakeWechat:
    return FakeWechat(clock=clock.now if clock else None, **kwargs)


def connector_for(fake: FakeWechat, base_url: str, context: MemoryContext | None = None, *,
                  clock: FakeClock | None = None, pooled: bool = False,
                  **overrides: Any) -> WechatConnector:
    """A connector on the fake. ``pooled=False`` keeps no idle connection, for connectors
    driven from several successive event loops (a pooled connection cannot outlive its
    loop)."""
    transport = None if pooled else httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_keepalive_connections=0))
    return WechatConnector(make_config(fake, base_url, **overrides), context or MemoryContext(),
                           transport=transport, clock=clock.now if clock else None)


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
def live_fake(fake: FakeWechat) -> Iterator[str]:
    """The fake served over loopback; yields the base URL for ``WechatConfig.base_url``."""
    with serve(create_app(fake)) as url:
        yield url
