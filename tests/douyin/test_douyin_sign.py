"""Douyin signing: the request ``sign`` and the push ``event-sign``, checked against a second
implementation written here from the platform's specification (PLATFORMS.md §5.2, §10)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from doudian import AppType, DouDian

from connectors.douyin.sign import (
    event_sign,
    method_path,
    param_json,
    sign,
    verify_event_sign,
    verify_sign,
)

SECRET = "s3cr3t-ÄPP"
KEY = "7123456789012345678"


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _encode(value: Any) -> str:
    """A second canonical JSON encoder: objects with sorted keys, no whitespace, non-ASCII
    and "/" as they are (Go: SetEscapeHTML(false); PHP: UNESCAPED_UNICODE|UNESCAPED_SLASHES)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        out = ['"']
        for ch in value:
            if ch == '"':
                out.append('\\"')
            elif ch == "\\":
                out.append("\\\\")
            elif ch in _SHORT:
                out.append(_SHORT[ch])
            elif ord(ch) < 0x20:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return "".join(out) + '"'
    if isinstance(value, list):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ",".join(_encode(k) + ":" + _encode(value[k]) for k in sorted(value)) + "}"


def _spec_sign(app_key: str, secret: str, method: str, params: dict[str, Any],
               timestamp: str) -> str:
    """The official SDKs' recipe: the system params sorted by name, concatenated name+value,
    wrapped in the secret, HMAC-SHA256 keyed with the secret, lowercase hex."""
    system = {"app_key": app_key, "timestamp": timestamp, "v": "2", "method": method,
              "param_json": _encode(params)}
    text = secret + "".join(k + system[k] for k in sorted(system)) + secret
    mac = hmac.HMAC(secret.encode(), digestmod="sha256")
    mac.update(text.encode())
    return mac.hexdigest()


PARAMS: list[dict[str, Any]] = [
    {},
    {"shop_order_id": "6920000000000000001"},
    {"size": 50, "page": 0, "update_time_start": 1733371200, "order_asc": True,
     "order_by": "update_time"},
    {"order_id": "6920500000000000001", "sku_id": "1750000101",
     "cert_list": [{"status": 2, "cert_no": "12****89", "grant_time": "2024-12-05 12:00:00",
                    "cert_link": "https://robot.example/p/tok3n?a=1&b=<2>",
                    "out_cert_id": "x-1", "nested": {"z": 1, "a": [3, {"y": None, "b": "中"}]}}]},
    {"remark": "卡密已发 \"quoted\" back\\slash /slash\ttab"},
]


@pytest.mark.parametrize("params", PARAMS)
def test_param_json_is_canonical(params: dict[str, Any]) -> None:
    """param_json sorts keys at every depth, has no whitespace, keeps unicode and '/'."""
    assert param_json(params) == _encode(params)


@pytest.mark.parametrize("params", PARAMS)
def test_sign_matches_the_specification(params: dict[str, Any]) -> None:
    """sign = hex HMAC-SHA256(secret, secret + sorted name+value pairs + secret)."""
    body = param_json(params)
    for method in ("order.searchList", "coupons.syncV2", "token.create"):
        assert sign(KEY, SECRET, method, body, "1733371200") == _spec_sign(
            KEY, SECRET, method, params, "1733371200")
        assert verify_sign(KEY, SECRET, method, body, "1733371200",
                           _spec_sign(KEY, SECRET, method, params, "1733371200").upper())


def test_sign_of_a_fixed_vector() -> None:
    """A golden vector: app_key 7000000000000000000, secret ``testsecret``,
    order.orderDetail at 1704164645 over a fixed param_json."""
    body = param_json({"size": 10, "page": 0, "order_id": "6919000000000000000"})
    assert body == '{"order_id":"6919000000000000000","page":0,"size":10}'
    assert sign("7000000000000000000", "testsecret", "order.orderDetail", body,
                "1704164645") == (
        "e1a86acf77b43b9555b77674085ad4c760eb4a5425d3263ff03515ba7fc3f61f")


ASCII_PARAMS = [p for p in PARAMS if param_json(p).isascii()]


@pytest.mark.parametrize("params", ASCII_PARAMS)
@pytest.mark.parametrize("timestamp", ["1733371200", "2024-12-05 12:00:00"])
def test_sign_agrees_with_the_doudian_package(params: dict[str, Any], timestamp: str) -> None:
    """The ``doudian`` package (an independent client from the package index) signs the
    same body, method and timestamp to the same value. Its body escapes non-ASCII as
    ``\\uXXXX`` (json.dumps' default), so only ASCII bodies are the same string in both."""
    client = DouDian(app_key=KEY, app_secret=SECRET, app_type=AppType.TOOL)  # no network
    body = param_json(params)
    for method in ("order.searchList", "order.orderDetail", "coupons.syncV2"):
        assert sign(KEY, SECRET, method, body, timestamp) == client._sign(
            method=method, param_json=body, timestamp=timestamp)


def test_sign_depends_on_every_signed_field() -> None:
    """Changing the method, body, timestamp, key or secret changes the signature."""
    base = sign(KEY, SECRET, "order.orderDetail", '{"shop_order_id":"1"}', "1733371200")
    assert len({base,
                sign(KEY, SECRET, "order.searchList", '{"shop_order_id":"1"}', "1733371200"),
                sign(KEY, SECRET, "order.orderDetail", '{"shop_order_id":"2"}', "1733371200"),
                sign(KEY, SECRET, "order.orderDetail", '{"shop_order_id":"1"}', "1733371201"),
                sign(KEY + "0", SECRET, "order.orderDetail", '{"shop_order_id":"1"}',
                     "1733371200"),
                sign(KEY, SECRET + "x", "order.orderDetail", '{"shop_order_id":"1"}',
                     "1733371200")}) == 6


def test_event_sign_is_md5_of_key_body_secret() -> None:
    """event-sign = lowercase hex MD5(app_key + raw body + app_secret), on the raw bytes."""
    body = b'[{"tag":"101","msg_id":"m1","data":"{\\"p_id\\":1}"}]'
    expected = hashlib.new("md5", KEY.encode() + body + SECRET.encode(),
                           usedforsecurity=False).hexdigest()
    assert event_sign(KEY, body, SECRET) == expected
    assert verify_event_sign(KEY, body, SECRET, expected.upper())
    assert not verify_event_sign(KEY, body + b" ", SECRET, expected)


def test_method_path_turns_dots_into_slashes() -> None:
    """The gateway path is the method with '.' → '/'."""
    assert method_path("order.searchList") == "/order/searchList"
    assert method_path("coupons.syncV2") == "/coupons/syncV2"
