"""Contract harness for Juhe: the client against the fake over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from connectors.fakekit import FakeClock
from connectors.juhe.client import JuheSupplier
from connectors.juhe.fake import TEST_KEY, TEST_OPENID, JuheFakeState, make_app
from connectors.supplier import Supplier
from connectors.testing.loopback import serve_in_thread


class JuheHarness:
    card_product = None  # Juhe sells no cards
    topup_product = "mobile-50"

    def __init__(self, state: JuheFakeState, url: str) -> None:
        self.state = state
        self.url = url

    def fund(self, cents: int) -> None:
        """Give the fake account at least ``cents`` of balance (a long run buys more than the
        fake starts with)."""
        with self.state.lock:
            self.state.balance = max(self.state.balance, cents)

    def config_values(self) -> dict[str, object]:
        """The robot file's ``config:`` of a supplier account on this fake (its public test
        credentials: ``robot demo`` configures Juhe with it)."""
        return {"openid": TEST_OPENID, "key": TEST_KEY, "base_url": self.url,
                "face_values": [10, 50, 100], "timeout_seconds": 5.0}

    def supplier(self) -> Supplier:
        return JuheSupplier(openid=TEST_OPENID, key=TEST_KEY, base_url=self.url,
                            face_values=(10, 50, 100), timeout=5.0)

    def settle(self) -> None:
        self.state.settle()

    def charged_cents(self) -> int:
        return self.state.charged_cents()

    def lose_next_answer(self) -> None:
        self.state.set_faults(lose_answer=1)

    def lose_next_request(self) -> None:
        self.state.set_faults(lose_request=1)

    def busy_next(self) -> None:
        self.state.set_faults(busy=1)

    def fail_next_after_accept(self, reason: str) -> None:
        self.state.set_faults(accept_then_fail=1, fail_reason=reason)

    def duplicate_next(self) -> None:
        self.state.set_faults(duplicate_answer=1)

    def callback(self, key: str) -> tuple[Mapping[str, str], bytes] | None:
        # Juhe's callback signs the order numbers only, not the state: the client reads it
        # as "query this order", never as the purchase itself (see the client), so the
        # contract's callback-as-truth check does not apply. Tested in tests/juhe.
        return None

    def expire_credentials(self) -> None:
        self.state.expire_tokens()


@contextmanager
def make_harness() -> Iterator[JuheHarness]:
    state = JuheFakeState(clock=FakeClock().now)
    with serve_in_thread(make_app(state), before_stop=state.release_hangs) as url:
        yield JuheHarness(state, url)
