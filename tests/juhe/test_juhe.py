"""Juhe's plugin against its fake over loopback HTTP: signatures, faults, callbacks."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from structlog.testing import capture_logs

from connectors.errors import AuthError, PushRejected
from connectors.fakekit import FakeClock
from connectors.juhe import JuheConfig, JuheFactory, protocol
from connectors.juhe.client import JuheSupplier
from connectors.juhe.fake import TEST_KEY, TEST_OPENID, JuheFakeState, make_app
from connectors.supplier import NoSuchPurchase, Outcome, PurchaseRequest
from connectors.testing.loopback import serve_in_thread

T = TypeVar("T")
PHONE = "13800138000"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Juhe:
    def __init__(self, state: JuheFakeState, url: str) -> None:
        self.state, self.url = state, url

    def client(self, key: str = TEST_KEY) -> JuheSupplier:
        return JuheSupplier(openid=TEST_OPENID, key=key, base_url=self.url, timeout=5.0)


@pytest.fixture
def juhe() -> Iterator[Juhe]:
    state = JuheFakeState(clock=FakeClock().now, settle_seconds=30)
    with serve_in_thread(make_app(state), before_stop=state.release_hangs) as url:
        yield Juhe(state, url)


def topup(key: str = "K0000000001", face: int = 50, limit: int | None = None,
          account: str = PHONE) -> PurchaseRequest:
    return PurchaseRequest(key=key, product_id=f"mobile-{face}", account=account,
                           max_unit_price_cents=limit)


# -- signatures: golden vectors from a second implementation of Juhe's rules --------------


def _md5(*parts: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for part in parts:
        digest.update(part.encode())
    return digest.hexdigest()


def test_order_sign_is_md5_of_openid_key_phone_amount_orderid() -> None:
    """onlineorder's sign is md5(OpenID+key+phoneno+cardnum+orderid), lowercase hex."""
    sign = protocol.order_sign("JHopenid", "appkey", PHONE, "50", "K0000000001")
    assert sign == _md5("JHopenid", "appkey", PHONE, "50", "K0000000001")
    assert sign == sign.lower()


def test_balance_and_callback_signs_follow_juhes_rules() -> None:
    """yue's sign is md5(OpenID+key+timestamp); the callback's md5(key+sporder_id+orderid)."""
    assert protocol.balance_sign("JHo", "k", "1700000000") == _md5("JHo", "k", "1700000000")
    assert protocol.callback_sign("k", "J123", "K0000000001") == _md5("k", "J123",
                                                                       "K0000000001")


def test_fake_refuses_a_wrong_order_signature_and_buys_nothing(juhe: Juhe) -> None:
    """An onlineorder with a sign over other values is refused 208508; nothing charged."""
    form = {"key": TEST_KEY, "phoneno": PHONE, "cardnum": "50", "orderid": "K0000000009",
            "sign": protocol.order_sign(TEST_OPENID, TEST_KEY, PHONE, "100", "K0000000009")}
    answer = httpx.post(juhe.url + protocol.ONLINEORDER, data=form).json()
    assert answer["error_code"] == protocol.BAD_SIGN
    assert juhe.state.charged_cents() == 0


def test_wrong_key_is_fatal_and_buys_nothing(juhe: Juhe) -> None:
    """A key Juhe does not know (10001) is an AuthError on placing; nothing charged."""
    with pytest.raises(AuthError):
        run(juhe.client(key="wrong").place(topup()))
    assert juhe.state.charged_cents() == 0


# -- placing, states on the fake's timer ----------------------------------------------------


def test_topup_is_processing_until_the_fakes_clock_passes_the_settle_time(juhe: Juhe) -> None:
    """game_state stays 0 until settle_seconds pass on the fake's clock, then 1; the balance
    drops by the price once."""
    before = juhe.state.balance
    placed = run(juhe.client().place(topup()))
    assert placed.outcome is Outcome.PROCESSING and placed.supplier_order_id
    juhe.state.advance_clock(29)
    assert run(juhe.client().query("K0000000001")).outcome is Outcome.PROCESSING
    juhe.state.advance_clock(2)
    done = run(juhe.client().query("K0000000001"))
    assert done.outcome is Outcome.SUCCEEDED
    assert done.cost_cents == before - juhe.state.balance == juhe.state.price(50)


def test_price_above_the_maximum_fails_and_buys_nothing(juhe: Juhe) -> None:
    """Juhe's price (telquery inprice) above max_unit_price is failed; nothing placed."""
    juhe.state.set_faults(price_rise_cents=500)
    result = run(juhe.client().place(topup(limit=5000)))
    assert result.outcome is Outcome.FAILED and "above the maximum" in (result.reason or "")
    assert juhe.state.orders == {}


def test_a_lost_answer_then_a_price_rise_is_never_failed(juhe: Juhe) -> None:
    """Placed, answer lost; the price then rises above the maximum: placing again answers
    the existing order (never failed, which would let the core buy elsewhere)."""
    juhe.state.set_faults(lose_answer=1)
    assert run(juhe.client().place(topup(limit=5000))).outcome is Outcome.UNKNOWN
    juhe.state.set_faults(price_rise_cents=500, off_shelf=1)
    again = run(juhe.client().place(topup(limit=5000)))
    assert again.outcome is Outcome.PROCESSING
    assert len(juhe.state.orders) == 1


def test_off_the_shelf_is_failed_and_charges_nothing(juhe: Juhe) -> None:
    """208501 (this number and face value cannot be topped up) is a definite failure."""
    juhe.state.set_faults(off_shelf=1)
    result = run(juhe.client().place(topup()))
    assert result.outcome is Outcome.FAILED and "208501" in (result.reason or "")
    assert juhe.state.charged_cents() == 0


def test_balance_exhausted_is_failed_and_charges_nothing(juhe: Juhe) -> None:
    """208514 (balance too low) is a definite failure; the balance is untouched."""
    juhe.state.set_faults(balance_cents=100)
    result = run(juhe.client().place(topup()))
    assert result.outcome is Outcome.FAILED and "208514" in (result.reason or "")
    assert run(juhe.client().balance()).available_cents == 100


def test_system_error_10014_is_unknown_and_the_order_may_be_placed_again(juhe: Juhe) -> None:
    """10014 on placing is unknown (Juhe: query, never failed); the query then says no such
    order, and placing again buys once."""
    juhe.state.set_faults(busy=1)
    assert run(juhe.client().place(topup())).outcome is Outcome.UNKNOWN
    with pytest.raises(NoSuchPurchase):
        run(juhe.client().query("K0000000001"))
    assert run(juhe.client().place(topup())).outcome is Outcome.PROCESSING
    assert len(juhe.state.orders) == 1


def test_a_5xx_or_timeout_is_unknown_never_failed(juhe: Juhe) -> None:
    """An HTML 5xx page on placing (the gateway's, not Juhe's) is unknown."""
    juhe.state.set_faults(http_500=1)
    assert run(juhe.client().place(topup())).outcome is Outcome.UNKNOWN


def test_accepted_then_failed_is_refunded_with_err_msg(juhe: Juhe) -> None:
    """game_state 9 is failed with Juhe's err_msg, and the fake refunds the balance."""
    before = juhe.state.balance
    juhe.state.set_faults(accept_then_fail=1, fail_reason="运营商维护")
    run(juhe.client().place(topup()))
    juhe.state.settle()
    done = run(juhe.client().query("K0000000001"))
    assert done.outcome is Outcome.FAILED and "运营商维护" in (done.reason or "")
    assert juhe.state.balance == before


def test_unusable_key_or_account_or_quantity_is_failed_without_a_call(juhe: Juhe) -> None:
    """A key Juhe cannot take (8-32 letters and digits), a non-mobile account or a quantity
    above 1 is refused before anything is sent."""
    client = juhe.client()
    assert run(client.place(topup(key="K-1"))).outcome is Outcome.FAILED
    assert run(client.place(topup(account="12345"))).outcome is Outcome.FAILED
    many = PurchaseRequest(key="K0000000002", product_id="mobile-50", quantity=2,
                           account=PHONE)
    assert run(client.place(many)).outcome is Outcome.FAILED
    assert len(juhe.state.call_log) == 0


def test_credentials_never_show_in_logs_or_the_call_log(juhe: Juhe) -> None:
    """The key and the sign are never logged by the client nor kept by the fake's call log."""
    with capture_logs() as logs:
        juhe.state.set_faults(busy=1)
        run(juhe.client().place(topup()))
    shown = repr(logs) + repr(juhe.client()) + repr(
        [c.to_json() for c in juhe.state.call_log.since()])
    assert TEST_KEY not in shown
    assert TEST_OPENID not in shown


# -- callbacks --------------------------------------------------------------------------------


def test_genuine_callback_is_verified_and_read_as_query_this_order(juhe: Juhe) -> None:
    """A callback signed md5(key+sporder_id+orderid) verifies; it is read as unknown (its
    state is unsigned) naming the order, and answered "success"."""
    placed = run(juhe.client().place(topup()))
    juhe.state.settle()
    body = juhe.state.callback_form("K0000000001")
    result = juhe.client().parse_callback({}, body, datetime.now(UTC))
    assert result.purchase.key == "K0000000001"
    assert result.purchase.supplier_order_id == placed.supplier_order_id
    assert result.purchase.outcome is Outcome.UNKNOWN
    assert result.reply_body == b"success"


def test_a_replayed_callback_with_its_state_flipped_never_reads_as_failed(juhe: Juhe) -> None:
    """sta is outside Juhe's signature: a genuine callback with sta changed to 9 still
    verifies, and must not read as failed (that would buy the top-up twice)."""
    run(juhe.client().place(topup()))
    juhe.state.settle()
    fields = dict(parse_qsl(juhe.state.callback_form("K0000000001").decode()))
    fields["sta"] = "9"
    result = juhe.client().parse_callback({}, urlencode(fields).encode(), datetime.now(UTC))
    assert result.purchase.outcome is Outcome.UNKNOWN


def test_forged_callback_is_refused(juhe: Juhe) -> None:
    """A callback whose order number was changed after signing, or with no sign, is
    refused."""
    run(juhe.client().place(topup()))
    fields = dict(parse_qsl(juhe.state.callback_form("K0000000001").decode()))
    client = juhe.client()
    with pytest.raises(PushRejected):
        client.parse_callback({}, urlencode({**fields, "orderid": "K0000000002"}).encode(),
                              datetime.now(UTC))
    with pytest.raises(PushRejected):
        client.parse_callback({}, urlencode({k: v for k, v in fields.items() if k != "sign"})
                              .encode(), datetime.now(UTC))
    with pytest.raises(PushRejected):
        client.parse_callback({}, b"\xff\xfe", datetime.now(UTC))


class Receiver:
    """A merchant endpoint that answers "fail" a number of times, then "success"."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.bodies: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def app(self) -> Starlette:
        async def receive(request: Request) -> PlainTextResponse:
            body = dict(parse_qsl((await request.body()).decode()))
            with self.lock:
                self.bodies.append(body)
                if self.failures > 0:
                    self.failures -= 1
                    return PlainTextResponse("fail")
            return PlainTextResponse("success")

        return Starlette(routes=[Route("/notify", receive, methods=["POST"])])


def test_callbacks_are_retried_until_answered_success(juhe: Juhe) -> None:
    """A callback not answered "success" is posted again later (on the fake's clock), and
    stops once it is."""
    receiver = Receiver(failures=2)
    with serve_in_thread(receiver.app()) as url, httpx.Client() as http:
        juhe.state.callback_url = url + "/notify"
        run(juhe.client().place(topup()))
        juhe.state.settle()
        assert juhe.state.deliver_callbacks(http) == 0
        assert juhe.state.deliver_callbacks(http) == 0  # not due again yet
        juhe.state.advance_clock(10)
        assert juhe.state.deliver_callbacks(http) == 0
        juhe.state.advance_clock(20)
        assert juhe.state.deliver_callbacks(http) == 1
        juhe.state.advance_clock(3600)
        assert juhe.state.deliver_callbacks(http) == 0
    assert [b["sta"] for b in receiver.bodies] == ["1", "1", "1"]
    client = juhe.client()
    assert all(client.parse_callback({}, urlencode(b).encode(), datetime.now(UTC))
               for b in receiver.bodies)


def test_callback_before_the_answer_duplicate_and_late_callbacks(juhe: Juhe) -> None:
    """callback_first posts (state 0) before the placing answer; duplicate_callbacks sends
    one twice; late_callbacks holds one until the merchant queries."""
    receiver = Receiver(failures=0)
    with serve_in_thread(receiver.app()) as url, httpx.Client() as http:
        juhe.state.callback_url = url + "/notify"
        juhe.state.set_faults(callback_first=1)
        run(juhe.client().place(topup()))
        assert juhe.state.deliver_callbacks(http) == 1
        assert receiver.bodies[0]["sta"] == "0"
        juhe.state.set_faults(duplicate_callbacks=1, late_callbacks=1)
        run(juhe.client().place(topup(key="K0000000002")))
        juhe.state.settle()
        held = juhe.state.deliver_callbacks(http)
        run(juhe.client().query("K0000000002"))
        late = juhe.state.deliver_callbacks(http)
    assert held + late >= 2
    orderids = [b["orderid"] for b in receiver.bodies]
    assert orderids.count("K0000000001") >= 2  # the early one, then the final one (twice)


# -- config and factory -------------------------------------------------------------------


def test_config_refuses_unknown_face_values_and_bad_probe_phone() -> None:
    """A face value Juhe does not sell, or a probe number that is no mobile, is refused
    naming the field."""
    with pytest.raises(ValidationError, match="face_values"):
        JuheConfig(openid="o", key="k", face_values=[7])
    with pytest.raises(ValidationError, match="probe_phone"):
        JuheConfig(openid="o", key="k", probe_phone="123")


def test_factory_names_its_fake_command_and_catalogue_lists_topups_only(juhe: Juhe) -> None:
    """The factory gives ``robot fake juhe``; the catalogue lists mobile top-ups, priced."""
    assert JuheFactory().fake_command().name == "juhe"
    products = run(juhe.client().catalogue())
    assert {p.product_id for p in products} == {f"mobile-{f}" for f in protocol.FACE_VALUES}
    assert all(p.kind.value == "topup" and 0 < p.price_cents <= p.face_value_cents
               for p in products if p.face_value_cents)
