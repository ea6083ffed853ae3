"""Bad webhooks: every refusal names its HTTP status and a short reason, and writes nothing.

All requests go through the real route (``POST /hooks/{shop}``) of one app serving three
shops: ``mem`` (the in-memory platform), ``yz`` (Youzan, ``Event-Sign``) and ``wx`` (WeChat
Pay notifications and signed merchant-backend posts), on every database. "Nothing written"
is one assertion: :func:`tests.badinput.snapshot.snapshot` of every table is unchanged (no
order, ``push_seen``, audit or outbox row), and the allocator was not woken.

Youzan and the memory platform sign no timestamp, so only WeChat has an age check; a replayed
Youzan or memory message is harmless because intake is idempotent (tests/http/test_hooks.py).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from starlette.exceptions import StarletteDeprecationWarning

from connectors.base import Connector
from connectors.memory import (
    TEST_PUSH_SECRET,
    MemoryConfig,
    MemoryConnector,
    MemoryPlatform,
    order_to_json,
    sign_push,
)
from connectors.wechat import WechatConnector, backend_signature
from connectors.wechat.fake import FakeWechat
from connectors.youzan import event_sign
from robot.config import PoolShare, ShopConfig, SkuMapping
from robot.http.app import build_app
from robot.http.context import MAX_PUSH_BODY, HttpContext
from robot.vault import Vault
from tests.badinput.snapshot import Snapshot, snapshot
from tests.factories import paid_order, seed_codes
from tests.http.conftest import shop_config
from tests.wechat.helpers import BACKEND_SECRET
from tests.wechat.helpers import MemoryContext as WxContext
from tests.wechat.helpers import make_config as wx_config
from tests.youzan.helpers import CLIENT_ID, CLIENT_SECRET, KDT_ID, in_process, make_fake
from tests.youzan.helpers import MemoryContext as YzContext
from tests.youzan.helpers import make_config as yz_config

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

Request = tuple[dict[str, str], bytes]


@pytest.fixture(scope="module")
def wx_fake() -> FakeWechat:
    """WeChat Pay's fake on the wall clock (the route checks ages against the real now)."""
    return FakeWechat()


@dataclass
class Hooks:
    """The app under test, the fakes that sign for it, and what it has woken."""

    engine: Engine
    client: TestClient
    wx: FakeWechat
    contexts: tuple[YzContext, WxContext]
    woken: list[int] = field(default_factory=list)
    before: Snapshot = field(default_factory=dict)

    def post(self, shop: str, request: Request) -> tuple[int, dict[str, str]]:
        headers, body = request
        response = self.client.post(f"/hooks/{shop}", content=body, headers=headers)
        return response.status_code, response.json()

    def assert_nothing_written(self) -> None:
        assert snapshot(self.engine) == self.before
        assert self.woken == []
        for context in self.contexts:  # the connectors' durable stores (tokens) untouched
            assert (context.secrets, context.stores) == ({}, 0)


@pytest.fixture
def hooks(engine: Engine, vault: Vault, wx_fake: FakeWechat) -> Iterator[Hooks]:
    """The webhook route over a database holding a pool of ten codes; three push shops."""
    seed_codes(engine, vault, "p1", 10)
    mem = shop_config("mem")
    items = [SkuMapping(sku_id="s1", pools=[PoolShare(pool="p1")])]
    yz = ShopConfig(name="yz", platform="youzan", file=Path("yz.yaml"), items=items,
                    platform_config=yz_config())
    wx = ShopConfig(name="wx", platform="wechat", file=Path("wx.yaml"), items=items,
                    platform_config=wx_config(wx_fake))
    contexts = (YzContext(), WxContext())
    connectors: dict[str, Connector] = {
        "mem": shop_connector(mem),
        "yz": in_process(make_fake(), contexts[0]),
        "wx": WechatConnector(wx_config(wx_fake), contexts[1]),
    }
    woken: list[int] = []
    ctx = HttpContext(engine=engine, vault=vault, shops={"mem": mem, "yz": yz, "wx": wx},
                      connectors=connectors, wake=lambda: woken.append(1))
    with TestClient(build_app(ctx)) as client:
        yield Hooks(engine, client, wx_fake, contexts, woken, snapshot(engine))


def shop_connector(shop: ShopConfig) -> MemoryConnector:
    assert isinstance(shop.platform_config, MemoryConfig)
    return MemoryConnector(MemoryPlatform.named(shop.platform_config.name))


# -- requests, signed or not -----------------------------------------------------------------


def mem_body(order_id: str = "B1") -> bytes:
    return json.dumps({"message_id": f"m-{order_id}",
                       "order": order_to_json(paid_order(order_id, ("s1", 1)))}).encode()


def mem_signed(body: bytes) -> Request:
    return {"X-Memory-Sign": sign_push(TEST_PUSH_SECRET, body)}, body


def yz_payload(**changes: object) -> dict[str, object]:
    tid = "E20240102030405000000001"
    msg = quote(json.dumps({"tid": tid, "status": "WAIT_SELLER_SEND_GOODS"}), safe="")
    payload: dict[str, object] = {"client_id": CLIENT_ID, "kdt_id": int(KDT_ID), "id": tid,
                                  "type": "trade_TradePaid", "msg": msg, "msg_id": "m-1",
                                  "version": 1704164645, "test": False}
    payload.update(changes)
    return payload


def yz_signed(body: bytes | dict[str, object], secret: str = CLIENT_SECRET) -> Request:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return {"Event-Sign": event_sign(CLIENT_ID, raw, secret)}, raw


def wx_pay(h: Hooks, stamp: datetime | None = None, signer: FakeWechat | None = None) -> Request:
    oid = h.wx.create_payment(attach="sku=s1", notify=False)
    body = h.wx.envelope(h.wx.notification_for(oid))
    return (signer or h.wx).signed(body, stamp or datetime.now(UTC)), body


def wx_pay_signed(h: Hooks, body: bytes) -> Request:
    return h.wx.signed(body, datetime.now(UTC)), body


BACKEND_BODY: dict[str, object] = {"out_trade_no": "M1", "transaction_id": "4200000001",
                                   "openid": "o-buyer", "total": 1000,
                                   "lines": [{"sku": "s1", "qty": 1}]}


def wx_backend(body: bytes | dict[str, object], *, stamp: datetime | None = None,
               secret: str = BACKEND_SECRET) -> Request:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ts = str(int((stamp or datetime.now(UTC)).timestamp()))
    return {"X-Robot-Timestamp": ts, "X-Robot-Signature": backend_signature(secret, ts, raw)}, raw


def without(request: Request, *names: str) -> Request:
    headers, body = request
    return {k: v for k, v in headers.items() if k not in names}, body


def altered(request: Request) -> Request:
    headers, body = request
    return headers, body.replace(b"}", b" }", 1)


def swapped(request: Request, old: bytes, new: bytes) -> Request:
    headers, body = request
    assert old in body
    return headers, body.replace(old, new)


def swapped_header(request: Request, name: str, add: int) -> Request:
    """The request with a numeric header moved on by ``add`` (the signature is now stale)."""
    headers, body = request
    return {**headers, name: str(int(headers[name]) + add)}, body


# -- controls: the same harness accepts genuine requests ----------------------------------------


def test_controls_genuine_pushes_are_accepted(hooks: Hooks) -> None:
    """The signing helpers are right: genuine requests to each shop are answered 200."""
    assert hooks.post("mem", mem_signed(mem_body("OK1")))[0] == 200
    assert hooks.post("yz", yz_signed({"client_id": CLIENT_ID, "kdt_id": int(KDT_ID),
                                       "msg": "", "test": True}))[0] == 200
    assert hooks.post("wx", wx_backend(BACKEND_BODY))[0] == 200
    assert hooks.post("wx", wx_pay(hooks))[0] == 200
    assert snapshot(hooks.engine)["orders"] != hooks.before["orders"]


# -- bad or missing signatures: 401 --------------------------------------------------------------

SIGNATURE_CASES: list[tuple[str, str, Callable[[Hooks], Request], str]] = [
    ("mem-wrong", "mem", lambda h: ({"X-Memory-Sign": "0" * 64}, mem_body()),
     "bad or missing X-Memory-Sign"),
    ("mem-missing", "mem", lambda h: ({}, mem_body()), "bad or missing X-Memory-Sign"),
    ("mem-other-body", "mem", lambda h: (mem_signed(b"another body")[0], mem_body()),
     "bad or missing X-Memory-Sign"),
    ("yz-missing", "yz", lambda h: without(yz_signed(yz_payload()), "Event-Sign"),
     "youzan push without Event-Sign header"),
    ("yz-wrong", "yz", lambda h: ({"Event-Sign": "0" * 32}, yz_signed(yz_payload())[1]),
     "youzan push Event-Sign does not match the body"),
    ("yz-altered", "yz", lambda h: altered(yz_signed(yz_payload())),
     "youzan push Event-Sign does not match the body"),
    ("yz-other-secret", "yz", lambda h: yz_signed(yz_payload(), "not-the-secret"),
     "youzan push Event-Sign does not match the body"),
    ("wx-no-headers", "wx", lambda h: ({}, b"{}"),
     "wechat push: neither a WeChat Pay notification nor a signed merchant-backend post"),
    ("wx-pay-wrong-key", "wx", lambda h: wx_pay(h, signer=impostor(h.wx)),
     "wechat pay notification: signature does not verify"),
    ("wx-pay-altered", "wx", lambda h: altered(wx_pay(h)),
     "wechat pay notification: signature does not verify"),
    ("wx-pay-newline", "wx", lambda h: (wx_pay(h)[0], wx_pay(h)[1] + b"\n"),
     "wechat pay notification: signature does not verify"),
    ("wx-pay-event-swapped", "wx",
     lambda h: swapped(wx_pay(h), b"TRANSACTION.SUCCESS", b"REFUND.SUCCESS"),
     "wechat pay notification: signature does not verify"),
    ("wx-pay-no-timestamp", "wx", lambda h: without(wx_pay(h), "Wechatpay-Timestamp"),
     "wechat pay notification: timestamp is missing or not Unix seconds"),
    ("wx-pay-unknown-serial", "wx",
     lambda h: ({**wx_pay(h)[0], "Wechatpay-Serial": "PUB_KEY_ID_OTHER"}, wx_pay(h)[1]),
     "wechat pay notification: no verification key for serial PUB_KEY_ID_OTHER"),
    ("wx-pay-no-signature", "wx", lambda h: without(wx_pay(h), "Wechatpay-Signature"),
     "wechat pay notification: Wechatpay-Serial/Signature/Nonce header missing"),
    ("wx-pay-no-nonce", "wx", lambda h: without(wx_pay(h), "Wechatpay-Nonce"),
     "wechat pay notification: Wechatpay-Serial/Signature/Nonce header missing"),
    ("wx-pay-sm2", "wx",
     lambda h: ({**wx_pay(h)[0], "Wechatpay-Signature-Type": "SM2"}, wx_pay(h)[1]),
     "wechat pay notification: unsupported Wechatpay-Signature-Type"),
    ("wx-backend-wrong-secret", "wx", lambda h: wx_backend(BACKEND_BODY, secret="wrong"),
     "wechat backend post: X-Robot-Signature does not match"),
    ("wx-backend-altered", "wx",
     lambda h: (wx_backend(BACKEND_BODY)[0], wx_backend(BACKEND_BODY)[1].replace(b"1000", b"1")),
     "wechat backend post: X-Robot-Signature does not match"),
    ("wx-backend-other-timestamp", "wx",
     lambda h: swapped_header(wx_backend(BACKEND_BODY), "X-Robot-Timestamp", +1),
     "wechat backend post: X-Robot-Signature does not match"),
]


def impostor(fake: FakeWechat) -> FakeWechat:
    """Another RSA key pretending to be the platform's (same serial)."""
    other = FakeWechat(apiv3_key=fake.apiv3_key)
    other.serial = fake.serial
    return other


def test_bad_or_missing_signature_is_401(hooks: Hooks) -> None:
    """A request that fails verification is 401 with the reason, and writes nothing."""
    for case, shop, make, reason in SIGNATURE_CASES:
        assert hooks.post(shop, make(hooks)) == (401, {"error": "rejected", "reason": reason}), case
    hooks.assert_nothing_written()


# -- stale timestamps: 401 -------------------------------------------------------------------------

AGE = re.compile(r"(?P<what>.+): timestamp is (?P<age>-?\d+) s from now \(limit 300 s\)")


STALE_CASES = [("pay", timedelta(minutes=5, seconds=2)), ("pay", timedelta(hours=3)),
               ("pay", -timedelta(minutes=6)), ("backend", timedelta(minutes=6)),
               ("backend", -timedelta(hours=1))]


def test_stale_or_future_timestamp_is_401(hooks: Hooks) -> None:
    """A correctly signed WeChat request more than 5 minutes from now is 401, naming the age."""
    for kind, skew in STALE_CASES:
        stamp = datetime.now(UTC) - skew
        request = wx_pay(hooks, stamp) if kind == "pay" else wx_backend(BACKEND_BODY, stamp=stamp)
        status, answer = hooks.post("wx", request)
        assert (status, answer["error"]) == (401, "rejected")
        match = AGE.fullmatch(answer["reason"])
        assert match is not None, answer
        what = "wechat pay notification" if kind == "pay" else "wechat backend post"
        assert match["what"] == what
        # the request took a moment: the age it names is the skew, give or take two seconds
        assert abs(int(match["age"]) - int(skew.total_seconds())) <= 2, (kind, skew, answer)
    hooks.assert_nothing_written()


def test_missing_or_garbled_timestamp_is_401(hooks: Hooks) -> None:
    """A timestamp that is not Unix seconds is refused before the signature is even checked."""
    headers, body = wx_backend(BACKEND_BODY)
    for value in ("", "yesterday", "-5", "1.5e9"):
        request = ({**headers, "X-Robot-Timestamp": value}, body)
        assert hooks.post("wx", request) == (401, {
            "error": "rejected",
            "reason": "wechat backend post: timestamp is missing or not Unix seconds"}), value
    hooks.assert_nothing_written()


# -- oversized bodies: 413 -------------------------------------------------------------------------


def test_oversized_body_is_413(hooks: Hooks) -> None:
    """Bodies over 1 MiB are refused, declared or streamed without a length, before parsing."""
    expected = {"error": "too_large", "reason": f"body over {MAX_PUSH_BODY} bytes"}
    big = b"x" * (MAX_PUSH_BODY + 1)

    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_PUSH_BODY // 65536 + 1):
            yield b"y" * 65536

    for shop in ("mem", "yz", "wx"):
        response = hooks.client.post(f"/hooks/{shop}", content=big,
                                     headers={"X-Memory-Sign": sign_push(TEST_PUSH_SECRET, big)})
        assert (response.status_code, response.json()) == (413, expected), shop
        response = hooks.client.post(f"/hooks/{shop}", content=chunks())
        assert (response.status_code, response.json()) == (413, expected), shop
    hooks.assert_nothing_written()


# -- invalid JSON and valid JSON of the wrong shape: 400 ---------------------------------------

BAD_BODY_CASES: list[tuple[str, str, Callable[[Hooks], Request], str]] = [
    # not JSON at all (but signed, so verification passed)
    ("mem-not-json", "mem", lambda h: mem_signed(b"{not json"),
     "push body is not a memory order message"),
    ("mem-not-utf8", "mem", lambda h: mem_signed(b"\xff\xfe"),
     "push body is not a memory order message"),
    ("yz-not-json", "yz", lambda h: yz_signed(b"not json"), "youzan push body is not JSON"),
    ("wx-pay-not-json", "wx", lambda h: wx_pay_signed(h, b"{not json"),
     "wechat pay notification: not JSON"),
    ("wx-backend-not-json", "wx", lambda h: wx_backend(b"{not json"),
     "wechat backend post: not JSON"),
    # JSON, but not the message the platform sends
    ("mem-list", "mem", lambda h: mem_signed(b"[]"), "push body is not a memory order message"),
    ("mem-no-order", "mem", lambda h: mem_signed(b'{"message_id": 1}'),
     "push body is not a memory order message"),
    ("yz-list", "yz", lambda h: yz_signed(b"[1,2]"), "youzan push body is not a JSON object"),
    ("yz-no-tid", "yz", lambda h: yz_signed(yz_payload(msg=quote("{}"), id="")),
     "youzan push trade_TradePaid names no trade (tid)"),
    ("yz-bad-msg", "yz", lambda h: yz_signed(yz_payload(msg="%7Bnot-json")),
     "youzan push trade_TradePaid: youzan push msg is not URL-encoded JSON"),
    ("wx-pay-list", "wx", lambda h: wx_pay_signed(h, b"[1]"),
     "wechat pay notification: not a JSON object"),
    ("wx-pay-no-resource", "wx",
     lambda h: wx_pay_signed(h, b'{"event_type": "TRANSACTION.SUCCESS"}'),
     "wechat pay notification: no resource"),
    ("wx-pay-other-algorithm", "wx",
     lambda h: wx_pay_signed(h, b'{"event_type": "TRANSACTION.SUCCESS", "resource": {}}'),
     "wechat pay notification: unsupported resource algorithm"),
    ("wx-backend-no-lines", "wx", lambda h: wx_backend({**BACKEND_BODY, "lines": []}),
     "wechat backend post: lines must be a non-empty list"),
    ("wx-backend-line-no-sku", "wx", lambda h: wx_backend({**BACKEND_BODY, "lines": [{"qty": 1}]}),
     "wechat backend post: line 1 has no sku"),
    ("wx-backend-no-order", "wx", lambda h: wx_backend({"total": 1}),
     "wechat backend post: out_trade_no is missing"),
    ("wx-backend-total-text", "wx", lambda h: wx_backend({**BACKEND_BODY, "total": "10.00"}),
     "wechat backend post: amount is not a non-negative integer (fen)"),
    ("wx-backend-status", "wx", lambda h: wx_backend({**BACKEND_BODY, "status": "shipped"}),
     "wechat backend post: unknown status 'shipped'"),
]


def test_verified_body_that_is_not_a_message_is_400(hooks: Hooks) -> None:
    """Invalid JSON or JSON of the wrong shape, correctly signed: 400 with why, nothing written."""
    for case, shop, make, reason in BAD_BODY_CASES:
        assert hooks.post(shop, make(hooks)) == (400, {"error": "rejected", "reason": reason}), case
    hooks.assert_nothing_written()


# -- unknown shop: 404; another shop's message: 401 ----------------------------------------------


def test_unknown_shop_is_404(hooks: Hooks) -> None:
    """A push for a shop that is not configured is 404, even when signed for a known one."""
    for name in ("nope", "MEM", "mem%20", "yz-other"):
        assert hooks.post(name, mem_signed(mem_body())) == (
            404, {"error": "not_found", "reason": "no shop of that name takes pushes"}), name
    hooks.assert_nothing_written()


def test_shop_without_push_is_404(engine: Engine, vault: Vault) -> None:
    """A configured shop whose connector takes no pushes has no webhook: 404, nothing written."""

    class NoPush(MemoryConnector):
        receives_push = False

    shop = shop_config("mem")
    connector = shop_connector(shop)
    ctx = HttpContext(engine=engine, vault=vault, shops={"mem": shop},
                      connectors={"mem": NoPush(connector.backend)})
    before = snapshot(engine)
    with TestClient(build_app(ctx)) as client:
        headers, body = mem_signed(mem_body())
        response = client.post("/hooks/mem", content=body, headers=headers)
    assert (response.status_code, response.json()) == (
        404, {"error": "not_found", "reason": "no shop of that name takes pushes"})
    assert snapshot(engine) == before


def test_youzan_push_for_another_app_or_shop_is_401(hooks: Hooks) -> None:
    """A correctly signed Youzan body naming another app or shop is not ours: 401, no write."""
    for change, reason in (
        ({"client_id": "other-app"}, "youzan push is for another app (client_id)"),
        ({"kdt_id": 999, "root_kdt_id": 999}, "youzan push is for another shop (kdt_id)"),
    ):
        assert hooks.post("yz", yz_signed(yz_payload(**change))) == (
            401, {"error": "rejected", "reason": reason}), change
    hooks.assert_nothing_written()


# -- whatever arrives: never a 5xx, never a write ---------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=12,
)
bodies = (st.binary(max_size=512)
          | json_values.map(lambda v: json.dumps(v).encode())
          | st.fixed_dictionaries({"message_id": json_values, "order": json_values})
          .map(lambda v: json.dumps(v).encode())
          | st.fixed_dictionaries({"type": st.sampled_from(["trade_TradePaid", "x"]),
                                   "msg": json_values, "id": json_values})
          .map(lambda v: json.dumps(v).encode())
          | st.fixed_dictionaries({"out_trade_no": json_values, "status": json_values,
                                   "total": json_values, "lines": json_values})
          .map(lambda v: json.dumps(v).encode()))
SIGNERS: dict[str, Callable[[bytes], dict[str, str]]] = {
    "mem": lambda b: mem_signed(b)[0],
    "wx": lambda b: wx_backend(b)[0],
}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, shop=st.sampled_from(["mem", "wx", "yz"]), sign=st.booleans())
def test_random_bodies_never_500_nor_write(hooks: Hooks, body: bytes, shop: str,
                                           sign: bool) -> None:
    """Whatever arrives, signed or not, on any shop: 400 or 401 with a reason, nothing written.

    Youzan bodies go unsigned (or wrongly signed) only: a correctly signed Youzan body is a
    genuine message, and one naming an unreadable trade is recorded for a person by design
    (the signed malformed Youzan bodies the robot must refuse are in the table above).
    """
    hooks.before = snapshot(hooks.engine)
    signer = SIGNERS.get(shop) if sign else None
    forged = {"X-Memory-Sign": "f" * 64, "Event-Sign": "0" * 32,
              "Wechatpay-Serial": hooks.wx.serial, "Wechatpay-Signature": "AAAA",
              "Wechatpay-Nonce": "n", "Wechatpay-Timestamp": str(int(datetime.now(UTC).timestamp()))}
    headers = signer(body) if signer else forged
    response = hooks.client.post(f"/hooks/{shop}", content=body, headers=headers)
    assert response.status_code in (400, 401)
    answer = response.json()
    assert answer["error"] == "rejected"
    assert answer["reason"]
    hooks.assert_nothing_written()
