"""A third-party client of the 抖店 open platform, the ``doudian`` package from the package
index (an independent implementation of the signing, tokens and push verification), pointed
at our fake: proof that the fake speaks the real protocol, not merely our connector's.

The SDK signs with the local time as ``yyyy-MM-dd HH:mm:ss`` (it assumes China time, as
Douyin's gateway reads it), so the test runs it in Asia/Shanghai. It has no setting for the
gateway's address (only production or the sandbox), so the test sets its one attribute for
it. It reads the deprecated ``err_no`` on token answers, which the fake keeps for callers
that do not opt out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from doudian import AppType, DouDian

from connectors.douyin.fake import FakeDouyin, create_app
from connectors.douyin.harness import APP_KEY, APP_SECRET, SHOP_ID
from connectors.douyin.normalize import order_from
from connectors.testing.loopback import serve_in_thread


@pytest.fixture
def china_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process runs in Asia/Shanghai while the SDK signs (restored afterwards)."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def served() -> Iterator[tuple[FakeDouyin, str]]:
    fake = FakeDouyin(app_key=APP_KEY, app_secret=APP_SECRET, shop_id=SHOP_ID, app_type="tool")
    with serve_in_thread(create_app(fake)) as url:
        yield fake, url


def sdk(url: str, secret: str = APP_SECRET) -> DouDian:
    """The SDK as a tool app (no network at construction), aimed at the fake."""
    client = DouDian(app_key=APP_KEY, app_secret=secret, app_type=AppType.TOOL)
    client._gate_way = url  # the SDK offers no gateway setting
    return client


def test_the_doudian_sdk_authorizes_and_reads_orders_from_the_fake(
        china_time: None, served: tuple[FakeDouyin, str]) -> None:
    """The SDK trades a tool app's authorization code for a token (token.create,
    authorization_code) and reads order.orderDetail and order.searchList, signed its own
    way; the fake verifies every signature and answers what our normalizer reads."""
    fake, url = served
    client = sdk(url)
    assert client.init_token(fake.authorize()) is True
    assert fake.tokens_issued == 1
    oid = fake.create_order()
    detail = client.request("/order/orderDetail", {"shop_order_id": oid})
    assert detail["code"] == 10000, detail
    order = order_from(detail["data"]["shop_order_detail"])
    assert order.platform_order_id == oid and len(order.lines) == 1
    now = int(time.time())
    listed = client.request("/order/searchList", {
        "update_time_start": now - 600, "update_time_end": now + 60, "page": 0, "size": 10,
        "order_by": "update_time", "order_asc": True})
    assert listed["code"] == 10000, listed
    assert [o["order_id"] for o in listed["data"]["shop_order_list"]] == [oid]
    assert {c.api for c in fake.call_log.since(0)} >= {"token.create", "order.orderDetail",
                                                       "order.searchList"}


def test_the_doudian_sdk_verifies_the_fakes_pushes(served: tuple[FakeDouyin, str]) -> None:
    """The SDK's push verification (app-id header, event-sign = MD5(app_key + body +
    secret)) accepts the fake's signed push and refuses it tampered with."""
    fake, url = served
    oid = fake.create_order()
    headers, body = fake.signed_push(oid)
    messages = sdk(url).callback(headers, body)
    assert messages is not None and messages[0]["tag"] == "101"
    assert json.loads(messages[0]["data"])["p_id"] == int(oid)
    assert sdk(url).callback(headers, body.replace(b"101", b"102")) is None


def test_the_fake_refuses_the_sdk_signing_with_a_wrong_secret(
        china_time: None, served: tuple[FakeDouyin, str]) -> None:
    """Signed with another secret, the SDK's token.create is refused: no token issued."""
    fake, url = served
    assert sdk(url, secret="not-the-secret").init_token(fake.authorize()) is False
    assert fake.tokens_issued == 0


def test_the_sdks_call_with_chinese_text_is_taken(
        china_time: None, served: tuple[FakeDouyin, str]) -> None:
    """The SDK writes non-ASCII as ``\\uXXXX`` in the sorted ``param_json`` it signs (the
    official SDKs write it as is): the same JSON, so the fake takes the remark."""
    fake, url = served
    client = sdk(url)
    assert client.init_token(fake.authorize()) is True
    oid = fake.create_order()
    answer = client.request("/order/addOrderRemark", {"order_id": oid, "remark": "已发卡密"})
    assert answer["code"] == 10000, answer
    assert fake.orders[oid].seller_words == "已发卡密"
