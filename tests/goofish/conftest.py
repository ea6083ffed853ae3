"""Fixtures for 闲管家: the robot's app with one goofish shop, 闲管家's fake buyer calling its
gateway, and 闲管家's fake callback endpoint — all in memory (httpx ASGI transports)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from connectors.goofish import GoofishConfig, GoofishConnector
from connectors.goofish.fake import (
    TEST_APP_ID,
    TEST_APP_SECRET,
    TEST_MCH_ID,
    TEST_MCH_SECRET,
    FakeNotifyState,
    GoofishBuyer,
    make_app,
)
from connectors.supplier import Supplier
from robot.config import PoolShare, ShopConfig, SkuMapping
from robot.http.app import build_app
from robot.http.context import HttpContext
from robot.outbox import Dispatcher, RetryPolicy
from robot.vault import Vault

T = TypeVar("T")
GATEWAY = "http://robot.test/supply/xianyu"


def goofish_config() -> GoofishConfig:
    return GoofishConfig(app_id=TEST_APP_ID, app_secret=SecretStr(TEST_APP_SECRET),
                         mch_id=TEST_MCH_ID, mch_secret=SecretStr(TEST_MCH_SECRET))


def goofish_shop(name: str = "xianyu") -> ShopConfig:
    return ShopConfig(
        name=name, platform="goofish", file=Path(f"{name}.yaml"),
        items=[SkuMapping(outer_id="G1001", pools=[PoolShare(pool="p1")],
                          price=Decimal("9.90"), goods_name="视频会员月卡"),
               SkuMapping(outer_id="G2002", pools=[PoolShare(pool="p1", quantity=2)],
                          price=Decimal("18.00"))],
        platform_config=goofish_config())


@dataclass
class Xianyu:
    """The robot serving one goofish shop, and 闲管家's fake on the other side."""

    engine: Engine
    vault: Vault
    shop: ShopConfig
    connector: GoofishConnector
    notify: FakeNotifyState
    buyer: GoofishBuyer

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coro)

    def dispatcher(self, **policy: Any) -> Dispatcher:
        return Dispatcher(self.engine, self.vault, {self.shop.name: self.connector},
                          {self.shop.name: self.shop}, RetryPolicy(**policy), worker="t")


def make_xianyu(engine: Engine, vault: Vault, *, shop: ShopConfig | None = None,
                suppliers: Mapping[str, Supplier] | None = None) -> Xianyu:
    """The robot's app serving ``shop`` (default :func:`goofish_shop`) with ``suppliers``
    running, and 闲管家's fake calling it."""
    shop = shop or goofish_shop()
    notify = FakeNotifyState()
    connector = GoofishConnector(shop.platform_config,  # type: ignore[arg-type]
                                 transport=httpx.ASGITransport(make_app(notify)))
    ctx = HttpContext(engine=engine, vault=vault, shops={shop.name: shop},
                      connectors={shop.name: connector}, suppliers=dict(suppliers or {}))
    buyer = GoofishBuyer(GATEWAY, notify_state=notify,
                         transport=httpx.ASGITransport(build_app(ctx)))
    return Xianyu(engine, vault, shop, connector, notify, buyer)


@pytest.fixture
def xianyu(engine: Engine, vault: Vault) -> Xianyu:
    return make_xianyu(engine, vault)
