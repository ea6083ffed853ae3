"""The channel contract harness for Acme: the connector against the fake over loopback."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from acme_robot.client import AcmeConnector
from acme_robot.config import AcmeConfig
from acme_robot.fake import FakeAcme, create_app
from connectors.base import Connector
from connectors.testing.harness import served_write_backs
from connectors.testing.loopback import serve_in_thread


class AcmeHarness:
    platform = "acme"
    sku_id = "ACME-SKU-1"

    def __init__(self, fake: FakeAcme, base_url: str) -> None:
        self.fake = fake
        self.base_url = base_url

    def connector(self) -> Connector:
        # Driven from several asyncio.run() loops: no pooled connection may outlive its loop.
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        config = AcmeConfig(base_url=self.base_url, api_key=self.fake.api_key,
                            push_secret=self.fake.push_secret)
        return AcmeConnector(config, shop="contract", transport=transport)

    def create_paid_order(self, quantity: int = 1) -> str:
        return self.fake.create_order(self.sku_id, quantity)

    def close_order(self, platform_order_id: str) -> None:
        self.fake.close_order(platform_order_id)

    def shipments(self, platform_order_id: str) -> int:
        return self.fake.orders[platform_order_id].shipments

    def memo(self, platform_order_id: str) -> str | None:
        return self.fake.orders[platform_order_id].memo

    def expire_credentials(self) -> None:
        self.fake.revoked = True

    def signed_push(self, platform_order_id: str) -> tuple[Mapping[str, str], bytes] | None:
        return self.fake.signed_push(platform_order_id)

    def write_backs(self, platform_order_id: str) -> list[dict[str, Any]]:
        return served_write_backs(self.base_url, platform_order_id)


@contextmanager
def make_harness() -> Iterator[AcmeHarness]:
    fake = FakeAcme()
    with serve_in_thread(create_app(fake)) as base_url:
        yield AcmeHarness(fake, base_url)
