"""Contract harness for Fulu: the client against the fake gateway over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx
from pydantic import SecretStr

from connectors.fulu.client import FuluSupplier
from connectors.fulu.config import FuluConfig
from connectors.fulu.fake import CallbackSender, create_app
from connectors.fulu.fake_state import FakeFulu, FuluOrder
from connectors.supplier import Supplier
from connectors.testing.loopback import serve_in_thread


class FuluHarness:
    card_product = "10000001"
    topup_product = "20000050"  # 全国话费50元 (fulu.order.mobile.add), as the other suppliers sell

    def __init__(self, fake: FakeFulu, gateway: str, sender: CallbackSender) -> None:
        self.fake = fake
        self.gateway = gateway
        #: posts the fake's callbacks (to ``fake.callback_url``)
        self.sender = sender

    def config(self, **changes: object) -> FuluConfig:
        values: dict[str, object] = {"app_key": self.fake.app_key,
                                     "app_secret": SecretStr(self.fake.app_secret),
                                     "gateway": self.gateway, "timeout_seconds": 5.0}
        values.update(changes)
        return FuluConfig.model_validate(values)

    def fund(self, cents: int) -> None:
        """Give the fake account at least ``cents`` of balance (a long run buys more than the
        fake starts with)."""
        with self.fake.lock:
            self.fake.balance_cents = max(self.fake.balance_cents, cents)

    def config_values(self) -> dict[str, object]:
        """The robot file's ``config:`` of a supplier account on this fake (its test
        credentials: ``robot demo`` configures Fulu with it)."""
        return {"app_key": self.fake.app_key, "app_secret": self.fake.app_secret,
                "gateway": self.gateway, "timeout_seconds": 5.0}

    def supplier(self) -> Supplier:
        # The suite drives one client from several asyncio.run() loops; without keep-alive
        # no pooled connection outlives the loop that opened it.
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        return FuluSupplier(self.config(), transport=transport, clock=self.fake.now)

    def settle(self) -> None:
        self.fake.settle()

    def charged_cents(self) -> int:
        return self.fake.charged_cents()

    def lose_next_answer(self) -> None:
        self.fake.set_faults(lose_answer=1)

    def lose_next_request(self) -> None:
        self.fake.set_faults(drop_request=1)

    def busy_next(self) -> None:
        self.fake.set_faults(busy=1)

    def fail_next_after_accept(self, reason: str) -> None:
        self.fake.set_faults(accept_then_fail=1)
        self.fake.fail_reason = reason

    def duplicate_next(self) -> None:
        self.fake.set_faults(duplicate_answer=1)

    def order(self, key: str) -> FuluOrder:
        return self.fake.orders[key]

    def callback(self, key: str) -> tuple[Mapping[str, str], bytes] | None:
        body = self.fake.callback_body(self.fake.orders[key])
        return {"Content-Type": "application/json; charset=utf-8"}, body

    def expire_credentials(self) -> None:
        self.fake.expire_tokens()


@contextmanager
def make_harness(fake: FakeFulu | None = None) -> Iterator[FuluHarness]:
    fake = fake or FakeFulu()
    sender = CallbackSender(fake)
    try:
        with serve_in_thread(create_app(fake, sender),
                             before_stop=fake.release_hangs) as base_url:
            yield FuluHarness(fake, f"{base_url}/api/getway", sender)
    finally:
        sender.close()
