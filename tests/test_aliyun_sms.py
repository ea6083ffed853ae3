"""Aliyun SMS SendSms: the RPC signature as Aliyun's own SDK composes it, the fake verifying
exactly that (signature, nonce reuse, timestamp window, key) and answering in Aliyun's
shapes, and the notifier turning each answer into "sent", "not sent" or "unknown"."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from urllib.request import pathname2url

import httpx
import pytest

from connectors.aliyunsms import protocol as p
from connectors.aliyunsms.client import AliyunSmsNotifier
from connectors.aliyunsms.fake import (
    TEST_KEY_ID,
    TEST_KEY_SECRET,
    TEST_SIGN_NAME,
    AliyunSmsFakeState,
    make_app,
)
from connectors.errors import AuthError, Skippable, Throttled, Unavailable
from connectors.notifier import Message, SendUnknown

PHONE = "13912345678"


def sdk_signature(secret: str, method: str, params: dict[str, str]) -> str:
    """The composition of aliyun-openapi-python-sdk's rpc_signature_composer, re-typed here
    as an independent check (urlencode, then the three replacements, then pathname2url)."""
    def pop(q: str) -> str:
        return q.replace("+", "%20").replace("*", "%2A").replace("%7E", "~")

    query = pop(urlencode(sorted(params.items())))
    to_sign = method + "&%2F&" + pop(pathname2url(query))
    return base64.b64encode(hmac.new(f"{secret}&".encode(), to_sign.encode(),
                                     hashlib.sha1).digest()).decode()


def params(**changes: str) -> dict[str, str]:
    base = p.send_params(access_key_id=TEST_KEY_ID, region="cn-hangzhou", phone=PHONE,
                         sign_name=TEST_SIGN_NAME, template_code="SMS_100000001",
                         template_param={"order": "T 1*~", "link": "https://x.example/p/a b"},
                         out_id="n1.o1", nonce="nonce-1", now=datetime.now(UTC))
    return {**base, **changes}


def test_percent_encoding_and_signature_match_the_sdk() -> None:
    """RFC 3986 encoding (space %20, * %2A, ~ kept, UTF-8) and the HMAC-SHA1 over
    "GET&%2F&" + the encoded canonical query equal the official SDK's composition."""
    assert p.percent_encode("a b*c~d/é") == "a%20b%2Ac~d%2F%C3%A9"
    sent = params()
    assert p.string_to_sign("GET", sent).startswith("GET&%2F&AccessKeyId%3D")
    for method in ("GET", "POST"):
        assert p.signature(TEST_KEY_SECRET, method, sent) == sdk_signature(
            TEST_KEY_SECRET, method, sent)
    assert sent["SignatureMethod"] == "HMAC-SHA1" and sent["SignatureVersion"] == "1.0"
    assert sent["Version"] == "2017-05-25" and sent["Action"] == "SendSms"


async def _call(state: AliyunSmsFakeState, query: dict[str, str],
                method: str = "GET") -> tuple[int, dict[str, Any]]:
    transport = httpx.ASGITransport(app=make_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as http:
        if method == "GET":
            response = await http.get("/", params=query)
        else:
            response = await http.post("/", data=query)
    return response.status_code, response.json()


def signed(**changes: str) -> dict[str, str]:
    query = params(**changes)
    query["Signature"] = p.signature(TEST_KEY_SECRET, "GET", query)
    return query


def test_fake_verifies_like_the_gateway() -> None:
    """OK with a BizId for a good request (GET or form POST); SignatureDoesNotMatch,
    SignatureNonceUsed, InvalidTimeStamp.Expired and InvalidAccessKeyId.NotFound as HTTP
    4xx with HostId; business refusals as HTTP 200 with isv codes."""
    state = AliyunSmsFakeState()
    status, body = asyncio.run(_call(state, signed()))
    assert status == 200 and body["Code"] == "OK" and body["BizId"].endswith("^0")
    assert state.sent[0].text == "您的订单T 1*~已发货，请在此领取：https://x.example/p/a b"
    status, body = asyncio.run(_call(state, signed()))  # the same nonce again
    assert (status, body["Code"]) == (400, "SignatureNonceUsed") and "HostId" in body
    tampered = signed(SignatureNonce="n2")
    tampered["PhoneNumbers"] = "13900000000"
    status, body = asyncio.run(_call(state, tampered))
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    old = (datetime.now(UTC) - timedelta(minutes=16)).strftime(p.TIMESTAMP_FORMAT)
    status, body = asyncio.run(_call(state, signed(SignatureNonce="n3", Timestamp=old)))
    assert (status, body["Code"]) == (400, "InvalidTimeStamp.Expired")
    status, body = asyncio.run(_call(state, signed(SignatureNonce="n4", AccessKeyId="LTAIx")))
    assert (status, body["Code"]) == (404, "InvalidAccessKeyId.NotFound")
    status, body = asyncio.run(_call(state, signed(SignatureNonce="n5", PhoneNumbers="12345")))
    assert (status, body["Code"]) == (200, "isv.MOBILE_NUMBER_ILLEGAL") and "HostId" not in body
    post = params(SignatureNonce="n6")
    post["Signature"] = p.signature(TEST_KEY_SECRET, "POST", post)
    status, body = asyncio.run(_call(state, post, "POST"))
    assert body["Code"] == "OK"
    state.daily_limit = 2
    status, body = asyncio.run(_call(state, signed(SignatureNonce="n7")))
    assert (status, body["Code"]) == (200, "isv.BUSINESS_LIMIT_CONTROL")
    assert len(state.sent) == 2
    calls = [c.to_json() for c in state.call_log.since(0)]
    assert all(c["payload"].get("PhoneNumbers") in (None, "<redacted>") for c in calls)


def _notifier(state: AliyunSmsFakeState, *, secret: str = TEST_KEY_SECRET,
              transport: httpx.AsyncBaseTransport | None = None) -> AliyunSmsNotifier:
    return AliyunSmsNotifier(access_key_id=TEST_KEY_ID, access_key_secret=secret,
                             sign_name=TEST_SIGN_NAME,
                             templates={"zh": "SMS_100000001", "en": "SMS_100000002"},
                             endpoint="http://fake",
                             transport=transport or httpx.ASGITransport(app=make_app(state)))


def _message(to: str = PHONE, language: str = "en") -> Message:
    return Message(key="n9.o9", to=to, language=language, subject="", text="",
                   params={"order": "T9", "link": "https://robot.example/p/x"})


def test_notifier_outcomes() -> None:
    """OK is sent (BizId kept, OutId = the key, the language's template); a wrong secret is
    an AuthError, a bad number Skippable, flow control Throttled with a wait, a 504 after
    the send unknown, a refused connection Unavailable; no error names the number."""
    state = AliyunSmsFakeState()
    sent = asyncio.run(_notifier(state).send(_message()))
    assert sent.reference == state.sent[0].biz_id and state.sent[0].out_id == "n9.o9"
    assert state.sent[0].template_code == "SMS_100000002"
    errors: list[Exception] = []
    for notifier, message, kind in (
            (_notifier(state, secret="wrong"), _message(), AuthError),
            (_notifier(state), _message(to="12345"), Skippable)):
        with pytest.raises(kind) as caught:
            asyncio.run(notifier.send(message))
        errors.append(caught.value)
    state.set_faults(limit_control=1)
    with pytest.raises(Throttled) as throttled:
        asyncio.run(_notifier(state).send(_message()))
    assert throttled.value.retry_after == p.THROTTLED["isv.BUSINESS_LIMIT_CONTROL"]
    state.set_faults(lose_answer=1)
    before = len(state.sent)
    with pytest.raises(SendUnknown) as unknown:
        asyncio.run(_notifier(state).send(_message()))
    assert len(state.sent) == before + 1  # it went out; the sender cannot know
    refused = AliyunSmsNotifier(access_key_id=TEST_KEY_ID, access_key_secret=TEST_KEY_SECRET,
                                sign_name=TEST_SIGN_NAME, templates={"zh": "SMS_100000001"},
                                endpoint="http://127.0.0.1:1", timeout=2)
    with pytest.raises(Unavailable):
        asyncio.run(refused.send(_message()))
    for exc in (*errors, throttled.value, unknown.value):
        assert PHONE not in str(exc) and "robot.example" not in str(exc)


def test_confirm_finds_a_message_by_its_out_id() -> None:
    """QuerySendDetails (signed like SendSms) finds a message sent under a key, across
    pages; a key never sent, or another number, is not found."""
    state = AliyunSmsFakeState(daily_limit=1000)
    notifier = _notifier(state)
    since = datetime.now(UTC) - timedelta(minutes=1)
    for i in range(p.QUERY_PAGE_SIZE + 3):  # the one looked for is on the second page
        asyncio.run(notifier.send(dataclasses.replace(_message(), key=f"k{i}")))
    last = f"k{p.QUERY_PAGE_SIZE + 2}"
    found = asyncio.run(notifier.confirm(last, PHONE, since))
    assert found is not None and last in found.reference
    assert asyncio.run(notifier.confirm("never-sent", PHONE, since)) is None
    assert asyncio.run(notifier.confirm("k0", "13900000000", since)) is None
    queries = [c.to_json() for c in state.call_log.since(0)
               if c.to_json()["payload"].get("Action") == "QuerySendDetails"]
    assert queries and all(c["outcome"] == "ok" for c in queries)
