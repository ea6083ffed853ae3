"""The supplier contract every supplier plugin passes (see :mod:`connectors.supplier`).

It pins what the core will rely on to never buy twice and never lose a purchase: placing is
idempotent on our key, an unknown outcome is reported as ``unknown`` (never as failed) and
resolved by a query, only a definite refusal is ``failed`` and charges nothing, card codes
never show in a repr or a log, callbacks are verified, bad credentials are Fatal.

Use it from a plugin's own tests: subclass :class:`SupplierContract` in a ``test_*.py``
module and give the class a ``harness`` fixture yielding your
:class:`~connectors.testing.harness.SupplierHarness`::

    class TestMySupplier(SupplierContract):
        @pytest.fixture
        def harness(self):
            with make_harness() as h:
                yield h

This module imports pytest (a test dependency) and nothing from the robot.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from structlog.testing import capture_logs

from connectors.errors import Fatal, PushRejected, Skippable
from connectors.supplier import (
    Balance,
    NoSuchPurchase,
    Outcome,
    ProductKind,
    Purchase,
    PurchaseRequest,
)
from connectors.testing.harness import SupplierHarness

T = TypeVar("T")
IN_FLIGHT = (Outcome.ACCEPTED, Outcome.PROCESSING, Outcome.SUCCEEDED)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def new_key() -> str:
    return f"T{uuid.uuid4().hex[:20]}"


def card(harness: SupplierHarness, quantity: int = 1, key: str | None = None) -> PurchaseRequest:
    """A purchase of the harness's card product; a top-up (of one unit) for a supplier
    selling no cards, so the rules that hold for any purchase are checked on it too."""
    if harness.card_product is None:
        return PurchaseRequest(key=key or new_key(), product_id=harness.topup_product,
                               account="13800138000")
    return PurchaseRequest(key=key or new_key(), product_id=harness.card_product,
                           quantity=quantity)


def needs_cards(harness: SupplierHarness) -> None:
    """Skip (saying why) a rule about card codes on a supplier that sells no cards."""
    if harness.card_product is None:
        pytest.skip("this supplier sells top-ups only: no card codes to check")


def topup(harness: SupplierHarness, account: str | None = "13800138000") -> PurchaseRequest:
    return PurchaseRequest(key=new_key(), product_id=harness.topup_product, account=account)


def place(harness: SupplierHarness, request: PurchaseRequest) -> Purchase:
    return run(harness.supplier().place(request))


def query(harness: SupplierHarness, key: str) -> Purchase:
    return run(harness.supplier().query(key))


def final(harness: SupplierHarness, key: str) -> Purchase:
    """The purchase under ``key`` once the supplier has finished it."""
    harness.settle()
    found = query(harness, key)
    assert found.outcome.final, f"still {found.outcome} after the supplier settled"
    return found


class SupplierContract:
    """The supplier contract; a subclass provides the ``harness`` fixture."""

    def test_catalogue_lists_typed_priced_products(self, harness: SupplierHarness) -> None:
        """The catalogue holds the harness's card and top-up products, typed and priced."""
        products = {p.product_id: p for p in run(harness.supplier().catalogue())}
        if harness.card_product is not None:
            assert products[harness.card_product].kind is ProductKind.CARD
        assert products[harness.topup_product].kind is ProductKind.TOPUP
        assert all(isinstance(p.price_cents, int) and p.price_cents >= 0
                   for p in products.values())

    def test_card_purchase_succeeds_with_one_card_per_unit(self, harness: SupplierHarness) -> None:
        """A card purchase is accepted (or done) at once, and ends succeeded with exactly
        ``quantity`` cards under our key."""
        needs_cards(harness)
        request = card(harness, quantity=2)
        first = place(harness, request)
        assert first.outcome in IN_FLIGHT
        assert first.key == request.key
        done = final(harness, request.key)
        assert done.outcome is Outcome.SUCCEEDED
        assert len(done.cards) == 2
        assert all(c.code.reveal() for c in done.cards)

    def test_card_codes_never_show_in_a_repr_a_log_or_a_pickle(
            self, harness: SupplierHarness) -> None:
        """The codes bought are plaintext only through reveal(): not in repr, str, format,
        the purchase's repr, the logs of the purchase, nor a pickle."""
        needs_cards(harness)
        request = card(harness)
        with capture_logs() as logs:
            place(harness, request)
            done = final(harness, request.key)
        secrets = [c.code.reveal() for c in done.cards]
        secrets += [c.number.reveal() for c in done.cards if c.number is not None]
        shown = " ".join([repr(done), str(done), f"{done.cards[0].code}", repr(logs)])
        assert secrets
        assert not [s for s in secrets if s in shown]
        with pytest.raises(TypeError):
            pickle.dumps(done)
        assert copy.deepcopy(done) == done

    def test_topup_succeeds_into_the_account(self, harness: SupplierHarness) -> None:
        """A top-up with an account ends succeeded, with no cards."""
        request = topup(harness)
        assert place(harness, request).outcome in IN_FLIGHT
        done = final(harness, request.key)
        assert done.outcome is Outcome.SUCCEEDED
        assert done.cards == ()

    def test_topup_without_account_fails_and_charges_nothing(
            self, harness: SupplierHarness) -> None:
        """A top-up naming no account is a definite failure with a reason; nothing charged."""
        before = harness.charged_cents()
        result = place(harness, topup(harness, account=None))
        assert result.outcome is Outcome.FAILED
        assert result.reason
        assert harness.charged_cents() == before

    def test_unknown_product_fails_with_a_reason(self, harness: SupplierHarness) -> None:
        """A product the supplier does not sell is a definite failure, nothing charged."""
        before = harness.charged_cents()
        request = PurchaseRequest(key=new_key(), product_id="no-such-product-0")
        result = place(harness, request)
        assert result.outcome is Outcome.FAILED
        assert result.reason
        assert harness.charged_cents() == before

    def test_placing_the_same_key_twice_buys_once(self, harness: SupplierHarness) -> None:
        """The same request placed again (before and after it finished) is the same order,
        charged once; never reported failed."""
        request = card(harness)
        first = place(harness, request)
        charged = harness.charged_cents()
        again = place(harness, request)
        assert again.outcome in IN_FLIGHT
        assert again.supplier_order_id == first.supplier_order_id
        done = final(harness, request.key)
        late = place(harness, request)
        assert late.outcome is Outcome.SUCCEEDED
        assert late.cards == done.cards
        assert harness.charged_cents() == charged

    def test_a_key_reused_for_another_purchase_buys_nothing(
            self, harness: SupplierHarness) -> None:
        """Another purchase under a used key is refused (Skippable) or answered with the
        original order; it is never bought, never reported failed."""
        request = card(harness)
        place(harness, request)
        charged = harness.charged_cents()
        other = PurchaseRequest(key=request.key, product_id=harness.topup_product,
                                account="13900139000")
        try:
            answer = place(harness, other)
        except Skippable:
            pass
        else:
            assert answer.outcome is not Outcome.FAILED
            assert answer.supplier_order_id == query(harness, request.key).supplier_order_id
        assert harness.charged_cents() == charged

    def test_a_lost_answer_is_unknown_and_the_query_finds_the_order(
            self, harness: SupplierHarness) -> None:
        """The order was made but its answer lost: the outcome is unknown (not failed); a
        query by the key finds it, and placing again does not buy again."""
        request = card(harness)
        harness.lose_next_answer()
        result = place(harness, request)
        assert result.outcome is Outcome.UNKNOWN
        assert result.key == request.key
        charged = harness.charged_cents()
        assert query(harness, request.key).outcome in IN_FLIGHT
        assert place(harness, request).outcome in IN_FLIGHT
        assert final(harness, request.key).outcome is Outcome.SUCCEEDED
        assert harness.charged_cents() == charged

    def test_a_lost_request_is_unknown_and_the_query_says_no_such_purchase(
            self, harness: SupplierHarness) -> None:
        """The request never arrived: unknown, not failed; the query says no such purchase
        (so placing again under the key is safe), and placing again buys once."""
        request = card(harness)
        before = harness.charged_cents()
        harness.lose_next_request()
        assert place(harness, request).outcome is Outcome.UNKNOWN
        with pytest.raises(NoSuchPurchase):
            query(harness, request.key)
        assert harness.charged_cents() == before
        assert place(harness, request).outcome in IN_FLIGHT
        assert final(harness, request.key).outcome is Outcome.SUCCEEDED

    def test_system_busy_is_unknown_never_failed(self, harness: SupplierHarness) -> None:
        """"System busy" (or a 5xx) is an unknown outcome: the caller queries."""
        request = card(harness)
        harness.busy_next()
        result = place(harness, request)
        assert result.outcome is Outcome.UNKNOWN
        assert result.reason

    def test_accepted_then_failed_is_refunded_with_the_reason(
            self, harness: SupplierHarness) -> None:
        """An order accepted, then failed by the supplier, ends failed with its reason and
        charges nothing."""
        before = harness.charged_cents()
        request = card(harness)
        harness.fail_next_after_accept("out of stock upstream")
        assert place(harness, request).outcome in (Outcome.ACCEPTED, Outcome.PROCESSING)
        done = final(harness, request.key)
        assert done.outcome is Outcome.FAILED
        assert done.reason
        assert "out of stock" in done.reason
        assert done.cards == ()
        assert harness.charged_cents() == before

    def test_a_duplicate_order_answer_is_resolved_not_failed(
            self, harness: SupplierHarness) -> None:
        """The supplier answers "duplicate order" to our first placement (a retried request
        arrived first): the purchase is read back, not reported failed, charged once."""
        request = card(harness)
        harness.duplicate_next()
        result = place(harness, request)
        assert result.outcome is not Outcome.FAILED
        charged = harness.charged_cents()
        assert final(harness, request.key).outcome is Outcome.SUCCEEDED
        assert harness.charged_cents() == charged

    def test_genuine_callback_reports_the_purchase(self, harness: SupplierHarness) -> None:
        """A genuine callback reads as the same purchase a query returns."""
        request = card(harness)
        place(harness, request)
        done = final(harness, request.key)
        callback = harness.callback(request.key)
        if callback is None:
            return  # this supplier makes no callbacks: queries are the only way
        headers, body = callback
        result = harness.supplier().parse_callback(headers, body, datetime.now(UTC))
        assert result.purchase == done

    def test_forged_or_stale_callback_is_refused(self, harness: SupplierHarness) -> None:
        """A callback altered after signing, or far older than allowed, is refused."""
        request = card(harness)
        place(harness, request)
        harness.settle()
        callback = harness.callback(request.key)
        supplier = harness.supplier()
        if callback is None:
            with pytest.raises(PushRejected):
                supplier.parse_callback({}, b"{}", datetime.now(UTC))
            return
        headers, body = callback
        with pytest.raises(PushRejected):
            supplier.parse_callback(headers, body.replace(b"}", b" }", 1), datetime.now(UTC))
        with pytest.raises(PushRejected):
            supplier.parse_callback(headers, body, datetime.now(UTC) + timedelta(days=2))

    def test_balance_drops_by_what_was_charged(self, harness: SupplierHarness) -> None:
        """The balance is in cents and drops by exactly what a purchase charged."""
        before = run(harness.supplier().balance())
        assert isinstance(before, Balance)
        charged = harness.charged_cents()
        request = card(harness)
        place(harness, request)
        final(harness, request.key)
        after = run(harness.supplier().balance())
        assert before.available_cents - after.available_cents == harness.charged_cents() - charged
        assert harness.charged_cents() > charged

    def test_expired_credentials_are_fatal_and_buy_nothing(
            self, harness: SupplierHarness) -> None:
        """Refused credentials are Fatal on placing and on the balance; nothing is charged."""
        before = harness.charged_cents()
        harness.expire_credentials()
        with pytest.raises(Fatal):
            place(harness, card(harness))
        with pytest.raises(Fatal):
            run(harness.supplier().balance())
        assert harness.charged_cents() == before
