"""The Fulu client against the fake gateway over loopback HTTP: every answer mapped to the
supplier protocol's outcomes, and every fault that matters to a buyer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from connectors.errors import AuthError, PushRejected, Retriable
from connectors.fakekit import FakeClock
from connectors.fulu.client import FuluSupplier
from connectors.fulu.harness import FuluHarness
from connectors.supplier import KeyReused, NoSuchPurchase, Outcome, PurchaseRequest

T = TypeVar("T")
CARD, TOPUP, MOBILE_50 = "10000001", "10000002", "20000050"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def client(fulu: FuluHarness, **changes: object) -> FuluSupplier:
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    return FuluSupplier(fulu.config(**changes), transport=transport, clock=fulu.fake.now)


def methods(fulu: FuluHarness) -> list[str]:
    return [c.api for c in fulu.fake.call_log.since(0)]


def test_a_card_order_moves_on_the_fakes_clock(fulu: FuluHarness, clock: FakeClock) -> None:
    """untreated → processing → success follow the fake's clock; the cards come by query."""
    sup = client(fulu)
    placed = run(sup.place(PurchaseRequest("C1", CARD, 2)))
    assert placed.outcome is Outcome.ACCEPTED
    assert placed.cost_cents == 3000
    clock.advance(3)
    assert run(sup.query("C1")).outcome is Outcome.PROCESSING
    clock.advance(10)
    done = run(sup.query("C1"))
    assert done.outcome is Outcome.SUCCEEDED
    assert len(done.cards) == 2
    assert "fulu.order.card.add" in methods(fulu)


def test_mobile_top_up_goes_through_mobile_add(fulu: FuluHarness) -> None:
    """A 话费 product is placed with fulu.order.mobile.add (phone and face value)."""
    sup = client(fulu)
    placed = run(sup.place(PurchaseRequest("M1", MOBILE_50, account="13800138000")))
    assert placed.outcome is Outcome.ACCEPTED
    order = fulu.order("M1")
    assert (order.charge_account, order.product.product_id) == ("13800138000", MOBILE_50)
    assert "fulu.order.mobile.add" in methods(fulu)
    bad = run(sup.place(PurchaseRequest("M2", MOBILE_50, account="12345")))
    assert bad.outcome is Outcome.FAILED
    assert "M2" not in fulu.fake.orders


def test_order_number_exists_is_read_back_never_bought_again(fulu: FuluHarness) -> None:
    """"外部订单号已存在" is resolved by a query: one order, charged once; a different
    purchase under the number is KeyReused."""
    sup = client(fulu)
    first = run(sup.place(PurchaseRequest("D1", TOPUP, account="qq123")))
    again = run(sup.place(PurchaseRequest("D1", TOPUP, account="qq123")))
    assert again.supplier_order_id == first.supplier_order_id
    assert len(fulu.fake.orders) == 1
    with pytest.raises(KeyReused):
        run(sup.place(PurchaseRequest("D1", TOPUP, account="qq999")))
    assert fulu.charged_cents() == 1680


def test_a_game_top_up_names_its_area_server_game_and_role(fulu: FuluHarness) -> None:
    """fulu.order.direct.add carries the game's region, server, name and role
    (charge_game_region / _srv / _name / _role) where the purchase has them."""
    request = PurchaseRequest("G1", TOPUP, account="player_42", area="A区", server="国服",
                              game="王者荣耀", role="夜行者")
    run(client(fulu).place(request))
    order = fulu.fake.orders["G1"]
    assert (order.charge_account, order.area, order.server, order.game, order.role) == (
        "player_42", "A区", "国服", "王者荣耀", "夜行者")


def test_a_refusal_for_a_number_already_placed_is_not_a_failure(fulu: FuluHarness) -> None:
    """The product goes off the shelf after our order went through: placing the same number
    again is answered with the order, never failed."""
    sup = client(fulu)
    run(sup.place(PurchaseRequest("R1", CARD)))
    fulu.fake.set_faults(off_shelf=CARD)
    again = run(sup.place(PurchaseRequest("R1", CARD)))
    assert again.outcome is not Outcome.FAILED
    assert again.supplier_order_id == fulu.order("R1").order_id


def test_off_shelf_price_and_balance_refusals_fail_and_charge_nothing(
        fulu: FuluHarness) -> None:
    """Off the shelf, above the merchant's maximum (also after a price rise), balance
    exhausted: definite failures with a reason, nothing charged, no order made."""
    sup = client(fulu)
    fulu.fake.set_faults(off_shelf=CARD)
    assert "off the shelf" in (run(sup.place(PurchaseRequest("F1", CARD))).reason or "")
    fulu.fake.set_faults(off_shelf="")
    limit = PurchaseRequest("F2", CARD, max_unit_price_cents=1500)
    fulu.fake.set_faults(price_rise_cents=1)
    assert "above the maximum" in (run(sup.place(limit)).reason or "")
    fulu.fake.set_faults(price_rise_cents=0, insufficient_balance=1)
    broke = run(sup.place(PurchaseRequest("F3", CARD)))
    assert broke.outcome is Outcome.FAILED
    assert "余额不足" in (broke.reason or "")
    fulu.fake.balance_cents = 100
    assert run(sup.place(PurchaseRequest("F4", CARD))).outcome is Outcome.FAILED
    assert fulu.fake.orders == {}
    assert fulu.charged_cents() == 0
    assert not [m for m in methods(fulu) if m.startswith("fulu.order.") and "add" in m
                and m != "fulu.order.card.add"]


def test_at_the_maximum_price_the_order_is_placed(fulu: FuluHarness) -> None:
    """A price equal to the maximum is bought (the limit is inclusive)."""
    done = run(client(fulu).place(PurchaseRequest("P1", CARD, max_unit_price_cents=1500)))
    assert done.outcome is Outcome.ACCEPTED


def test_a_hung_request_times_out_as_unknown(fulu: FuluHarness) -> None:
    """A gateway that never answers is an unknown outcome (a real client timeout), not a
    failure; nothing was bought, and the query says so."""
    sup = client(fulu, timeout_seconds=0.5)
    fulu.fake.set_faults(hang=2)  # the product read hangs, then (retry) the query
    result = run(sup.place(PurchaseRequest("H1", CARD)))
    assert result.outcome is Outcome.UNKNOWN
    fulu.fake.release_hangs()
    fulu.fake.set_faults(hang=0)
    with pytest.raises(NoSuchPurchase):
        run(sup.query("H1"))


@pytest.mark.parametrize("fault", ["busy", "http_500", "drop_request", "lose_answer"])
def test_transport_trouble_and_system_busy_are_unknown(fulu: FuluHarness, fault: str) -> None:
    """System busy, an HTML 5xx, a dropped request, an answer lost after the order was made:
    unknown, never failed."""
    sup = client(fulu)
    fulu.fake.set_faults(**{fault: 1})
    result = run(sup.place(PurchaseRequest("U1", CARD)))
    assert result.outcome is Outcome.UNKNOWN
    assert ("U1" in fulu.fake.orders) is (fault == "lose_answer")


class Tampering(httpx.AsyncBaseTransport):
    """Passes requests to the fake; alters the ``result`` of answers to placements."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = json.loads(await response.aread())
        if b"order.card.add" in request.content:
            body["result"] = body["result"].replace('"untreated"', '"success"')
        return httpx.Response(response.status_code, json=body)


def test_an_answer_with_a_wrong_signature_is_unknown(fulu: FuluHarness) -> None:
    """An answer altered on the way (its ``sign`` no longer matches) is not trusted: the
    outcome is unknown, not the success the altered answer claims."""
    sup = FuluSupplier(fulu.config(), transport=Tampering(), clock=fulu.fake.now)
    result = run(sup.place(PurchaseRequest("S1", CARD)))
    assert result.outcome is Outcome.UNKNOWN
    assert "signature" in (result.reason or "")


def test_a_forged_request_is_refused_by_the_fake(fulu: FuluHarness) -> None:
    """The fake verifies the signature over the text sent: a request signed with another
    secret is refused 1002 (Fatal for the client), nothing bought."""
    sup = client(fulu, app_secret=SecretStr("e" * 32))
    with pytest.raises(AuthError, match="1002"):
        run(sup.place(PurchaseRequest("S2", CARD)))
    assert fulu.fake.orders == {}


def test_a_stale_timestamp_is_unknown_never_failed(fulu: FuluHarness, clock: FakeClock) -> None:
    """Fulu refusing our clock is not a refusal of the order: unknown."""
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    sup = FuluSupplier(fulu.config(), transport=transport,
                       clock=lambda: clock.now().replace(year=2025))
    assert run(sup.place(PurchaseRequest("T1", CARD))).outcome is Outcome.UNKNOWN


def test_accepted_then_failed_is_refunded_and_called_back(
        fulu: FuluHarness, receiver: Any) -> None:
    """An accepted order fails later: refunded, and the callback says failed with the reason."""
    sup = client(fulu)
    before = fulu.fake.balance_cents
    fulu.fail_next_after_accept("渠道维护")
    run(sup.place(PurchaseRequest("A1", CARD)))
    fulu.settle()
    assert fulu.fake.balance_cents == before
    fulu.sender.deliver_due()
    parsed = sup.parse_callback({}, receiver.bodies[0], fulu.fake.now())
    assert parsed.purchase.outcome is Outcome.FAILED
    assert "渠道维护" in (parsed.purchase.reason or "")
    assert parsed.reply_body == b"success"


def test_callbacks_are_retried_until_success_and_duplicates_are_harmless(
        fulu: FuluHarness, receiver: Any, clock: FakeClock) -> None:
    """A callback not answered ``success`` is retried on the schedule; a duplicated one
    reads as the same purchase."""
    sup = client(fulu)
    sender = fulu.sender
    run(sup.place(PurchaseRequest("B1", TOPUP, account="qq1")))
    fulu.settle()
    receiver.replies += ["fail", "error"]
    sender.deliver_due()
    assert sender.deliver_due() == 0  # the retry is not due yet
    clock.advance(15)
    sender.deliver_due()
    clock.advance(60)
    fulu.fake.set_faults(duplicate_pushes=1)
    assert sender.deliver_due() >= 1
    assert len(receiver.bodies) == 4
    assert fulu.order("B1").callback_acked
    purchases = {sup.parse_callback({}, b, fulu.fake.now()).purchase for b in receiver.bodies}
    assert len(purchases) == 1
    clock.advance(7200)
    assert sender.deliver_due() == 0


def test_a_callback_may_come_before_the_placement_is_answered(
        fulu: FuluHarness, receiver: Any) -> None:
    """The fake calls back (succeeded, with cards) before the placement's answer (made when
    it accepted) arrives: both name the same order, and the callback reads as the query."""
    sup = client(fulu)
    fulu.fake.set_faults(callback_first=1)
    placed = run(sup.place(PurchaseRequest("E1", CARD)))
    assert len(receiver.bodies) == 1
    early = sup.parse_callback({}, receiver.bodies[0], fulu.fake.now()).purchase
    assert early.outcome is Outcome.SUCCEEDED
    assert placed.supplier_order_id == early.supplier_order_id
    assert placed.outcome in (Outcome.ACCEPTED, Outcome.SUCCEEDED)
    assert run(sup.query("E1")) == early


def test_a_late_callback_is_refused_but_the_query_still_answers(
        fulu: FuluHarness, clock: FakeClock) -> None:
    """A callback whose finish time is older than allowed is refused; the order is read by
    query."""
    sup = client(fulu, callback_max_age_seconds=3600)
    fulu.fake.set_faults(late_callbacks=1)
    run(sup.place(PurchaseRequest("L1", TOPUP, account="qq1")))
    fulu.settle()
    _, body = fulu.callback("L1") or ({}, b"")
    clock.advance(7200)
    with pytest.raises(PushRejected):
        sup.parse_callback({}, body, fulu.fake.now())
    assert run(sup.query("L1")).outcome is Outcome.SUCCEEDED


def test_card_codes_never_reach_logs_the_call_log_or_errors(fulu: FuluHarness) -> None:
    """The codes bought are plaintext only through reveal(): the fake's call log and the
    client's logs carry ciphertext at most."""
    sup = client(fulu)
    with capture_logs() as logs:
        run(sup.place(PurchaseRequest("N1", CARD)))
        fulu.settle()
        done = run(sup.query("N1"))
    plain = [c.code.reveal() for c in done.cards] + [n.number.reveal() for n in done.cards
                                                     if n.number]
    seen = json.dumps([c.to_json() for c in fulu.fake.call_log.since(0)]) + repr(logs)
    assert plain
    assert not [s for s in plain if s in seen]


def test_cards_under_another_secret_are_unknown_not_lost(fulu: FuluHarness) -> None:
    """Card fields that do not decrypt under our secret: the purchase stays unknown (never
    failed, never succeeded without its cards), naming no card."""
    sup = client(fulu)
    run(sup.place(PurchaseRequest("X1", CARD)))
    fulu.settle()
    order = fulu.order("X1")
    real = fulu.fake.app_secret
    fulu.fake.cards_secret = "1" * 32  # the fake encrypts under another key
    try:
        result = run(sup.query("X1"))
    finally:
        fulu.fake.cards_secret = None
    assert result.outcome is Outcome.UNKNOWN
    assert order.cards[0][1] not in (result.reason or "")
    assert real == fulu.fake.app_secret


def test_bad_credentials_are_fatal_for_every_call(fulu: FuluHarness) -> None:
    """A wrong app key is Fatal on placing, querying, balance and catalogue; nothing bought."""
    sup = client(fulu, app_key="wrong")
    for call in (sup.place(PurchaseRequest("Z1", CARD)), sup.query("Z1"), sup.balance(),
                 sup.catalogue()):
        with pytest.raises(AuthError):
            run(call)
    assert fulu.fake.orders == {}


def test_balance_is_retriable_on_transport_trouble(fulu: FuluHarness) -> None:
    """The balance buys nothing: a 5xx is Retriable."""
    fulu.fake.set_faults(http_500=1)
    with pytest.raises(Retriable):
        run(client(fulu).balance())


def test_config_refuses_a_secret_that_cannot_be_the_card_key() -> None:
    """The app secret must be 32 bytes (it is the AES-256 key); the error never shows it."""
    from pydantic import ValidationError

    from connectors.fulu.config import FuluConfig

    with pytest.raises(ValidationError) as caught:
        FuluConfig(app_key="k", app_secret=SecretStr("tooshort-secret"))
    assert "tooshort-secret" not in str(caught.value)
