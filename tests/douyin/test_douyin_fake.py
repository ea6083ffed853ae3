"""The fake Douyin gateway checks system parameters and signatures as Douyin does, answers
in Douyin's envelope, and delivers signed pushes until they are acknowledged."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connectors.douyin.fake import PushSender
from connectors.douyin.harness import APP_KEY, APP_SECRET, DouyinHarness, make_harness
from connectors.douyin.sign import event_sign, param_json, sign


@pytest.fixture
def harness() -> Iterator[DouyinHarness]:
    with make_harness() as h:
        yield h


def call(h: DouyinHarness, path: str, query: dict[str, str], body: str, *,
         old_codes: bool = False) -> dict[str, Any]:
    """One call; like the official SDKs it opts out of the old error fields unless
    ``old_codes``."""
    headers = {} if old_codes else {"x-open-no-old-err-code": "1"}
    answer = httpx.post(h.base_url + path, params=query, content=body.encode(), timeout=10,
                        headers=headers)
    document: dict[str, Any] = answer.json()
    return document


def signed(h: DouyinHarness, method: str, body: str, **changes: str) -> dict[str, str]:
    """System params for ``method`` signed over ``body`` at the fake's time."""
    ts = changes.pop("timestamp", str(int(h.fake.now().timestamp())))
    query = {"app_key": APP_KEY, "method": method, "timestamp": ts, "v": "2",
             "sign_method": "hmac-sha256", "sign": sign(APP_KEY, APP_SECRET, method, body, ts)}
    query.update(changes)
    return query


def test_token_create_with_a_good_signature_answers_a_token(harness: DouyinHarness) -> None:
    """A correctly signed token.create answers code 10000 with the token fields."""
    body = param_json({"code": "", "grant_type": "authorization_self", "shop_id": "77001"})
    doc = call(harness, "/token/create", signed(harness, "token.create", body), body)
    assert doc["code"] == 10000
    assert {"access_token", "expires_in", "refresh_token"} <= set(doc["data"])


def test_a_caller_that_keeps_the_old_error_fields_gets_err_no_too(
        harness: DouyinHarness) -> None:
    """Without ``x-open-no-old-err-code: 1`` the answer also carries the deprecated
    ``err_no`` (0 on success) and ``message``, which older clients read."""
    body = param_json({"code": "", "grant_type": "authorization_self", "shop_id": "77001"})
    doc = call(harness, "/token/create", signed(harness, "token.create", body), body,
               old_codes=True)
    assert (doc["code"], doc["err_no"], doc["message"]) == (10000, 0, "success")
    bad = call(harness, "/token/create", signed(harness, "token.create", body, sign="0" * 64),
               body, old_codes=True)
    assert bad["err_no"] == bad["code"] != 0 and bad["message"]


def test_a_tool_app_trades_the_authorization_code_once(harness: DouyinHarness) -> None:
    """A tool app gets its token with the one-time code of the shop's authorization
    (authorization_code); the code is used up, and authorization_self is refused."""
    harness.fake.app_type = "tool"
    code = harness.fake.authorize()
    body = param_json({"code": code, "grant_type": "authorization_code"})
    assert call(harness, "/token/create", signed(harness, "token.create", body),
                body)["code"] == 10000
    again = call(harness, "/token/create", signed(harness, "token.create", body), body)
    assert again["sub_code"] == "isv.parameter-invalid:code"
    own = param_json({"code": "", "grant_type": "authorization_self", "shop_id": "77001"})
    refused = call(harness, "/token/create", signed(harness, "token.create", own), own)
    assert refused["sub_code"] == "isv.parameter-invalid:grant_type"


@pytest.mark.parametrize(("change", "sub_code"), [
    ({"sign": "0" * 64}, "isv.signature-invalid"),
    ({"method": "order.orderDetail"}, "isv.parameter-invalid:method"),
    ({"v": "1"}, "isv.parameter-invalid:v"),
    ({"app_key": "someone-else"}, "isv.app-key-invalid"),
    ({"timestamp": "1000000000"}, "isv.timestamp-invalid"),
    ({"timestamp": "yesterday"}, "isv.timestamp-invalid"),
    ({"sign_method": "sha1"}, "isv.parameter-invalid:sign_method"),
])
def test_malformed_system_params_get_douyins_error_shape(
        harness: DouyinHarness, change: dict[str, str], sub_code: str) -> None:
    """Each bad system parameter is answered in Douyin's envelope with its sub-code."""
    body = param_json({"grant_type": "authorization_self", "shop_id": "77001", "code": ""})
    query = signed(harness, "token.create", body)
    query.update(change)
    doc = call(harness, "/token/create", query, body)
    assert set(doc) == {"code", "msg", "sub_code", "sub_msg", "data", "log_id"}
    assert doc["code"] in (40002, 40004) and doc["sub_code"].startswith(sub_code)


@pytest.mark.parametrize("missing", ["app_key", "method", "timestamp", "v", "sign"])
def test_missing_system_param_is_40002(harness: DouyinHarness, missing: str) -> None:
    """A missing system parameter is 40002 isv.missing-parameter:<name>."""
    body = "{}"
    query = signed(harness, "token.create", body)
    del query[missing]
    doc = call(harness, "/token/create", query, body)
    assert (doc["code"], doc["sub_code"]) == (40002, f"isv.missing-parameter:{missing}")


def test_signature_over_unsorted_param_json_is_refused(harness: DouyinHarness) -> None:
    """Douyin signs the sorted param_json: a signature over the keys as sent is refused."""
    body = '{"shop_id":"77001","grant_type":"authorization_self","code":""}'
    doc = call(harness, "/token/create", signed(harness, "token.create", body), body)
    assert doc["sub_code"] == "isv.signature-invalid"


def test_legacy_md5_signature_is_checked_too(harness: DouyinHarness) -> None:
    """``sign_method=md5`` (the legacy variant, and what Douyin assumes when none is named):
    MD5 of the same string, computed here on its own, is accepted; the HMAC of it is not."""
    body = param_json({"code": "", "grant_type": "authorization_self", "shop_id": "77001"})
    ts = str(int(harness.fake.now().timestamp()))
    text = (f"{APP_SECRET}app_key{APP_KEY}methodtoken.createparam_json{body}"
            f"timestamp{ts}v2{APP_SECRET}")
    md5 = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
    ok = call(harness, "/token/create", signed(harness, "token.create", body, timestamp=ts,
                                               sign_method="md5", sign=md5), body)
    assert ok["code"] == 10000, ok
    hmac_sign = signed(harness, "token.create", body, timestamp=ts)["sign"]
    bad = call(harness, "/token/create", signed(harness, "token.create", body, timestamp=ts,
                                                sign_method="md5", sign=hmac_sign), body)
    assert bad["sub_code"] == "isv.signature-invalid"


def test_api_call_without_token_is_refused(harness: DouyinHarness) -> None:
    """A business API without access_token is 40002; an unknown token 30001."""
    body = param_json({"shop_order_id": "1"})
    doc = call(harness, "/order/orderDetail", signed(harness, "order.orderDetail", body), body)
    assert doc["sub_code"] == "isv.missing-parameter:access_token"
    doc = call(harness, "/order/orderDetail",
               signed(harness, "order.orderDetail", body, access_token="nope"), body)
    assert doc["code"] == 30001


def test_pushes_are_signed_and_retried_until_acknowledged(harness: DouyinHarness) -> None:
    """The paid push is signed event-sign = MD5(key+body+secret) and sent again after a
    reply other than {"code":0}, until acknowledged."""
    received: list[tuple[dict[str, str], bytes]] = []
    replies = [b'{"code":1,"msg":"busy"}', b'{"code":0,"msg":"success"}']

    def answer(request: httpx.Request) -> httpx.Response:
        received.append((dict(request.headers), request.content))
        return httpx.Response(200, content=replies[len(received) - 1])

    harness.fake.push_url = "http://robot.invalid/hooks/dy"
    oid = harness.create_paid_order()
    sender = PushSender(harness.fake, transport=httpx.MockTransport(answer))
    assert sender.deliver_due() == 0
    assert sender.deliver_due() == 0  # not due again before the retry delay
    harness.clock.advance(harness.fake.push_retry_delays[0].total_seconds())
    assert sender.deliver_due() == 1
    assert len(received) == 2 and received[0][1] == received[1][1]
    headers, body = received[0]
    assert headers["app-id"] == APP_KEY
    assert headers["event-sign"] == event_sign(APP_KEY, body, APP_SECRET)
    message = json.loads(body)[0]
    assert message["tag"] == "101" and json.loads(message["data"])["p_id"] == int(oid)
    harness.clock.advance(3600)
    assert sender.deliver_due() == 0 and len(received) == 2
