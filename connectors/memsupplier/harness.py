"""Contract harness for the in-memory supplier (a fresh backend per harness)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from connectors.memsupplier import MemorySupplier, MemorySupplierBackend
from connectors.supplier import Supplier


class MemorySupplierHarness:
    card_product = "card-youku-30"
    topup_product = "topup-mobile-50"

    def __init__(self) -> None:
        self.backend = MemorySupplierBackend()

    def supplier(self) -> Supplier:
        return MemorySupplier(self.backend)

    def settle(self) -> None:
        self.backend.settle()

    def charged_cents(self) -> int:
        return self.backend.charged_cents()

    def lose_next_answer(self) -> None:
        self.backend.arm("lose_answer")

    def lose_next_request(self) -> None:
        self.backend.arm("lose_request")

    def busy_next(self) -> None:
        self.backend.arm("busy")

    def fail_next_after_accept(self, reason: str) -> None:
        self.backend.arm("accept_then_fail", reason)

    def duplicate_next(self) -> None:
        self.backend.arm("duplicate")

    def callback(self, key: str) -> tuple[Mapping[str, str], bytes] | None:
        return self.backend.callback(key)

    def expire_credentials(self) -> None:
        self.backend.revoked = True


@contextmanager
def make_harness() -> Iterator[MemorySupplierHarness]:
    yield MemorySupplierHarness()
