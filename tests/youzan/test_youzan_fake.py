"""The fake Youzan's wire behaviour (what a careless client would trip over) and its pushes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from connectors.youzan import event_sign
from connectors.youzan.fake import FakeClock, FakeYouzan, PushSender, create_app
from connectors.youzan.fake_state import PUSH_RETRY_DELAYS
from tests.youzan.helpers import CLIENT_ID, CLIENT_SECRET, KDT_ID, make_fake

BASE = "http://youzan.fake"


def _post(fake: FakeYouzan, path: str, **kwargs: Any) -> httpx.Response:
    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(fake))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.post(path, **kwargs)
    return asyncio.run(main())


def _token(fake: FakeYouzan) -> str:
    answer = _post(fake, "/auth/token", json={
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "authorize_type": "silent",
        "grant_id": KDT_ID, "refresh": False}).json()
    assert answer["success"] is True
    return str(answer["data"]["access_token"])


def test_token_answer_has_an_absolute_expiry_and_rejects_form_encoding() -> None:
    """``expires`` is epoch milliseconds ≈ 7 days ahead; a form-encoded request gets 1000."""
    clock = FakeClock()
    fake = make_fake(clock)
    answer = _post(fake, "/auth/token", json={
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "authorize_type": "silent",
        "grant_id": KDT_ID}).json()
    expires = answer["data"]["expires"]
    assert expires == int((clock.now().timestamp() + 7 * 86400) * 1000)
    form = _post(fake, "/auth/token", data={"client_id": CLIENT_ID}).json()
    assert (form["success"], form["code"]) == (False, 1000)


def test_gateway_codes_for_path_version_token_and_content_type() -> None:
    """4001 without version, 4005 unknown API, 4201 token not in the query, 4203 unknown
    token, 4007 form body; the token must travel in the query string."""
    fake = make_fake()
    token = _token(fake)

    def code(path: str, **kwargs: Any) -> int:
        return int(_post(fake, path, **kwargs).json()["gw_err_resp"]["err_code"])

    assert code("/api/youzan.trade.get", params={"access_token": token}, json={}) == 4001
    assert code("/api/youzan.nothing/1.0.0", params={"access_token": token}, json={}) == 4005
    assert code("/api/youzan.trade.get/4.0.2", json={},
                headers={"Authorization": f"Bearer {token}"}) == 4201
    assert code("/api/youzan.trade.get/4.0.2", params={"access_token": "nope"}, json={}) == 4203
    assert code("/api/youzan.trade.get/4.0.2", params={"access_token": token},
                data={"tid": "E1"}) == 4007
    fake.expire_tokens()
    assert code("/api/youzan.trade.get/4.0.2", params={"access_token": token}, json={}) == 4202


def test_list_api_rules_dates_and_paging() -> None:
    """A date without its time part is gateway 5001; page_no > 100 is a business error."""
    fake = make_fake()
    token = _token(fake)
    url = "/api/youzan.trades.sold.get/4.0.4"
    bad_date = _post(fake, url, params={"access_token": token},
                     json={"start_update": "2024-01-01", "end_update": "2024-01-02"}).json()
    assert bad_date["gw_err_resp"]["err_code"] == 5001
    deep = _post(fake, url, params={"access_token": token}, json={"page_no": 101}).json()
    assert deep["success"] is False
    ok = _post(fake, url, params={"access_token": token}, json={}).json()
    assert ok["success"] is True
    assert ok["data"] == {"total_results": 0, "full_order_info_list": []}


def test_shipping_a_trade_twice_is_refused_with_already_shipped() -> None:
    """The fake keeps order state: a shipped trade cannot be shipped again (102570007)."""
    fake = make_fake()
    tid = fake.create_trade()
    token = _token(fake)
    url = "/api/youzan.logistics.online.confirm/3.0.0"
    first = _post(fake, url, params={"access_token": token},
                  json={"tid": tid, "is_no_express": 1}).json()
    assert first["data"] == {"is_success": True}
    second = _post(fake, url, params={"access_token": token},
                   json={"tid": tid, "is_no_express": 1}).json()
    assert (second["success"], second["code"]) == (False, 102570007)
    assert fake.trades[tid].shipments == 1


def test_control_endpoints_create_close_refund_and_fault() -> None:
    """/__fake__/ endpoints drive the scenario; the state endpoint reports it."""
    fake = make_fake()
    tid = _post(fake, "/__fake__/trades", json={"items": [{"sku_id": 1}]}).json()["tid"]
    assert _post(fake, f"/__fake__/trades/{tid}/refund", json={}).json()["refund_id"]
    assert _post(fake, f"/__fake__/trades/{tid}/close", json={}).json() == {"ok": True}
    assert _post(fake, "/__fake__/faults", json={"throttle": 2}).json()["throttle"] == 2
    assert _post(fake, "/__fake__/faults", json={"bogus": 1}).status_code == 400
    assert _post(fake, "/__fake__/trades/E0/close", json={}).status_code == 404
    assert fake.snapshot()["trades"][tid]["status"] == "TRADE_CLOSED"


def test_push_sender_gives_up_after_the_last_retry() -> None:
    """Nobody answering success: each retry waits its delay, then the message is given up."""
    clock = FakeClock()
    fake = make_fake(clock, push_url="http://receiver.test/hook", push_max_retries=2)
    fake.publish_test_message()
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        assert request.headers["Event-Sign"] == event_sign(CLIENT_ID, request.content,
                                                           CLIENT_SECRET)
        return httpx.Response(200, text="fail")  # 200 without "success" is not success

    sender = PushSender(fake, transport=httpx.MockTransport(handler))
    try:
        assert sender.deliver_due() == 0
        for delay in PUSH_RETRY_DELAYS[:2]:
            assert sender.deliver_due() == 0  # not due yet
            clock.advance(delay)
            sender.deliver_due()
    finally:
        sender.close()
    assert [b["sendCount"] for b in bodies] == [1, 2, 3]
    assert fake.snapshot()["push"]["given_up"] == 1


@pytest.mark.parametrize("answer", [(200, '{"code":0,"msg":"success"}'), (200, "success")])
def test_any_200_containing_success_is_a_delivery(answer: tuple[int, str]) -> None:
    """Youzan's rule: HTTP 200 with ``success`` in the body."""
    fake = make_fake(push_url="http://receiver.test/hook")
    fake.create_trade()
    sender = PushSender(fake, transport=httpx.MockTransport(
        lambda request: httpx.Response(answer[0], text=answer[1])))
    try:
        assert sender.deliver_due() == 3  # TradeCreate, TradePaid, TradeBuyerPay
    finally:
        sender.close()
    assert all(m.delivered for m in fake.messages)
