"""The fakes: ``api.weixin.qq.com`` semantics and control endpoints over loopback, the
WeChat Pay sender's retry schedule, and the ``robot fake wechat`` command.

What must hold: the fake refuses what WeChat refuses (bad format, wrong openid, shipped twice,
bad tokens), its faults fire as configured, the sender retries non-2xx answers on WeChat's
schedule on the injected clock, and the command is registered, loopback only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.wechat.crypto import load_public_key, verify_signature
from connectors.wechat.fake import FakeClock, FakeWechat, PaySender, create_app
from connectors.wechat.fake_state import RETRY_DELAYS
from robot.cli.cmd_fake import fake as fake_group
from robot.registry import discover
from tests.wechat.helpers import live_fake, serve


def _token(client: httpx.Client, fake: FakeWechat) -> str:
    answer = client.post("/cgi-bin/stable_token", json={
        "grant_type": "client_credential", "appid": fake.appid, "secret": fake.app_secret})
    token = answer.json()["access_token"]
    assert isinstance(token, str)
    return token


def _upload(fake: FakeWechat, oid: str, **changes: Any) -> dict[str, Any]:
    payment = fake.payments[oid]
    body: dict[str, Any] = {
        "order_key": {"order_number_type": 2, "transaction_id": payment.transaction_id},
        "logistics_type": 3, "delivery_mode": 1, "shipping_list": [{"item_desc": "card"}],
        "upload_time": "2024-01-02T03:04:05.000+08:00", "payer": {"openid": payment.openid}}
    body.update(changes)
    return body


def test_fake_api_over_loopback() -> None:
    """Tokens, uploads (format, openid, twice), get_order and control endpoints."""
    fake = FakeWechat()
    with live_fake(fake) as url, httpx.Client(base_url=url) as client:
        oid = client.post("/__fake__/payments", json={"total": 990}).json()["out_trade_no"]
        bad = client.post("/cgi-bin/stable_token", json={
            "grant_type": "client_credential", "appid": fake.appid, "secret": "x"}).json()
        assert bad["errcode"] == 40125
        token = _token(client, fake)
        assert _token(client, fake) == token  # normal mode: the same token
        api = "/wxa/sec/order/upload_shipping_info"
        assert client.post(api, json=_upload(fake, oid)).json()["errcode"] == 41001  # missing
        assert client.post(api, params={"access_token": "x"},
                           json=_upload(fake, oid)).json()["errcode"] == 40001
        q = {"access_token": token}
        assert client.post(api, params=q, json=_upload(fake, oid, logistics_type=9)
                           ).json()["errcode"] == 47001
        assert client.post(api, params=q, json=_upload(fake, oid, payer={"openid": "o-x"})
                           ).json()["errcode"] != 0
        assert client.post(api, params=q, json=_upload(fake, oid)).json()["errcode"] == 0
        assert client.post(api, params=q, json=_upload(fake, oid)).json()["errcode"] == 10060003
        order = client.post("/wxa/sec/order/get_order", params=q, json={
            "merchant_id": fake.mchid, "merchant_trade_no": oid}).json()["order"]
        assert order["order_state"] == 2 and order["paid_amount"] == 990
        client.post(f"/__fake__/payments/{oid}/refund", json={})
        assert fake.payments[oid].state == 5
        client.post("/__fake__/faults", json={"fail_next": 1})
        assert client.post(api, params=q, json=_upload(fake, oid)).status_code == 502
        client.post("/__fake__/tokens/expire")
        assert client.post(api, params=q, json=_upload(fake, oid)).json()["errcode"] == 42001
        assert client.post("/__fake__/faults", json={"nope": 1}).status_code == 400
        keys = client.get("/__fake__/keys").json()
        assert keys["serial"] == fake.serial
        state = client.get("/__fake__/state").json()
        assert state["payments"][oid]["shipments"] == 1


def test_sender_retries_on_the_wechat_schedule() -> None:
    """Non-2xx answers are retried at +15 s, +15 s, +30 s, ...; a 204 ends the retries;
    every attempt carries a valid signature."""
    clock = FakeClock()
    fake = FakeWechat(clock=clock.now)
    answers = [500, 503, 404, 204]
    seen: list[bool] = []
    key = load_public_key(fake.public_key_pem, serial=fake.serial)

    async def hook(request: Request) -> Response:
        body = await request.body()
        h = request.headers
        seen.append(verify_signature(key, h["wechatpay-timestamp"], h["wechatpay-nonce"],
                                     body, h["wechatpay-signature"]))
        return Response(status_code=answers[len(seen) - 1])

    with serve(Starlette(routes=[Route("/n", hook, methods=["POST"])])) as url:
        fake.notify_url = f"{url}/n"
        sender = PaySender(fake)
        fake.create_payment()
        assert sender.deliver_due() == 0
        for delay in RETRY_DELAYS[:3]:
            clock.advance(delay - timedelta(seconds=1))
            assert sender.deliver_due() == 0  # not yet due
            clock.advance(timedelta(seconds=1))
            sender.deliver_due()
        sender.close()
    assert [status for _, status in sender.answers] == answers
    assert all(seen) and len(seen) == 4
    assert fake.notifications[0].delivered


def test_certificate_keys_are_accepted() -> None:
    """A platform certificate PEM works as a verification key like a public key PEM."""
    from datetime import UTC, datetime
    fake = FakeWechat()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(fake.private_key.public_key()).serial_number(0x5157F09EFDC096DE15EBE81A)
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(fake.private_key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key = load_public_key(pem, serial="5157F09EFDC096DE15EBE81A")
    body = b'{"x":1}'
    headers = fake.signed(body, now)
    assert verify_signature(key, headers["Wechatpay-Timestamp"], headers["Wechatpay-Nonce"],
                            body, headers["Wechatpay-Signature"])


def test_fake_wechat_command_and_options() -> None:
    """The sub-command exists with its options and refuses a non-loopback host."""
    result = CliRunner().invoke(fake_group, ["wechat", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--host", "--appid", "--app-secret", "--mchid", "--seed-orders",
                   "--notify-url"):
        assert option in result.output
    refused = CliRunner().invoke(fake_group, ["wechat", "--host", "0.0.0.0"])
    assert refused.exit_code == 2
    assert "loopback" in refused.output


def test_wechat_connector_is_registered_as_an_entry_point() -> None:
    """The connector loads through the robot.connectors group like a plugin."""
    found = discover()
    assert "wechat" in found.factories
    assert found.problem_for("wechat") is None


def test_app_is_starlette() -> None:
    """create_app builds the fake's routes."""
    paths = {getattr(r, "path", "") for r in create_app(FakeWechat()).routes}
    assert {"/cgi-bin/stable_token", "/wxa/sec/order/{name}", "/__fake__/state"} <= paths
