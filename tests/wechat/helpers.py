"""Helpers for the WeChat tests: an in-memory ShopContext, configs, the fake on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from connectors.common.context import MemoryContext as SharedMemoryContext
from connectors.testing.loopback import serve_in_thread
from connectors.wechat import WechatConfig, WechatConnector
from connectors.wechat.fake import FakeClock, FakeWechat, create_app
from connectors.wechat.harness import BACKEND_SECRET, PREFIX, SKU, UNIT, platform_config

#: Re-exported from the plugin's contract harness.
__all__ = ["BACKEND_SECRET", "PREFIX", "SKU", "UNIT", "platform_config"]


class MemoryContext(SharedMemoryContext):
    """A ShopContext keeping secrets in a dict (shared by connectors given the same one)."""

    def __init__(self, shop: str = "wx-shop") -> None:
        super().__init__(shop)


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
