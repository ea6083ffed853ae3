"""Fixtures for the HTTP side: an app over a fresh database with one in-memory shop.

``http`` builds the Starlette app around an :class:`HttpContext` and wraps it in Starlette's
TestClient (``tests.badinput.snapshot`` proves a request wrote nothing).
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning

from connectors.memory import MemoryConfig, MemoryConnector, MemoryPlatform
from robot import pipeline
from robot.config import PickupConfig, PoolShare, ShopConfig, SkuMapping
from robot.http.app import build_app
from robot.http.context import HttpContext
from robot.http.ratelimit import Bucket, RateLimits
from robot.vault import Vault
from tests.factories import paid_order, seed_codes

with warnings.catch_warnings():
    # Starlette asks for the `httpx2` fork; `httpx` (already a dependency) works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

API_TOKEN = "test-delivery-token-0123456789abcdefghijkl"  # 32+ characters, as config check asks
PUBLIC_URL = "https://robot.example.com"


def shop_config(name: str = "mem", *, platform_name: str | None = None,
                pickup: PickupConfig | None = None, api_token: str | None = API_TOKEN,
                poll_interval: float = 60.0) -> ShopConfig:
    return ShopConfig(
        name=name, platform="memory", file=Path(f"{name}.yaml"),
        poll_interval_seconds=poll_interval,
        items=[SkuMapping(sku_id="s1", pools=[PoolShare(pool="p1")])],
        platform_config=MemoryConfig(name=platform_name or f"http-{uuid.uuid4().hex}"),
        pickup=pickup or PickupConfig(lookup_check="buyer_id_suffix"),
        delivery_api_token=SecretStr(api_token) if api_token else None,
    )


@dataclass
class Http:
    """The app under test and what it was built from."""

    engine: Engine
    vault: Vault
    ctx: HttpContext
    client: TestClient
    platform: MemoryPlatform
    shop: ShopConfig
    woken: list[int] = field(default_factory=list)

    def order(self, platform_order_id: str, *, buyer: str = "buyer-12345678",
              quantity: int = 1) -> int:
        """A paid order taken in and allocated (codes reserved); returns its id."""
        result = pipeline.intake(self.engine, self.shop,
                                 paid_order(platform_order_id, ("s1", quantity), buyer=buyer))
        assert result.order_id is not None
        allocated = pipeline.allocate(self.engine, result.order_id)
        assert allocated is not None and allocated.state == "allocated"
        return result.order_id


def make_http(engine: Engine, vault: Vault, *, shop: ShopConfig | None = None,
              limits: RateLimits | None = None, public_url: str = PUBLIC_URL,
              **ctx_args: Any) -> Http:
    shop = shop or shop_config()
    assert isinstance(shop.platform_config, MemoryConfig)
    platform = MemoryPlatform.named(shop.platform_config.name)
    woken: list[int] = []
    ctx = HttpContext(
        engine=engine, vault=vault, shops={shop.name: shop},
        connectors={shop.name: MemoryConnector(platform)}, public_url=public_url,
        wake=lambda: woken.append(1),
        limits=limits or RateLimits(per_ip=Bucket(1000, 1000), per_order=Bucket(1000, 1000)),
        **ctx_args,
    )
    client = TestClient(build_app(ctx), base_url=public_url)
    return Http(engine, vault, ctx, client, platform, shop, woken)


@pytest.fixture
def http(engine: Engine, vault: Vault) -> Iterator[Http]:
    """The app on a fresh database, one shop ``mem``, ten codes in pool ``p1``."""
    seed_codes(engine, vault, "p1", 10)
    h = make_http(engine, vault)
    with h.client:
        yield h
