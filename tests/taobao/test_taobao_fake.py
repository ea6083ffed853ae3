"""The fake TOP gateway verifies requests and answers exactly as PLATFORMS.md §1 describes.

Requests here are built and signed by hand (conftest.signed_params), not by the connector,
so a shared bug cannot make both sides agree."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import httpx
import pytest

from connectors.common.times import format_cst
from connectors.taobao.fake import FakeClock, FakeTop, create_app
from tests.taobao.taobao_helpers import GATEWAY, post_raw, signed_params

FULLINFO = "taobao.trade.fullinfo.get"


def _error(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200  # TOP answers platform errors with HTTP 200
    return response.json()["error_response"]


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
def test_fake_accepts_each_sign_method(top: FakeTop, clock: FakeClock, sign_method: str) -> None:
    """A correctly signed call succeeds with every sign method, under TOP's root key."""
    tid = top.create_trade()
    form = signed_params(
        FULLINFO, sign_method=sign_method, now=clock.now(), fields="tid,status", tid=str(tid)
    )
    body = post_raw(top, form).json()
    assert body["trade_fullinfo_get_response"]["trade"] == {
        "tid": tid,
        "status": "WAIT_SELLER_SEND_GOODS",
    }
    assert str(tid) in post_raw(top, form).text  # the big tid is a JSON number, digit-exact


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
def test_fake_refuses_wrong_signature(top: FakeTop, clock: FakeClock, sign_method: str) -> None:
    """A signature made with another secret is code 25."""
    form = signed_params(
        FULLINFO,
        secret="nottheone",
        sign_method=sign_method,
        now=clock.now(),
        fields="tid",
        tid="1",
    )
    assert _error(post_raw(top, form))["code"] == 25


def test_fake_refuses_tampered_params(top: FakeTop, clock: FakeClock) -> None:
    """Changing a signed parameter after signing is code 25."""
    form = signed_params(FULLINFO, now=clock.now(), fields="tid", tid="1")
    form["tid"] = "2"
    assert _error(post_raw(top, form))["code"] == 25


def test_fake_merges_query_and_form_for_signature(top: FakeTop, clock: FakeClock) -> None:
    """System params in the query and API params in the body are signed as one set."""
    tid = top.create_trade()
    form = signed_params(FULLINFO, now=clock.now(), fields="tid", tid=str(tid))
    query = {k: form.pop(k) for k in ("method", "app_key", "timestamp", "v", "sign", "sign_method")}
    body = post_raw(top, form, query=query).json()
    assert body["trade_fullinfo_get_response"]["trade"]["tid"] == tid


def test_fake_serves_get_too(top: FakeTop, clock: FakeClock) -> None:
    """GET with every parameter in the query string is served like POST."""
    tid = top.create_trade()
    form = signed_params(FULLINFO, now=clock.now(), fields="tid", tid=str(tid))

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(top))) as client:
            return await client.get(GATEWAY, params=form)

    assert asyncio.run(main()).json()["trade_fullinfo_get_response"]["trade"]["tid"] == tid


def test_fake_refuses_stale_timestamp_and_accepts_epoch_millis(
    top: FakeTop, clock: FakeClock
) -> None:
    """A timestamp 11 minutes off is code 31; epoch milliseconds within range are accepted."""
    stale = format_cst(clock.now() - timedelta(minutes=11))
    assert (
        _error(post_raw(top, signed_params(FULLINFO, timestamp=stale, fields="tid", tid="1")))[
            "code"
        ]
        == 31
    )
    future = format_cst(clock.now() + timedelta(minutes=11))
    assert (
        _error(post_raw(top, signed_params(FULLINFO, timestamp=future, fields="tid", tid="1")))[
            "code"
        ]
        == 31
    )
    tid = top.create_trade()
    millis = str(int(clock.now().timestamp() * 1000))
    body = post_raw(
        top, signed_params(FULLINFO, timestamp=millis, fields="tid", tid=str(tid))
    ).json()
    assert "trade_fullinfo_get_response" in body


def test_fake_session_checks(top: FakeTop, clock: FakeClock) -> None:
    """No session is 26; a wrong one 27; an expired one 27; app-level TMC calls need none."""
    assert (
        _error(
            post_raw(
                top, signed_params(FULLINFO, now=clock.now(), session="", fields="tid", tid="1")
            )
        )["code"]
        == 26
    )
    assert (
        _error(
            post_raw(
                top,
                signed_params(FULLINFO, now=clock.now(), session="other", fields="tid", tid="1"),
            )
        )["code"]
        == 27
    )
    top.set_faults(expire_session=True)
    expired = _error(post_raw(top, signed_params(FULLINFO, now=clock.now(), fields="tid", tid="1")))
    assert (expired["code"], expired["sub_code"]) == (27, "sessionkey-expired")
    consume = signed_params(
        "taobao.tmc.messages.consume", now=clock.now(), session="", quantity="10"
    )
    assert "tmc_messages_consume_response" in post_raw(top, consume).json()


def test_fake_app_key_checks(top: FakeTop, clock: FakeClock) -> None:
    """A missing app_key is 28; an unknown one is 29."""
    assert (
        _error(
            post_raw(
                top, signed_params(FULLINFO, now=clock.now(), app_key="", fields="tid", tid="1")
            )
        )["code"]
        == 28
    )
    assert (
        _error(
            post_raw(
                top, signed_params(FULLINFO, now=clock.now(), app_key="999", fields="tid", tid="1")
            )
        )["code"]
        == 29
    )


def test_fake_version_method_and_format(top: FakeTop, clock: FakeClock) -> None:
    """Wrong v is refused, unknown methods are 22, and without format=json the answer is XML."""
    assert (
        _error(
            post_raw(top, signed_params(FULLINFO, now=clock.now(), v="1.0", fields="tid", tid="1"))
        )["code"]
        == 34
    )
    assert _error(post_raw(top, signed_params("taobao.nope.get", now=clock.now())))["code"] == 22
    xml = post_raw(top, signed_params(FULLINFO, now=clock.now(), format="", fields="tid", tid="1"))
    assert xml.headers["content-type"].startswith("text/xml")
    assert "<code>23</code>" in xml.text


def test_fake_error_shape(top: FakeTop, clock: FakeClock) -> None:
    """error_response carries code, msg, sub_code, sub_msg and request_id."""
    error = _error(
        post_raw(top, signed_params("taobao.logistics.dummy.send", now=clock.now(), tid="42"))
    )
    assert set(error) == {"code", "msg", "sub_code", "sub_msg", "request_id"}
    assert (error["code"], error["sub_code"]) == (15, "isv.logistics-dummy-service-error:B01")


def test_fake_increment_window_filter_order_and_limit(top: FakeTop, clock: FakeClock) -> None:
    """increment.get filters by modified window and status, sorts modified desc, refuses > 1 day."""
    older = top.create_trade()
    clock.advance(60)
    newer = top.create_trade()
    top.create_trade(status="WAIT_BUYER_PAY")
    clock.advance(60)
    window = {
        "fields": "tid,modified",
        "start_modified": format_cst(clock.now() - timedelta(minutes=5)),
        "end_modified": format_cst(clock.now()),
        "status": "WAIT_SELLER_SEND_GOODS",
    }
    body = post_raw(
        top, signed_params("taobao.trades.sold.increment.get", now=clock.now(), **window)
    ).json()
    inner = body["trades_sold_increment_get_response"]
    assert [t["tid"] for t in inner["trades"]["trade"]] == [newer, older]
    assert inner["total_results"] == 2
    paged = {**window, "page_size": "1", "page_no": "2", "use_has_next": "true"}
    inner = post_raw(
        top, signed_params("taobao.trades.sold.increment.get", now=clock.now(), **paged)
    ).json()["trades_sold_increment_get_response"]
    assert [t["tid"] for t in inner["trades"]["trade"]] == [older]
    assert inner["has_next"] is False
    assert "total_results" not in inner
    too_long = {
        **window,
        "start_modified": format_cst(clock.now() - timedelta(days=1, seconds=1)),
    }
    error = _error(
        post_raw(
            top, signed_params("taobao.trades.sold.increment.get", now=clock.now(), **too_long)
        )
    )
    assert (error["code"], error["sub_code"]) == (41, "isv.invalid-parameter:end_modified")


def test_fake_dummy_send_once_then_b04(top: FakeTop, clock: FakeClock) -> None:
    """dummy.send ships a paid trade once; the second send is code 15 / B04."""
    tid = top.create_trade()
    send = signed_params("taobao.logistics.dummy.send", now=clock.now(), tid=str(tid))
    assert (
        post_raw(top, send).json()["logistics_dummy_send_response"]["shipping"]["is_success"]
        is True
    )
    error = _error(post_raw(top, send))
    assert (error["code"], error["sub_code"]) == (15, "isv.logistics-dummy-service-error:B04")
    assert top.trades[tid].status == "WAIT_BUYER_CONFIRM_GOODS"
    assert top.trades[tid].shipments == 1


def test_fake_throttle_and_http_500_faults(top: FakeTop, clock: FakeClock) -> None:
    """Injected throttling answers code 7 with the ban length; injected 500s answer HTML."""
    top.set_faults(throttle=1, ban_seconds=9, http_500=1)
    form = signed_params(FULLINFO, now=clock.now(), fields="tid", tid="1")
    page = post_raw(top, form)
    assert page.status_code == 500
    assert page.headers["content-type"].startswith("text/html")
    error = _error(post_raw(top, form))
    assert error["code"] == 7
    assert error["sub_msg"] == "This ban will last for 9 more seconds"
    assert _error(post_raw(top, form))["sub_code"] == "isv.trade-not-exist"  # faults used up


def test_fake_control_endpoints(top: FakeTop) -> None:
    """/__fake__/ creates, refunds and closes trades, sets faults and reports state."""

    async def main() -> dict[str, object]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(top)), base_url="http://top.fake"
        ) as client:
            created = await client.post(
                "/__fake__/trades", json={"items": [{"title": "X", "price": "1.50", "num": 2}]}
            )
            tid = created.json()["tid"]
            other = (await client.post("/__fake__/trades", json={})).json()["tid"]
            refund = await client.post(
                f"/__fake__/trades/{tid}/refund", json={"status": "WAIT_SELLER_AGREE"}
            )
            assert refund.json()["refund_id"]
            assert (await client.post(f"/__fake__/trades/{other}/close", json={})).json() == {
                "ok": True
            }
            faults = await client.post(
                "/__fake__/faults", json={"http_500": 2, "expire_session": True}
            )
            assert faults.json()["http_500"] == 2
            assert faults.json()["session_expired"] is True
            assert (await client.post("/__fake__/faults", json={"nope": 1})).status_code == 400
            assert (await client.post("/__fake__/trades/1/close", json={})).status_code == 404
            state = (await client.get("/__fake__/state")).json()
            return {"tid": tid, "other": other, "state": state}

    result = asyncio.run(main())
    trades = result["state"]["trades"]  # type: ignore[index]
    assert trades[result["tid"]]["status"] == "WAIT_SELLER_SEND_GOODS"
    assert trades[result["other"]]["status"] == "TRADE_CLOSED"
    assert top.trades[int(result["tid"])].payment == "3.00"  # type: ignore[arg-type]
    assert top.trades[int(result["tid"])].lines[0].refund_status == "WAIT_SELLER_AGREE"  # type: ignore[arg-type]


def test_fake_tmc_redelivers_unconfirmed_after_visibility_timeout(
    top: FakeTop, clock: FakeClock
) -> None:
    """Consumed messages are hidden, come back unless confirmed, and stay gone once confirmed."""
    top.create_trade()  # TradeCreate + TradeBuyerPay
    consume = signed_params(
        "taobao.tmc.messages.consume", now=clock.now(), session="", quantity="10"
    )
    first = post_raw(top, consume).json()["tmc_messages_consume_response"]["messages"][
        "tmc_message"
    ]
    assert [m["topic"] for m in first] == ["taobao_trade_TradeCreate", "taobao_trade_TradeBuyerPay"]
    assert json.loads(first[1]["content"])["tid"] in top.trades
    assert post_raw(top, consume).json()["tmc_messages_consume_response"] == {
        "request_id": "fake00000002"
    }
    confirm = signed_params(
        "taobao.tmc.messages.confirm",
        now=clock.now(),
        session="",
        s_message_ids=str(first[1]["id"]),
    )
    assert post_raw(top, confirm).json()["tmc_messages_confirm_response"]["is_success"] is True
    clock.advance(top.visibility_timeout + timedelta(seconds=1))
    again = signed_params("taobao.tmc.messages.consume", now=clock.now(), session="", quantity="10")
    redelivered = post_raw(top, again).json()["tmc_messages_consume_response"]["messages"][
        "tmc_message"
    ]
    assert [m["id"] for m in redelivered] == [first[0]["id"]]
