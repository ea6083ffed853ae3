"""Helpers for the WeChat tests: an in-memory ShopContext, configs, the fake on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from connectors.wechat import WechatConfig, WechatConnector
from connectors.wechat.fake import FakeClock, FakeWechat, create_app
from tests.helpers import MemoryContext as SharedMemoryContext
from tests.loopback import serve_in_thread

SKU = "wx-card"
PREFIX = "CT"
UNIT = 1000
BACKEND_SECRET = "backend-hmac-secret"


class MemoryContext(SharedMemoryContext):
    """A ShopContext keeping secrets in a dict (shared by connectors given the same one)."""

    def __init__(self, shop: str = "wx-shop") -> None:
        super().__init__(shop)


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


#: Serve an app with uvicorn on a free loopback port in a thread; yields its base URL.
serve = serve_in_thread


@contextmanager
def live_fake(fake: FakeWechat) -> Iterator[str]:
    """The fake served over loopback; yields the base URL for ``WechatConfig.base_url``."""
    with serve(create_app(fake)) as url:
        yield url
