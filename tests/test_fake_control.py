"""Every platform fake serves one control API (connectors.fakebase) the same way, and
``robot fake order`` creates, through it, a paid order on any running fake that the
platform's connector then takes in; each fake's start banner lists its SKUs and the exact
commands to use. Fakes run over loopback, served in a thread."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import robot.cli
from connectors.base import Connector, Order
from connectors.douyin.fake import FakeDouyin
from connectors.douyin.fake import create_app as douyin_app
from connectors.fakebase import FakeBase
from connectors.fakekit import FakeClock
from connectors.pinduoduo.fake import FakePdd
from connectors.pinduoduo.fake import create_app as pdd_app
from connectors.taobao.fake import FakeTop
from connectors.taobao.fake import create_app as top_app
from connectors.testing.loopback import serve_in_thread
from connectors.wechat.fake import FakeWechat, PaySender
from connectors.wechat.fake import create_app as wechat_app
from connectors.youzan.fake import FakeYouzan, PushSender
from connectors.youzan.fake import create_app as youzan_app
from robot.errors import UserError

PLATFORMS = ["douyin", "pinduoduo", "taobao", "wechat", "youzan"]


@pytest.fixture(autouse=True)
def _commands() -> None:
    robot.cli._register()


def _failure(result: Any) -> str:
    """The one line ``robot`` prints for a refused request (a UserError)."""
    assert isinstance(result.exception, UserError), result.output
    return result.exception.message


def _fake(platform: str, clock: FakeClock) -> tuple[FakeBase, Any]:
    """A fake of ``platform`` on ``clock`` and its app."""
    if platform == "taobao":
        top = FakeTop(clock=clock.now)
        return top, top_app(top)
    if platform == "pinduoduo":
        pdd = FakePdd(clock=clock.now)
        return pdd, pdd_app(pdd)
    if platform == "douyin":
        dy = FakeDouyin(clock=clock.now)
        return dy, douyin_app(dy)
    if platform == "youzan":
        yz = FakeYouzan(clock=clock.now)
        return yz, youzan_app(yz)
    wx = FakeWechat(clock=clock.now)
    return wx, wechat_app(wx)


@pytest.fixture(params=PLATFORMS)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[FakeBase, httpx.Client]]:
    clock = FakeClock(datetime.now(UTC))
    state, app = _fake(request.param, clock)
    with serve_in_thread(app, before_stop=state.release_hangs) as base, \
            httpx.Client(base_url=base) as client:
        yield state, client


def test_every_fake_serves_the_common_state_catalog_and_clock(
        served: tuple[FakeBase, httpx.Client]) -> None:
    """state, catalog, clock offset and clock advance answer alike on every fake."""
    state, client = served
    snapshot = client.get("/__fake__/state").json()
    for key in ("platform", "now", "clock_offset_seconds", "faults", "catalog", "calls",
                "write_backs"):
        assert key in snapshot, key
    assert snapshot["platform"] == state.platform
    catalog = client.get("/__fake__/catalog").json()
    assert catalog == snapshot["catalog"] and catalog
    assert {"sku", "mapping", "title", "price"} <= set(catalog[0])
    moved = client.post("/__fake__/clock/offset", json={"offset_seconds": -600}).json()
    assert moved["offset_seconds"] == -600
    before = datetime.fromisoformat(client.get("/__fake__/state").json()["now"])
    after = client.post("/__fake__/clock", json={"advance_seconds": 3600}).json()
    assert datetime.fromisoformat(after["now"]) - before >= timedelta(hours=1)
    assert client.post("/__fake__/clock", json={"advance_seconds": -5}).status_code == 400


def test_every_fake_creates_paid_orders_and_refuses_malformed_ones(
        served: tuple[FakeBase, httpx.Client]) -> None:
    """POST /__fake__/orders makes a paid order; a malformed body is a 400 naming the field."""
    state, client = served
    sku = state.catalog()[0].sku
    paid_at = (state.now() - timedelta(hours=2)).replace(microsecond=0)
    made = client.post("/__fake__/orders", json={"sku": sku, "quantity": 2,
                                                 "paid_at": paid_at.isoformat()})
    assert made.status_code == 200, made.text
    assert made.json()["platform"] == state.platform and made.json()["in_catalog"] is True
    assert client.post("/__fake__/orders", json={"sku": "NOBODY-MAPS-ME"}).json()["in_catalog"] \
        is False
    bad = [{}, {"sku": ""}, {"sku": sku, "quantity": 0}, {"sku": sku, "quantity": "2"},
           {"sku": sku, "quantity": True}, {"sku": sku, "paid_at": "2024-01-02 10:00"},
           {"sku": sku, "paid_at": "yesterday"}, {"sku": sku, "colour": "red"},
           {"sku": sku, "paid_at": (state.now() + timedelta(days=1)).isoformat()},
           {"sku": ["x"]}]
    for body in bad:
        answer = client.post("/__fake__/orders", json=body)
        assert answer.status_code == 400 and answer.json()["error"], body
    assert client.post("/__fake__/orders", content=b"[" * 50_000).status_code == 400


def test_every_fake_arms_faults_from_one_place(served: tuple[FakeBase, httpx.Client]) -> None:
    """The common faults arm alike everywhere; unknown or bad values are a 400, all or none."""
    state, client = served
    armed = client.post("/__fake__/faults", json={"throttle": 2, "latency_ms": 0}).json()
    assert armed["throttle"] == 2 and client.get("/__fake__/faults").json()["throttle"] == 2
    for body in ({"nonsense": 1}, {"http_500": -1}, {"http_500": "many"}, {"hang": True},
                 {"latency_ms": 10**9}, {"throttle": 5, "http_500": "x"}):
        assert client.post("/__fake__/faults", json=body).status_code == 400, body
    assert client.get("/__fake__/faults").json()["throttle"] == 2  # the refused set moved nothing
    push = client.post("/__fake__/faults", json={"duplicate_pushes": 1})
    assert push.status_code == (200 if state.pushes else 400)
    assert client.post("/__fake__/faults", json={"expire_tokens": True}).status_code == 200


def _api_call(state: FakeBase, client: httpx.Client) -> httpx.Response:
    """One API call carrying a credential, as each platform takes it."""
    if state.platform == "taobao":
        return client.post("/router/rest", data={"method": "taobao.trade.fullinfo.get",
                                                 "format": "json", "session": "test-session",
                                                 "app_key": "12345678", "sign": "00"})
    if state.platform == "pinduoduo":
        return client.post("/api/router", json={"type": "pdd.order.information.get",
                                                "access_token": "test-access-token"})
    if state.platform == "douyin":
        return client.post("/order/orderDetail",
                           params={"access_token": "test-access-token", "sign": "00",
                                   "app_key": "fake-app-key", "method": "order.orderDetail"},
                           content=b'{"shop_order_id":"1"}')
    if state.platform == "youzan":
        return client.post("/api/youzan.trade.get/4.0.2",
                           params={"access_token": "test-access-token"}, json={"tid": "E1"})
    return client.post("/wxa/sec/order/get_order",
                       params={"access_token": "test-access-token"}, json={})


def test_every_fake_records_every_call_with_its_payload_and_no_credential(
        served: tuple[FakeBase, httpx.Client]) -> None:
    """/__fake__/calls lists each API call, its payload (credentials redacted), its answer;
    transport faults are recorded too."""
    state, client = served
    _api_call(state, client)
    client.post("/__fake__/faults", json={"http_500": 1})
    assert _api_call(state, client).status_code >= 500
    calls = client.get("/__fake__/calls").json()
    assert [c["seq"] for c in calls] == [1, 2]
    first = calls[0]
    assert first["outcome"].startswith("error") and first["status"] == 200
    assert "test-session" not in json.dumps(calls) and "test-access-token" not in json.dumps(calls)
    assert "<redacted>" in json.dumps(first["payload"])
    assert calls[1]["outcome"].startswith("fault: http")
    assert client.get("/__fake__/calls", params={"since": 1}).json() == calls[1:]
    assert client.get("/__fake__/calls", params={"since": "x"}).status_code == 400


def test_push_faults_duplicate_and_reorder_what_a_fake_sends() -> None:
    """duplicate_pushes sends a push twice; reorder_pushes sends it after the next one
    (Youzan's pushes and WeChat Pay's notifications go through the shared sender)."""
    clock = FakeClock(datetime.now(UTC))
    youzan = FakeYouzan(clock=clock.now, push_url="http://robot.test/hooks/yz")
    wechat = FakeWechat(clock=clock.now, notify_url="http://robot.test/hooks/wx")
    def two_payments() -> None:
        wechat.create_payment()
        wechat.create_payment()

    for state, sender_type, make in ((youzan, PushSender, youzan.create_trade),
                                     (wechat, PaySender, two_payments)):
        seen: list[str] = []

        def receive(request: httpx.Request, seen: list[str] = seen) -> httpx.Response:
            body = json.loads(request.content)
            seen.append(str(body.get("msg_id") or body.get("id")))
            return httpx.Response(200, text="success")

        make()
        due = [getattr(m, "msg_id", None) or m.notification_id  # type: ignore[attr-defined]
               for m in (state.due_messages() if isinstance(state, FakeYouzan)
                         else state.due_notifications())]
        assert len(due) >= 2
        state.set_faults(duplicate_pushes=1, reorder_pushes=1)
        sender = sender_type(state, transport=httpx.MockTransport(receive))  # type: ignore[arg-type]
        sender.deliver_due()
        sender.close()
        assert seen[:3] == [due[1], due[1], due[0]], state.platform
        assert state.faults.duplicate_pushes == 0 and state.faults.reorder_pushes == 0


def test_taobao_tmc_batches_carry_duplicate_and_reordered_messages() -> None:
    """On Taobao the push faults act on TMC batches (messages the robot pulls)."""
    top = FakeTop(clock=FakeClock(datetime.now(UTC)).now)
    top.create_trade()
    ids = [m.id for m in top.messages]  # TradeCreate, TradeBuyerPay
    top.set_faults(duplicate_pushes=1, reorder_pushes=1)
    batch = top._tmc_consume({"quantity": "10"})
    got = [m["id"] for m in batch["messages"]["tmc_message"]]
    assert got == [ids[1], ids[1], ids[0]]


# -- robot fake order, against each running fake ---------------------------------------------

def _base_url(harness: Any) -> str:
    for name in ("gateway", "base_url"):
        if isinstance(getattr(harness, name, None), str) and getattr(harness, name):
            return str(getattr(harness, name)).removesuffix("/router/rest")
    return str(harness.config.gateway).removesuffix("/api/router")


async def _find(connector: Connector, wanted: str) -> Order | None:
    cursor = None
    for _ in range(50):
        result = await connector.poll(cursor, datetime.now(UTC))
        for order in result.orders:
            if order.platform_order_id == wanted:
                await connector.aclose()
                return order
        cursor = dict(result.cursor)
        if not result.more:
            break
    order = await connector.fetch_order(wanted)  # push platforms: the push names it
    await connector.aclose()
    return order


@pytest.mark.parametrize("platform", PLATFORMS)
def test_robot_fake_order_creates_an_order_the_connector_takes_in(platform: str) -> None:
    """``robot fake order --url --sku --quantity --message`` on a running fake makes a paid
    order with that SKU, quantity and buyer message, which the platform's connector then
    polls (or is pushed)."""
    module = importlib.import_module(f"connectors.{platform}.harness")
    with module.make_harness() as harness:
        base = _base_url(harness)
        sku = httpx.get(f"{base}/__fake__/catalog").json()[0]["sku"]
        fake_now = datetime.fromisoformat(httpx.get(f"{base}/__fake__/state").json()["now"])
        paid_at = (fake_now - timedelta(minutes=3)).replace(microsecond=0)
        result = CliRunner().invoke(robot.cli.cli, [
            "fake", "order", "--url", base + "/whatever/path", "--sku", sku,
            "--quantity", "2", "--paid-at", paid_at.astimezone().isoformat(),
            "--message", "充值 13800000000", "--property", "充值号码=13800000000", "--json"])
        assert result.exit_code == 0, result.output
        order_id = json.loads(result.output)["order_id"]
        push = harness.signed_push(order_id)
        pushed = None
        if push is not None:
            headers, body = push
            events = harness.connector().parse_push(headers, body, datetime.now(UTC)).events
            assert order_id in {e.platform_order_id for e in events}
            pushed = next(e.order for e in events if e.platform_order_id == order_id)
        # A push that carries the whole order (WeChat Pay's) is what the robot takes in.
        order = pushed or asyncio.run(_find(harness.connector(), order_id))
        assert order is not None
        assert [(sku in {ln.sku_id, ln.outer_id, ln.item_id}, ln.quantity)
                for ln in order.lines] == [(True, 2)]
        assert order.buyer_message == "充值 13800000000"
        if order.paid_at is not None:
            assert abs(order.paid_at - paid_at) <= timedelta(seconds=1)


@pytest.mark.parametrize(("args", "message"), [
    (["--url", "http://192.0.2.1:9000", "--sku", "X"], "loopback"),
    (["--url", "ftp://127.0.0.1:9", "--sku", "X"], "http://HOST:PORT"),
    (["--url", "http://127.0.0.1:9", "--sku", "X", "--paid-at", "2024-01-02 10:00"], "offset"),
    (["--url", "http://127.0.0.1:1", "--sku", "X"], "no fake answers"),
    (["--url", "http://127.0.0.1:9", "--sku", "X", "--property", "no-equals"], "NAME=VALUE"),
])
def test_robot_fake_order_refuses_bad_input_clearly(args: list[str], message: str) -> None:
    """A URL off loopback, a time without its offset or no fake there: one clear line."""
    result = CliRunner().invoke(robot.cli.cli, ["fake", "order", *args])
    assert message in _failure(result)


def test_robot_fake_order_reports_a_refusal_by_the_fake() -> None:
    """What the fake refuses (a buyer id Pinduoduo does not carry) is said plainly."""
    pdd = FakePdd()
    with serve_in_thread(pdd_app(pdd)) as base:
        result = CliRunner().invoke(robot.cli.cli, ["fake", "order", "--url", base, "--sku",
                                                    "YOUKU-VIP-1M", "--buyer", "b1"])
    assert "buyer" in _failure(result) and not pdd.orders


# -- the start banners -------------------------------------------------------------------------

@pytest.mark.parametrize("platform", PLATFORMS)
def test_each_fake_banner_lists_its_skus_and_the_order_command(
        platform: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``robot fake <platform>`` prints every SKU it sells and the exact ``robot fake order``
    line for its own address, and the same in ``--json``."""
    served: list[Any] = []

    def no_serving(app: Any, sock: Any, *cleanups: Callable[[], object]) -> None:
        served.append(app)
        for cleanup in cleanups:
            cleanup()
        sock.close()

    monkeypatch.setattr(f"connectors.{platform}.cli.serve_until_interrupted", no_serving)
    result = CliRunner().invoke(robot.cli.cli, ["fake", platform, "--port", "0"])
    assert result.exit_code == 0, result.output
    state, _ = _fake(platform, FakeClock())
    base = next(line.split()[-1] for line in result.output.splitlines()
                if "robot fake order --url" in line).split("/__fake__")[0]
    base = result.output.split("robot fake order --url ")[1].split()[0]
    assert base.startswith("http://127.0.0.1:")
    for item in state.catalog():
        assert f"{item.mapping}: {item.sku}" in result.output
    assert f"robot fake order --url {base} --sku {state.catalog()[0].sku}" in result.output
    assert f"{base}/__fake__/state" in result.output
    as_json = CliRunner().invoke(robot.cli.cli, ["fake", platform, "--port", "0", "--json"])
    assert [s["sku"] for s in json.loads(as_json.output)["skus"]] == \
        [i.sku for i in state.catalog()]
    assert len(served) == 2
