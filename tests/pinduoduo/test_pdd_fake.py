"""The fake POP gateway verifies requests as POP does and keeps order state."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from pdd_helpers import GATEWAY, post_raw, signed_params

from connectors.pinduoduo.fake import FakeClock, FakePdd, create_app


def _error(document: dict[str, Any]) -> tuple[int, str]:
    error = document["error_response"]
    assert set(error) >= {"error_code", "error_msg", "sub_code", "sub_msg", "request_id"}
    return error["error_code"], error["error_msg"]


def test_good_request_is_answered_with_the_response_object(pdd: FakePdd, clock: FakeClock) -> None:
    """A correctly signed JSON or form request gets ``order_info_get_response``."""
    sn = pdd.create_order()
    params = signed_params("pdd.order.information.get", now=clock.now(), order_sn=sn)
    for as_json in (True, False):
        document = post_raw(pdd, params, as_json=as_json)
        info = document["order_info_get_response"]["order_info"]
        assert info["order_sn"] == sn
        assert document["order_info_get_response"]["request_id"]


def test_wrong_signature_is_refused_with_20004(pdd: FakePdd, clock: FakeClock) -> None:
    """A request signed with another secret (or altered after signing) gets 20004."""
    sn = pdd.create_order()
    wrong = signed_params("pdd.order.information.get", secret="nope", now=clock.now(), order_sn=sn)
    assert _error(post_raw(pdd, wrong)) == (20004, "签名验证失败")
    altered = signed_params("pdd.order.information.get", now=clock.now(), order_sn=sn)
    altered["order_sn"] = "other"
    assert _error(post_raw(pdd, altered))[0] == 20004


def test_expired_access_token_is_refused_with_10019(pdd: FakePdd, clock: FakeClock) -> None:
    """After its lifetime the access token gets 10019 "access_token已过期"."""
    sn = pdd.create_order()
    clock.advance(pdd.access_ttl + timedelta(seconds=1))
    params = signed_params("pdd.order.information.get", now=clock.now(), order_sn=sn)
    assert _error(post_raw(pdd, params)) == (10019, "access_token已过期")
    unknown = signed_params("pdd.order.information.get", now=clock.now(), order_sn=sn,
                            access_token="forged")
    assert _error(post_raw(pdd, unknown))[0] == 20032


def test_refresh_issues_a_new_token_pair(pdd: FakePdd, clock: FakeClock) -> None:
    """``pdd.pop.auth.token.refresh`` returns POP's token object; the new token works."""
    clock.advance(pdd.access_ttl + timedelta(seconds=1))
    params = signed_params("pdd.pop.auth.token.refresh", now=clock.now(), access_token=None,
                           refresh_token="test-refresh-token")
    token = post_raw(pdd, params)["pop_auth_token_refresh_response"]
    assert set(token) >= {"access_token", "expires_in", "expires_at", "refresh_token",
                          "refresh_token_expires_at", "owner_id", "scope"}
    sn = pdd.create_order()
    ok = signed_params("pdd.order.information.get", now=clock.now(), order_sn=sn,
                       access_token=token["access_token"])
    assert "order_info_get_response" in post_raw(pdd, ok)
    pdd.revoke_authorization()
    again = signed_params("pdd.pop.auth.token.refresh", now=clock.now(), access_token=None,
                          refresh_token=token["refresh_token"])
    assert "error_response" in post_raw(pdd, again)


def test_common_parameter_checks(pdd: FakePdd, clock: FakeClock) -> None:
    """Skewed timestamps, unknown APIs and a wrong client_id are refused."""
    skewed = signed_params("pdd.order.information.get", now=clock.now() - timedelta(minutes=11),
                           order_sn="x")
    assert _error(post_raw(pdd, skewed))[0] == 10001
    unknown = signed_params("pdd.no.such.api", now=clock.now())
    assert _error(post_raw(pdd, unknown)) == (10017, "type不正确")
    other = signed_params("pdd.order.information.get", now=clock.now(), order_sn="x")
    other["client_id"] = "someone-else"
    assert _error(post_raw(pdd, other))[0] == 10016


def test_a_shipped_order_cannot_be_shipped_again(pdd: FakePdd, clock: FakeClock) -> None:
    """The first logistics.online.send ships; the second is refused and changes nothing."""
    sn = pdd.create_order()
    params = signed_params("pdd.logistics.online.send", now=clock.now(), order_sn=sn,
                           logistics_id="3", tracking_number=sn)
    first = post_raw(pdd, params)
    assert first["logistics_online_send_response"]["is_success"] is True
    assert "error_response" in post_raw(pdd, params)
    assert pdd.orders[sn].shipments == 1
    assert pdd.orders[sn].order_status == 2


def test_refunding_order_cannot_be_shipped(pdd: FakePdd, clock: FakeClock) -> None:
    """An order with an after-sale in progress is not shippable."""
    sn = pdd.create_order()
    pdd.request_refund(sn, after_sales_status=2)
    params = signed_params("pdd.logistics.online.send", now=clock.now(), order_sn=sn,
                           logistics_id="3", tracking_number=sn)
    assert "error_response" in post_raw(pdd, params)
    assert pdd.orders[sn].shipments == 0


def test_increment_window_is_limited_to_thirty_minutes(pdd: FakePdd, clock: FakeClock) -> None:
    """A window over 30 minutes is refused; a legal one lists orders with total_count."""
    sn = pdd.create_order()
    end = int(clock.now().timestamp()) + 1
    common = {"order_status": "1", "refund_status": "1", "is_lucky_flag": "0"}
    too_long = signed_params("pdd.order.number.list.increment.get", now=clock.now(),
                             start_updated_at=str(end - 1801), end_updated_at=str(end), **common)
    assert _error(post_raw(pdd, too_long))[0] == 10000
    ok = signed_params("pdd.order.number.list.increment.get", now=clock.now(),
                       start_updated_at=str(end - 1800), end_updated_at=str(end), **common)
    body = post_raw(pdd, ok)["order_sn_increment_get_response"]
    assert body["total_count"] == 1
    assert [row["order_sn"] for row in body["order_sn_list"]] == [sn]


def test_throttle_fault_answers_52101(pdd: FakePdd, clock: FakeClock) -> None:
    """An injected throttle answers POP's 52101 once, then the call goes through."""
    sn = pdd.create_order()
    pdd.set_faults(throttle=1)
    params = signed_params("pdd.order.information.get", now=clock.now(), order_sn=sn)
    assert _error(post_raw(pdd, params))[0] == 52101
    assert "order_info_get_response" in post_raw(pdd, params)


def test_control_endpoints(pdd: FakePdd, clock: FakeClock) -> None:
    """/__fake__/ creates orders, refunds, cancels, faults, tokens, clock and shows state."""

    async def scenario() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=create_app(pdd))
        async with httpx.AsyncClient(transport=transport, base_url="http://pdd.fake") as client:
            sn = (await client.post("/__fake__/orders",
                                    json={"sku": "42"})).json()["order_id"]
            refund = await client.post(f"/__fake__/orders/{sn}/refund",
                                       json={"after_sales_status": 10})
            assert refund.status_code == 200
            missing = await client.post("/__fake__/orders/nope/cancel", json={})
            assert missing.status_code == 404
            assert (await client.post("/__fake__/faults", json={"http_500": 1})).status_code == 200
            bad = await client.post("/__fake__/faults", json={"nonsense": 1})
            assert bad.status_code == 400
            page = await client.post("/api/router", json={})
            assert page.status_code == 502
            assert (await client.post("/__fake__/tokens", json={"action": "expire"})).json()["ok"]
            moved = await client.post("/__fake__/clock", json={"advance_seconds": 60})
            assert moved.status_code == 200
            state: dict[str, Any] = (await client.get("/__fake__/state")).json()
            return state | {"sn": sn}

    state = asyncio.run(scenario())
    assert state["orders"][state["sn"]]["refund_status"] == 4
    assert pdd.access_tokens["test-access-token"].expires_at <= clock.now()


def test_get_with_query_parameters_is_accepted(pdd: FakePdd, clock: FakeClock) -> None:
    """The Go SDK's GET with everything in the query string works too."""
    sn = pdd.create_order()
    params = signed_params("pdd.order.information.get", now=clock.now(), order_sn=sn)

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(pdd))
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.get(GATEWAY, params=params)

    assert "order_info_get_response" in asyncio.run(scenario()).json()
