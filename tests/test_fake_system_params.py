"""Every fake answers every malformed system parameter with its platform's own error shape
(HTTP 200 with the platform's error object, as each real gateway does), never a 500 or a
plain-text page: timestamps in every unit, missing fields, non-numeric, huge and
wrongly-typed values, unreadable bodies. What the real platform accepts (Pinduoduo's and
Taobao's millisecond timestamps) the fake accepts too.

Each fake is served over loopback. Requests are built and signed by hand here, so the fake's answer is about the malformed
value and not about a signature the test got wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.common.times import format_cst
from connectors.fakekit import FakeClock
from connectors.pinduoduo.fake import FakePdd
from connectors.pinduoduo.fake import create_app as pdd_app
from connectors.pinduoduo.sign import pdd_sign
from connectors.taobao.fake import FakeTop
from connectors.taobao.fake import create_app as top_app
from connectors.taobao.sign import SIGN_METHODS, top_sign
from connectors.testing.loopback import serve_in_thread
from connectors.wechat.fake import FakeWechat
from connectors.wechat.fake import create_app as wechat_app
from connectors.youzan.fake import FakeYouzan
from connectors.youzan.fake import create_app as youzan_app

MISSING = object()  # the parameter is not sent at all
NOW = datetime.fromisoformat("2024-01-02T03:04:05+00:00")
SECONDS = str(int(NOW.timestamp()))
MILLIS = str(int(NOW.timestamp() * 1000))
FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
#: Values no gateway should ever choke on, whatever the parameter.
NASTY = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "0", "-1", "1e309", "NaN", "9" * 5000, "１７０４１６４６４５",
                     "\x00", "1704164645.5", MILLIS + "000", "null", "[]", "{}"]),
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)





def _client(app: Any) -> Iterator[httpx.Client]:
    """The fake served on a loopback port, and a client for it."""
    with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url) as client:
        yield client


def _json_answer(response: Any) -> dict[str, Any]:
    """The answer must be the platform's JSON (HTTP 200), never a server error."""
    assert response.status_code == 200, response.text[:200]
    assert "json" in response.headers["content-type"]
    document = response.json()
    assert isinstance(document, dict)
    return document


# -- Taobao (TOP): {"error_response": {"code": int, "msg": ...}} ---------------------------

FULLINFO = "taobao.trade.fullinfo.get"


def _top_form(changes: Mapping[str, object], *, sign: bool = True) -> dict[str, str]:
    form: dict[str, str] = {"method": FULLINFO, "app_key": "12345678",
                            "sign_method": "hmac-sha256", "timestamp": format_cst(NOW),
                            "format": "json", "v": "2.0", "session": "test-session",
                            "fields": "tid,status", "tid": "1"}
    for name, value in changes.items():
        if value is MISSING:
            form.pop(name, None)
        else:
            form[name] = str(value)
    if sign:
        method = form.get("sign_method", "md5")
        form["sign"] = top_sign(form, "testsecret", method if method in SIGN_METHODS else "md5")
    return form


@pytest.fixture
def top(clock: FakeClock) -> Iterator[httpx.Client]:
    yield from _client(top_app(FakeTop(clock=clock.now)))


TOP_CASES = [
    ("method", MISSING, 21), ("method", "taobao.no.such", 22), ("method", "x" * 5000, 22),
    ("app_key", MISSING, 28), ("app_key", "87654321", 29), ("app_key", "9" * 5000, 29),
    ("sign_method", "sha1", 25), ("sign_method", "HMAC", 25),
    ("timestamp", MISSING, 30), ("timestamp", "tomorrow", 31),
    ("timestamp", "2024-13-45 99:99:99", 31), ("timestamp", "2024-01-02T11:04:05+08:00", 31),
    ("timestamp", SECONDS, 31),  # seconds read as milliseconds: 1970, far out of range
    ("timestamp", MILLIS + "000", 31),  # microseconds
    ("timestamp", "9" * 5000, 31), ("timestamp", "-1", 31), ("timestamp", "1e12", 31),
    ("timestamp", "１７０４１６４６４５０００", 31), ("timestamp", "2024-01-02 10:04:05", 31),
    ("v", MISSING, 32), ("v", "3.0", 34), ("v", "2.0" * 1000, 34),
    ("session", MISSING, 26), ("session", "other", 27),
]


@pytest.mark.parametrize(("name", "value", "code"), TOP_CASES,
                         ids=[f"{n}-{str(v)[:20]}" for n, v, _ in TOP_CASES])
def test_taobao_fake_answers_malformed_system_parameters_with_top_errors(
        top: httpx.Client, name: str, value: object, code: int) -> None:
    """Each malformed TOP system parameter gets TOP's error_response with its code."""
    error = _json_answer(top.post("/router/rest", data=_top_form({name: value})))
    assert error["error_response"]["code"] == code
    assert isinstance(error["error_response"]["msg"], str)


def test_taobao_fake_answers_a_missing_signature_with_code_24(top: httpx.Client) -> None:
    """No sign at all: TOP's code 24, not a crash."""
    error = _json_answer(top.post("/router/rest", data=_top_form({}, sign=False)))
    assert error["error_response"]["code"] == 24


@pytest.mark.parametrize("timestamp", [format_cst(NOW), MILLIS],
                         ids=["gmt8-text", "epoch-millis"])
def test_taobao_fake_accepts_the_timestamps_top_accepts(top: httpx.Client,
                                                        timestamp: str) -> None:
    """TOP takes ``yyyy-MM-dd HH:mm:ss`` (GMT+8) and epoch milliseconds (old Python SDK)."""
    answer = _json_answer(top.post("/router/rest", data=_top_form({"timestamp": timestamp})))
    assert "error_response" not in answer or answer["error_response"]["code"] == 15  # no tid 1


@pytest.mark.parametrize("fmt", [MISSING, "xml", "JSONP"])
def test_taobao_fake_answers_other_formats_with_tops_xml_error(top: httpx.Client,
                                                               fmt: object) -> None:
    """Without ``format=json`` TOP answers XML (its default): an XML error_response."""
    response = top.post("/router/rest", data=_top_form({"format": fmt}))
    assert response.status_code == 200
    assert "<error_response><code>23</code>" in response.text


@FUZZ
@given(name=st.sampled_from(["method", "app_key", "sign_method", "timestamp", "v", "session",
                             "format", "simplify", "partner_id"]), value=NASTY)
def test_taobao_fake_never_fails_on_any_system_parameter_value(
        top: httpx.Client, name: str, value: str) -> None:
    """Whatever a system parameter holds, TOP's fake answers 200 in TOP's shape."""
    response = top.post("/router/rest", data=_top_form({name: value}))
    assert response.status_code == 200
    if "xml" in response.headers["content-type"]:
        assert "<error_response>" in response.text
    else:
        document = response.json()
        assert "error_response" in document or "trade_fullinfo_get_response" in document


# -- Pinduoduo (POP): {"error_response": {"error_code": int, "error_msg": ...}} ------------

def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return "" if value is None else str(value)


def _pop_body(changes: Mapping[str, object], *, sign: bool = True) -> dict[str, object]:
    body: dict[str, object] = {"type": "pdd.logistics.companies.get", "client_id": "test-client",
                               "timestamp": SECONDS, "data_type": "JSON", "version": "V1"}
    for name, value in changes.items():
        if value is MISSING:
            body.pop(name, None)
        else:
            body[name] = value
    if sign:
        body["sign"] = pdd_sign({k: _as_text(v) for k, v in body.items()}, "testsecret")
    return body


@pytest.fixture
def pdd(clock: FakeClock) -> Iterator[httpx.Client]:
    yield from _client(pdd_app(FakePdd(clock=clock.now)))


def _pop_error(client: httpx.Client, body: Mapping[str, object]) -> dict[str, Any]:
    document = _json_answer(client.post("/api/router", json=dict(body)))
    error: dict[str, Any] = document["error_response"]
    assert isinstance(error["error_msg"], str) and isinstance(error["sub_code"], str)
    return error


POP_CASES = [
    ("type", MISSING, 10001), ("type", "pdd.no.such", 10017), ("type", ["x"], 10017),
    ("client_id", MISSING, 10001), ("client_id", "other", 10016), ("client_id", 12, 10016),
    ("timestamp", MISSING, 10001), ("timestamp", "", 10001), ("timestamp", "soon", 10001),
    ("timestamp", MILLIS + "000", 10001),  # microseconds
    ("timestamp", MILLIS + "000000", 10001),  # nanoseconds
    ("timestamp", "9" * 5000, 10001), ("timestamp", 10**30, 10001), ("timestamp", -1, 10001),
    ("timestamp", 1704164645.5, 10001), ("timestamp", True, 10001), ("timestamp", None, 10001),
    ("timestamp", [1704164645], 10001), ("timestamp", {"s": 1}, 10001),
    ("timestamp", "１７０４１６４６４５", 10001), ("timestamp", "1_704_164_645", 10001),
    ("timestamp", " " + SECONDS, 10001), ("timestamp", str(int(SECONDS) - 3600), 10001),
    ("timestamp", str(int(MILLIS) + 3_600_000), 10001),
    ("data_type", "XML", 10001),
]


@pytest.mark.parametrize(("name", "value", "code"), POP_CASES,
                         ids=[f"{n}-{str(v)[:20]}" for n, v, _ in POP_CASES])
def test_pinduoduo_fake_answers_malformed_system_parameters_with_pop_errors(
        pdd: httpx.Client, name: str, value: object, code: int) -> None:
    """Each malformed POP common parameter gets POP's error_response with its code."""
    assert _pop_error(pdd, _pop_body({name: value}))["error_code"] == code


@pytest.mark.parametrize("timestamp", [SECONDS, int(SECONDS), MILLIS, int(MILLIS)],
                         ids=["seconds", "seconds-number", "millis", "millis-number"])
def test_pinduoduo_fake_accepts_seconds_and_the_millisecond_timestamp_pddsdk_sends(
        pdd: httpx.Client, timestamp: object) -> None:
    """A millisecond timestamp (what PyPI's pddsdk sends) is accepted like seconds."""
    document = _json_answer(pdd.post("/api/router", json=_pop_body({"timestamp": timestamp})))
    assert "logistics_companies_get_response" in document


def test_pinduoduo_fake_answers_a_form_post_with_a_millisecond_timestamp(
        pdd: httpx.Client) -> None:
    """pddsdk posts a form with a millisecond timestamp: a POP answer, not a 500."""
    form = {k: _as_text(v) for k, v in _pop_body({"timestamp": MILLIS}).items()}
    assert "logistics_companies_get_response" in _json_answer(pdd.post("/api/router", data=form))


@pytest.mark.parametrize(("access_token", "code"), [(MISSING, 10001), ("nope", 20032),
                                                    ("x" * 5000, 20032), (["t"], 20032)])
def test_pinduoduo_fake_answers_bad_access_tokens_with_pop_errors(
        pdd: httpx.Client, access_token: object, code: int) -> None:
    """A merchant API call without a usable access_token gets POP's error."""
    body = _pop_body({"type": "pdd.order.information.get", "order_sn": "1",
                      "access_token": access_token})
    assert _pop_error(pdd, body)["error_code"] == code


@pytest.mark.parametrize("sign", [MISSING, "0" * 32, "", 12])
def test_pinduoduo_fake_answers_bad_signatures_with_pop_errors(pdd: httpx.Client,
                                                               sign: object) -> None:
    """A missing sign is 10001; a wrong one 20004."""
    body = _pop_body({}, sign=False)
    if sign is not MISSING:
        body["sign"] = sign
    assert _pop_error(pdd, body)["error_code"] == (20004 if sign not in (MISSING, "") else 10001)


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"[" * 100_000, b"\xff\xfe"],
                         ids=["broken", "array", "deep", "not-utf8"])
def test_pinduoduo_fake_answers_unreadable_bodies_with_pop_errors(pdd: httpx.Client,
                                                                  raw: bytes) -> None:
    """A body POP cannot read is a 10001 error_response, not a crash."""
    response = pdd.post("/api/router", content=raw,
                        headers={"Content-Type": "application/json"})
    assert _json_answer(response)["error_response"]["error_code"] == 10001


@FUZZ
@given(name=st.sampled_from(["type", "client_id", "timestamp", "data_type", "version",
                             "access_token"]),
       value=st.one_of(NASTY, st.integers(), st.floats(allow_nan=False), st.booleans(),
                       st.none(), st.lists(st.integers(), max_size=3)))
def test_pinduoduo_fake_never_fails_on_any_system_parameter_value(
        pdd: httpx.Client, name: str, value: object) -> None:
    """Whatever a common parameter holds (any JSON type), POP's fake answers in POP's shape."""
    document = _json_answer(pdd.post("/api/router", json=_pop_body({name: value})))
    assert "error_response" in document or "logistics_companies_get_response" in document


# -- Youzan: {"gw_err_resp": {...}} at the gateway; {"success": false, "code"} for tokens --

@pytest.fixture
def youzan_fake(clock: FakeClock) -> FakeYouzan:
    return FakeYouzan(clock=clock.now)


@pytest.fixture
def youzan(youzan_fake: FakeYouzan) -> Iterator[httpx.Client]:
    yield from _client(youzan_app(youzan_fake))


def _youzan_token(client: httpx.Client) -> str:
    answer = _json_answer(client.post("/auth/token", json={
        "client_id": "fake-client-id", "client_secret": "fake-client-secret",
        "authorize_type": "silent", "grant_id": "56232"}))
    token: str = answer["data"]["access_token"]
    return token


SOLD = "/api/youzan.trades.sold.get/4.0.4"
YOUZAN_GATEWAY_CASES: list[tuple[str, dict[str, Any], int]] = [
    ("no-token", {"params": {}}, 4201),
    ("unknown-token", {"params": {"access_token": "nope"}}, 4203),
    ("huge-token", {"params": {"access_token": "t" * 5000}}, 4203),
    ("no-version", {"path": "/api/youzan.trades.sold.get"}, 4001),
    ("bad-version", {"path": "/api/youzan.trades.sold.get/9.9.9"}, 4005),
    ("unknown-api", {"path": "/api/youzan.no.such/1.0.0"}, 4005),
    ("form-body", {"content": b"a=1", "content_type": "application/x-www-form-urlencoded"},
     4007),
    ("no-content-type", {"content": b"{}", "content_type": ""}, 4007),
    ("broken-json", {"content": b"{nope"}, 5001),
    ("json-array", {"content": b"[1]"}, 5001),
    ("deep-json", {"content": b"[" * 100_000}, 5001),
    ("page-no-text", {"json": {"page_no": "one"}}, 5001),
    ("page-no-huge", {"content": b'{"page_no": 1e400}'}, 5001),
    ("page-no-list", {"json": {"page_no": [1]}}, 5001),
    ("page-no-inf", {"content": b'{"page_size": Infinity}'}, 5001),
    ("date-without-time", {"json": {"start_update": "2024-01-02",
                                    "end_update": "2024-01-03"}}, 5001),
    ("date-as-number", {"json": {"start_update": 1704164645, "end_update": 1704164645}}, 5001),
]


@pytest.mark.parametrize(("case", "request_parts", "code"), YOUZAN_GATEWAY_CASES,
                         ids=[c for c, _, _ in YOUZAN_GATEWAY_CASES])
def test_youzan_fake_answers_malformed_gateway_parameters_with_gw_err_resp(
        youzan: httpx.Client, case: str, request_parts: dict[str, Any], code: int) -> None:
    """Each malformed call gets Youzan's gateway error object with its err_code."""
    params = request_parts.get("params", {"access_token": _youzan_token(youzan)})
    headers = {"Content-Type": request_parts.get("content_type", "application/json")}
    if "json" in request_parts:
        content = json.dumps(request_parts["json"]).encode()
    else:
        content = request_parts.get("content", b"{}")
    response = youzan.post(request_parts.get("path", SOLD), params=params, content=content,
                           headers=headers)
    error = _json_answer(response)["gw_err_resp"]
    assert error["err_code"] == code and isinstance(error["err_msg"], str)


def test_youzan_fake_answers_an_expired_token_with_4202(youzan: httpx.Client,
                                                        youzan_fake: FakeYouzan) -> None:
    """An expired access token is gateway code 4202."""
    token = _youzan_token(youzan)
    youzan_fake.expire_tokens()
    error = _json_answer(youzan.post(SOLD, params={"access_token": token}, json={}))
    assert error["gw_err_resp"]["err_code"] == 4202


YOUZAN_TOKEN_CASES: list[tuple[str, bytes, str, int]] = [
    ("form", b"client_id=x", "application/x-www-form-urlencoded", 1000),
    ("broken", b"{nope", "application/json", 1000),
    ("array", b"[]", "application/json", 1000),
    ("deep", b"[" * 100_000, "application/json", 1000),
    ("no-client", b"{}", "application/json", 1103),
    ("client-as-list", b'{"client_id": ["fake-client-id"]}', "application/json", 1103),
    ("bad-type", json.dumps({"client_id": "fake-client-id", "client_secret":
                             "fake-client-secret", "authorize_type": 7}).encode(),
     "application/json", 1105),
    ("grant-as-list", json.dumps({"client_id": "fake-client-id", "client_secret":
                                  "fake-client-secret", "authorize_type": "silent",
                                  "grant_id": [56232]}).encode(), "application/json", 1103),
]


@pytest.mark.parametrize(("case", "raw", "content_type", "code"), YOUZAN_TOKEN_CASES,
                         ids=[c for c, _, _, _ in YOUZAN_TOKEN_CASES])
def test_youzan_fake_answers_malformed_token_requests_with_youzans_error(
        youzan: httpx.Client, case: str, raw: bytes, content_type: str, code: int) -> None:
    """A malformed /auth/token call gets ``{"success": false, "code": ...}``."""
    answer = _json_answer(youzan.post("/auth/token", content=raw,
                                      headers={"Content-Type": content_type}))
    assert answer["success"] is False and answer["code"] == code


@FUZZ
# JSON has no infinity (httpx refuses to send it): `Infinity` as raw text is a table case.
@given(value=st.one_of(NASTY, st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                       st.booleans(),
                       st.none(), st.lists(st.integers(), max_size=3)),
       name=st.sampled_from(["page_no", "page_size", "start_update", "end_update", "status",
                             "tid"]))
def test_youzan_fake_never_fails_on_any_parameter_value(youzan: httpx.Client, name: str,
                                                         value: object) -> None:
    """Whatever a parameter holds, Youzan's fake answers in one of Youzan's shapes."""
    token = _youzan_token(youzan)
    document = _json_answer(youzan.post(SOLD, params={"access_token": token},
                                        json={name: value}))
    assert "gw_err_resp" in document or "success" in document


# -- WeChat: {"errcode": int, "errmsg": str} ----------------------------------------------

@pytest.fixture
def wechat_fake(clock: FakeClock) -> FakeWechat:
    return FakeWechat(clock=clock.now)


@pytest.fixture
def wechat(wechat_fake: FakeWechat) -> Iterator[httpx.Client]:
    yield from _client(wechat_app(wechat_fake))


def _stable(changes: Mapping[str, object], fake: FakeWechat) -> dict[str, object]:
    body: dict[str, object] = {"grant_type": "client_credential", "appid": fake.appid,
                               "secret": fake.app_secret}
    for name, value in changes.items():
        if value is MISSING:
            body.pop(name, None)
        else:
            body[name] = value
    return body


WECHAT_TOKEN_CASES = [
    ("grant_type", MISSING, 40002), ("grant_type", 1, 40002), ("grant_type", "x" * 5000, 40002),
    ("appid", MISSING, 40013), ("appid", ["x"], 40013), ("secret", MISSING, 40125),
    ("secret", 0, 40125), ("force_refresh", "yes", 47001), ("force_refresh", 1, 47001),
    ("force_refresh", None, 47001),
]


@pytest.mark.parametrize(("name", "value", "code"), WECHAT_TOKEN_CASES,
                         ids=[f"{n}-{str(v)[:20]}" for n, v, _ in WECHAT_TOKEN_CASES])
def test_wechat_fake_answers_malformed_stable_token_requests_with_errcodes(
        wechat: httpx.Client, wechat_fake: FakeWechat, name: str, value: object,
        code: int) -> None:
    """Each malformed stable_token field gets WeChat's ``errcode``/``errmsg``."""
    answer = _json_answer(wechat.post("/cgi-bin/stable_token",
                                      json=_stable({name: value}, wechat_fake)))
    assert answer["errcode"] == code and isinstance(answer["errmsg"], str)


@pytest.mark.parametrize("raw", [b"{nope", b"[]", b"[" * 100_000, b"\xff"],
                         ids=["broken", "array", "deep", "not-utf8"])
def test_wechat_fake_answers_unreadable_bodies_with_47001(wechat: httpx.Client,
                                                         raw: bytes) -> None:
    """A body WeChat cannot read is errcode 47001 (the token is checked first on the API)."""
    answer = _json_answer(wechat.post("/cgi-bin/stable_token", content=raw))
    assert answer["errcode"] == 47001
    answer = _json_answer(wechat.post("/wxa/sec/order/get_order",
                                      params={"access_token": "x"}, content=raw))
    assert answer["errcode"] == 40001


def _upload(fake: FakeWechat, oid: str, **changes: object) -> dict[str, object]:
    payment = fake.payments[oid]
    body: dict[str, object] = {
        "order_key": {"order_number_type": 1, "mchid": fake.mchid, "out_trade_no": oid},
        "logistics_type": 3, "delivery_mode": 1, "shipping_list": [{"item_desc": "card"}],
        "upload_time": "2024-01-02T11:04:05+08:00", "payer": {"openid": payment.openid}}
    body.update(changes)
    return body


WECHAT_UPLOAD_CASES = [
    ("upload_time", "2024-01-02T11:04:05"), ("upload_time", "soon"), ("upload_time", 1704164645),
    ("upload_time", None), ("order_key", {"order_number_type": "1"}), ("order_key", []),
    ("logistics_type", "3"), ("logistics_type", 9), ("delivery_mode", True),
    ("shipping_list", "card"), ("shipping_list", [{"item_desc": "x" * 500}]),
]


@pytest.mark.parametrize(("name", "value"), WECHAT_UPLOAD_CASES,
                         ids=[f"{n}-{str(v)[:20]}" for n, v in WECHAT_UPLOAD_CASES])
def test_wechat_fake_answers_malformed_upload_fields_with_47001(
        wechat: httpx.Client, wechat_fake: FakeWechat, name: str, value: object) -> None:
    """A malformed shipping upload (naive or unreadable times, wrong types) is 47001."""
    oid = wechat_fake.create_payment(notify=False)
    token = _json_answer(wechat.post("/cgi-bin/stable_token",
                                     json=_stable({}, wechat_fake)))["access_token"]
    answer = _json_answer(wechat.post("/wxa/sec/order/upload_shipping_info",
                                      params={"access_token": token},
                                      json=_upload(wechat_fake, oid, **{name: value})))
    assert answer["errcode"] == 47001


@pytest.mark.parametrize(("params", "code"), [({}, 41001), ({"access_token": ""}, 41001),
                                              ({"access_token": "nope"}, 40001),
                                              ({"access_token": "t" * 5000}, 40001)])
def test_wechat_fake_answers_missing_or_bad_access_tokens_with_errcodes(
        wechat: httpx.Client, params: dict[str, str], code: int) -> None:
    """No access_token is 41001 (WeChat's "access_token missing"); a wrong one 40001."""
    answer = _json_answer(wechat.post("/wxa/sec/order/get_order", params=params, json={}))
    assert answer["errcode"] == code


def test_wechat_fake_answers_an_expired_access_token_with_42001(
        wechat: httpx.Client, wechat_fake: FakeWechat, clock: FakeClock) -> None:
    """An access token past its two hours is 42001."""
    token = _json_answer(wechat.post("/cgi-bin/stable_token",
                                     json=_stable({}, wechat_fake)))["access_token"]
    clock.advance(timedelta(hours=3))
    answer = _json_answer(wechat.post("/wxa/sec/order/get_order",
                                      params={"access_token": token}, json={}))
    assert answer["errcode"] == 42001


@FUZZ
@given(name=st.sampled_from(["grant_type", "appid", "secret", "force_refresh"]),
       value=st.one_of(NASTY, st.integers(), st.floats(allow_nan=False), st.booleans(),
                       st.none(), st.lists(st.integers(), max_size=3)))
def test_wechat_fake_never_fails_on_any_token_field_value(
        wechat: httpx.Client, wechat_fake: FakeWechat, name: str, value: object) -> None:
    """Whatever a stable_token field holds, WeChat's fake answers with errcode or a token."""
    answer = _json_answer(wechat.post("/cgi-bin/stable_token",
                                      json=_stable({name: value}, wechat_fake)))
    assert "errcode" in answer or "access_token" in answer
