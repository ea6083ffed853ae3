"""Buyer notifications end to end: a shipped order's buyer hears once per event, by e-mail
(a local SMTP sink) and SMS (the Aliyun fake over loopback HTTP), across retries, lost
answers and crashes; opted-out shops send nothing; plaintext codes only where opted in."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, update
from structlog.testing import capture_logs

import robot.cli
from connectors.aliyunsms.fake import TEST_KEY_ID, TEST_KEY_SECRET, AliyunSmsFakeState, make_app
from connectors.fakeserve import FakeHost, ServedFake, serve_fake
from connectors.memory import MemoryConnector, MemoryPlatform
from connectors.notifier import Channel, Message, Sent
from robot import pipeline, support
from robot.cli.common import App
from robot.clock import utcnow
from robot.config import load_config
from robot.errors import ConfigError, RobotError
from robot.http import links
from robot.notify import Notifications, build_notifiers
from robot.outbox import Dispatcher, RetryPolicy
from robot.schema import audit_log, deliveries, notifications, orders
from robot.vault import Vault
from tests.factories import paid_order, seed_codes
from tests.http.conftest import API_TOKEN, make_http
from tests.smtpsink import Sink, SmtpSink

PUBLIC_URL = "https://robot.example.com"
EMAIL = "buyer@example.net"
PHONE = "13800138000"


@contextlib.contextmanager
def served_sms_fake() -> Iterator[tuple[AliyunSmsFakeState, str]]:
    """The Aliyun SMS fake on loopback (its own event loop in a thread) and its URL."""
    host = FakeHost()
    state = AliyunSmsFakeState()
    served: ServedFake = host.call(serve_fake(make_app(state)))
    try:
        yield state, served.base_url
    finally:
        state.release_hangs()
        host.call(served.stop())
        host.close()


@pytest.fixture(scope="module")
def sms_fake() -> Iterator[tuple[AliyunSmsFakeState, str]]:
    with served_sms_fake() as served:
        yield served


@pytest.fixture
def smtp() -> Iterator[tuple[Sink, int]]:
    sink = SmtpSink()
    with sink as state:
        yield state, sink.port


def notify_yaml(smtp_port: int, sms_url: str, *, sms_extra: str = "") -> str:
    return (
        "notify:\n"
        "  language: zh\n"
        "  email:\n"
        "    notifier: smtp\n"
        f"    config: {{host: 127.0.0.1, port: {smtp_port}, security: none,"
        " from_address: robot@shop.example, timeout_seconds: 5}\n"
        "  sms:\n"
        "    notifier: aliyun_sms\n"
        f"    config: {{access_key_id: {TEST_KEY_ID}, access_key_secret: {TEST_KEY_SECRET},"
        f" sign_name: 测试小店, templates: {{zh: SMS_100000001}}, endpoint: '{sms_url}'}}\n"
        + sms_extra)


@dataclass
class Bench:
    engine: Engine
    vault: Vault
    tmp: Path
    db_url: str
    key_file: Path
    name: str
    sink: Sink
    sms: AliyunSmsFakeState

    def configure(self, notify: str) -> None:
        (self.tmp / "shops").mkdir(exist_ok=True)
        (self.tmp / "robot.yaml").write_text(
            f"database: {self.db_url}\nkey_file: {self.key_file}\nshops: shops/*.yaml\n"
            f"http: {{public_url: '{PUBLIC_URL}'}}\n")
        (self.tmp / "shops" / "mem.yaml").write_text(
            "name: mem\nplatform: memory\nitems:\n  - {sku_id: s1, pool: p1}\n"
            f"platform_config: {{name: {self.name}}}\n" + notify)
        self.config = load_config(self.tmp / "robot.yaml")
        self.shop = self.config.shop("mem")
        self.platform = MemoryPlatform.named(self.name)
        self.notifications = Notifications(
            self.engine, self.vault, {"mem": self.shop}, build_notifiers({"mem": self.shop}),
            call_timeout=5, lease=timedelta(seconds=15))

    def dispatcher(self, notifications: Notifications | None = None) -> Dispatcher:
        hook = links.pickup_url_hook(self.engine, self.vault, {"mem": self.shop}, PUBLIC_URL)
        return Dispatcher(self.engine, self.vault, {"mem": MemoryConnector(self.platform)},
                          {"mem": self.shop},
                          RetryPolicy(max_attempts=5, backoff_initial=0.001, backoff_max=0.001),
                          worker="test", pickup_url=hook,
                          notify=notifications or self.notifications)

    def order(self, number: str, *, email: str | None = EMAIL,
              phone: str | None = PHONE) -> int:
        snap = dataclasses.replace(paid_order(number, ("s1", 1)), buyer_email=email,
                                   buyer_phone=phone)
        self.platform.put_order(snap)
        result = pipeline.intake(self.engine, self.shop, snap, allocate=True)
        assert result.order_id is not None
        return result.order_id

    def run(self, hours: float = 2, rounds: int = 12,
            disp: Dispatcher | None = None) -> None:
        disp = disp or self.dispatcher()
        for _ in range(rounds):
            if not asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=hours))):
                return

    def rows(self, order_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(notifications).where(notifications.c.order_id == order_id)
                .order_by(notifications.c.id))]

    def sms_to(self, phone: str, since: int = 0) -> list[Any]:
        return [m for m in self.sms.sent[since:] if m.phone == phone]

    def cli(self, *args: str) -> tuple[int, str]:
        robot.cli._register()
        app = App(config_path=self.tmp / "robot.yaml")
        app._engine = self.engine
        result = CliRunner().invoke(robot.cli.cli, list(args), obj=app)
        if isinstance(result.exception, RobotError):
            return 1, result.output + result.exception.message
        return result.exit_code, result.output


@pytest.fixture
def bench(engine: Engine, vault: Vault, tmp_path: Path, db_url: str, key_file: Path,
          smtp: tuple[Sink, int], sms_fake: tuple[AliyunSmsFakeState, str]) -> Bench:
    sink, port = smtp
    state, url = sms_fake
    b = Bench(engine, vault, tmp_path, db_url, key_file, f"notify-{tmp_path.name}", sink, state)
    b.configure(notify_yaml(port, url))
    return b


def _phone(n: int) -> str:
    return f"139{n:08d}"


def test_shipped_order_is_told_once_by_email_and_sms(bench: Bench) -> None:
    """After the shipment, one e-mail (Message-ID stable per event, the pickup link, no code)
    and one SMS (the link in the template's variables, OutId = the event's key) go out; more
    dispatcher rounds send nothing more."""
    phone = _phone(1)
    secrets = seed_codes(bench.engine, bench.vault, "p1", 1)
    order_id = bench.order("N1", phone=phone)
    before = len(bench.sms.sent)
    bench.run()
    bench.run(hours=30)
    mails = bench.sink.to(EMAIL)
    assert len(mails) == 1
    rows = bench.rows(order_id)
    assert {(r["channel"], r["event"], r["state"]) for r in rows} == {
        ("email", "delivered", "sent"), ("sms", "delivered", "sent")}
    email_row = next(r for r in rows if r["channel"] == "email")
    assert mails[0]["Message-ID"] == f"<n{email_row['id']}.o{order_id}@shop.example>"
    assert email_row["reference"] == mails[0]["Message-ID"]
    body = mails[0].get_content()
    assert "N1" in mails[0]["Subject"] and f"{PUBLIC_URL}/p/" in body
    sms = bench.sms_to(phone, before)
    assert len(sms) == 1
    assert sms[0].params["order"] == "N1" and sms[0].params["link"].startswith(PUBLIC_URL)
    sms_row = next(r for r in rows if r["channel"] == "sms")
    assert sms[0].out_id == f"n{sms_row['id']}.o{order_id}"
    assert sms_row["reference"] == sms[0].biz_id
    assert not any(s in body or s in sms[0].text for s in secrets)


def test_transient_refusals_are_retried_and_sent_once(bench: Bench) -> None:
    """451 at RCPT and Aliyun's isv.BUSINESS_LIMIT_CONTROL are "not sent": the job retries
    with backoff and each channel's message arrives exactly once."""
    phone = _phone(2)
    seed_codes(bench.engine, bench.vault, "p1", 1)
    bench.sink.tempfail_rcpt = 2
    bench.sms.set_faults(limit_control=1)
    order_id = bench.order("N2", phone=phone)
    before = len(bench.sms.sent)
    bench.run()
    assert len(bench.sink.to(EMAIL)) == 1
    assert len(bench.sms_to(phone, before)) == 1
    rows = {r["channel"]: r for r in bench.rows(order_id)}
    assert rows["email"]["state"] == "sent" and rows["email"]["attempts"] == 3
    assert rows["sms"]["state"] == "sent" and rows["sms"]["attempts"] == 2


def test_lost_answer_is_unknown_and_never_resent_by_itself(bench: Bench) -> None:
    """A connection dropped after the message's data (SMTP) or a gateway 504 after the send
    (SMS) leaves the event unknown: the robot does not send it again; `robot orders notify`
    sends it again under the same key, once, audited."""
    phone = _phone(3)
    seed_codes(bench.engine, bench.vault, "p1", 1)
    bench.sink.drop_after_data = 1
    bench.sms.set_faults(lose_answer=1)
    order_id = bench.order("N3", phone=phone)
    before = len(bench.sms.sent)
    bench.run()
    bench.run(hours=40)
    assert len(bench.sink.to(EMAIL)) == 1  # the sink has it; the robot could not know
    assert len(bench.sms_to(phone, before)) == 1
    assert {r["state"] for r in bench.rows(order_id)} == {"unknown"}
    code, out = bench.cli("status", "--json")
    items = [i for i in json.loads(out)["needs_attention"]
             if i["kind"] == "notifications_unknown"]
    assert [(i["subject"], i["count"]) for i in items] == [("mem", 1)]

    code, out = bench.cli("orders", "notify", str(order_id), "--channel", "email")
    assert code == 0, out
    assert "same key" in out
    bench.run(hours=50)
    mails = bench.sink.to(EMAIL)
    assert len(mails) == 2 and mails[0]["Message-ID"] == mails[1]["Message-ID"]
    rows = {r["channel"]: r for r in bench.rows(order_id)}
    assert rows["email"]["state"] == "sent" and rows["sms"]["state"] == "unknown"
    assert len(bench.sms_to(phone, before)) == 1
    with bench.engine.connect() as conn:
        audited = [json.loads(d) for d in conn.execute(
            select(audit_log.c.details).where(audit_log.c.action == "notify_resend")).scalars()]
    assert audited == [{"events": ["email:delivered"], "again": [True]}]

    # Aliyun can tell: QuerySendDetails finds the SMS by its OutId, so it is not sent again.
    code, out = bench.cli("orders", "notify", str(order_id), "--channel", "sms")
    assert code == 0 and "was sent after all" in out, out
    bench.run(hours=60)
    assert len(bench.sms_to(phone, before)) == 1
    assert {r["state"] for r in bench.rows(order_id)} == {"sent"}
    code, out = bench.cli("status", "--json")
    assert not [i for i in json.loads(out)["needs_attention"]
                if i["kind"] == "notifications_unknown"]


class _Crashing:
    """A notifier whose process dies right after the transport took the message."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.channel = inner.channel

    async def send(self, message: Message) -> Sent:
        await self.inner.send(message)
        raise asyncio.CancelledError  # killed before the outcome is recorded

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("channel", [Channel.EMAIL, Channel.SMS])
def test_crash_after_send_before_recording_does_not_send_twice(bench: Bench,
                                                               channel: Channel) -> None:
    """The robot dies after the send and before recording it: the row stays ``sending``; the
    next robot, once the longest send is over, marks it unknown and sends nothing again
    (the e-mail through the SMTP sink, the SMS through the Aliyun fake)."""
    seed_codes(bench.engine, bench.vault, "p1", 1)
    phone = _phone(9)
    if channel is Channel.EMAIL:
        order_id = bench.order("N4", phone=None)
    else:
        order_id = bench.order("N4S", email=None, phone=phone)
    before = len(bench.sms.sent)

    def arrived() -> int:
        if channel is Channel.EMAIL:
            return len(bench.sink.to(EMAIL))
        return len(bench.sms_to(phone, before))

    real = build_notifiers({"mem": bench.shop})["mem"]
    dying = Notifications(bench.engine, bench.vault, {"mem": bench.shop},
                          {"mem": {channel: _Crashing(real[channel])}},
                          call_timeout=5, lease=timedelta(seconds=15))
    with pytest.raises(asyncio.CancelledError):
        bench.run(disp=bench.dispatcher(dying))
    assert arrived() == 1
    assert [(r["channel"], r["state"]) for r in bench.rows(order_id)] == [
        (channel.value, "sending")]
    bench.run(hours=3)  # the row is fresh: another robot may be sending it; leave it
    assert [r["state"] for r in bench.rows(order_id)] == ["sending"]
    with bench.engine.begin() as conn:  # ...until the longest send is long over
        conn.execute(update(notifications).values(sending_at=utcnow() - timedelta(hours=1)))
    bench.run(hours=4)
    row = bench.rows(order_id)[0]
    assert row["state"] == "unknown" and "may have been sent" in row["last_error"]
    assert arrived() == 1


def test_refused_address_fails_without_retries(bench: Bench) -> None:
    """A 550 at RCPT is final: the notification fails once, the order stays shipped."""
    seed_codes(bench.engine, bench.vault, "p1", 1)
    bench.sink.reject_rcpt = 1
    order_id = bench.order("N5", phone=None)
    bench.run()
    row = bench.rows(order_id)[0]
    assert row["state"] == "failed" and row["attempts"] == 1 and "550" in row["last_error"]
    assert EMAIL not in row["last_error"]  # the server named it; the robot keeps it out
    assert bench.sink.to(EMAIL) == []
    code, out = bench.cli("orders", "show", str(order_id), "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["state"] == "shipped" and shown["notifications"][0]["state"] == "failed"
    assert shown["buyer_email"] == "b***@example.net"


def test_opted_out_shop_sends_nothing(bench: Bench) -> None:
    """A shop without ``notify:`` (or with a channel ``enabled: false``) records no
    notification and sends nothing, whatever contact the order carries."""
    for notify in ("", notify_yaml(1, "http://127.0.0.1:1").replace(
            "  email:\n", "  email:\n    enabled: false\n").replace(
            "  sms:\n", "  sms:\n    enabled: false\n")):
        bench.configure(notify)
        phone = _phone(6 + len(notify) % 7)
        seed_codes(bench.engine, bench.vault, "p1", 1)
        before = len(bench.sms.sent)
        order_id = bench.order(f"N6-{len(notify)}", phone=phone)
        bench.run()
        assert bench.rows(order_id) == []
        assert bench.sink.to(EMAIL) == [] and bench.sms_to(phone, before) == []
        code, out = bench.cli("orders", "notify", str(order_id))
        assert code == 1 and "no notifications turned on" in out


def test_the_delivery_api_gives_a_contact_and_a_shipped_order_is_told_once(
        bench: Bench, smtp: tuple[Sink, int],
        sms_fake: tuple[AliyunSmsFakeState, str]) -> None:
    """A merchant's backend gives the buyer's address and number through the delivery API
    (``PUT …/contact``) after the order shipped without them: stored, audited masked, the
    buyer told once per channel — a second PUT tells no one again; a bad value is a 400
    naming the field and stores nothing; a wrong token stores nothing."""
    bench.configure(notify_yaml(smtp[1], sms_fake[1]) + f"delivery_api_token: {API_TOKEN}\n")
    seed_codes(bench.engine, bench.vault, "p1", 1)
    order_id = bench.order("N8", email=None, phone=None)
    bench.run()
    assert bench.rows(order_id) == []  # shipped, nobody to tell
    h = make_http(bench.engine, bench.vault, shop=bench.shop)
    url, auth = "/api/v1/shops/mem/orders/N8/contact", {"Authorization": f"Bearer {API_TOKEN}"}
    phone = _phone(8)
    with h.client:
        bad = h.client.put(url, headers=auth, json={"email": "not-an-address"})
        assert bad.status_code == 400 and "email" in bad.json()["detail"]
        assert h.client.put(url, json={"email": EMAIL}).status_code == 401
        assert h.client.put("/api/v1/shops/mem/orders/NOPE/contact", headers=auth,
                            json={"email": EMAIL}).status_code == 404
        with bench.engine.connect() as conn:
            assert conn.execute(select(orders.c.buyer_email, orders.c.buyer_phone)
                                .where(orders.c.id == order_id)).one() == (None, None)
        given = h.client.put(url, headers=auth, json={"email": EMAIL, "phone": phone})
        assert given.status_code == 200, given.text
        assert sorted(given.json()["notifying"]) == ["email", "sms"]
        before = len(bench.sms.sent)
        bench.run()
        again = h.client.put(url, headers=auth, json={"email": EMAIL, "phone": phone})
        assert again.status_code == 200 and again.json()["notifying"] == []
        bench.run(hours=30)
    assert len(bench.sink.to(EMAIL)) == 1 and len(bench.sms_to(phone, before)) == 1
    assert {(r["channel"], r["state"]) for r in bench.rows(order_id)} == {
        ("email", "sent"), ("sms", "sent")}
    with bench.engine.connect() as conn:
        details = [r.details for r in conn.execute(select(audit_log.c.details).where(
            audit_log.c.action == "contact_set"))]
    assert len(details) == 2 and EMAIL not in json.dumps(details) \
        and phone not in json.dumps(details)


def test_order_without_contact_is_not_notified(bench: Bench) -> None:
    """No address and a masked number: nothing is queued; a re-send says why."""
    seed_codes(bench.engine, bench.vault, "p1", 1)
    order_id = bench.order("N7", email=None, phone="138****8000")
    bench.run()
    assert bench.rows(order_id) == []
    code, out = bench.cli("orders", "notify", str(order_id), "--channel", "sms")
    assert code == 1 and "no usable sms contact" in out


def test_plaintext_codes_only_where_the_shop_opted_in(bench: Bench, smtp: tuple[Sink, int],
                                                      sms_fake: tuple[AliyunSmsFakeState, str],
                                                      ) -> None:
    """``{codes}`` without ``include_codes: true`` is a config error naming file, shop and
    field; with it, the SMS carries the code, the code is marked seen and the sending is
    audited with its id (never its text)."""
    port, url = smtp[1], sms_fake[1]
    bad = notify_yaml(port, url, sms_extra="    params: {order: '{order_id}', "
                      "link: '{pickup_url}', codes: '{codes}'}\n")
    with pytest.raises(ConfigError) as caught:
        bench.configure(bad)
    assert any(line.startswith("shops/mem.yaml: shop 'mem': notify.sms")
               and "include_codes: true" in line for line in caught.value.problems)
    bench.configure(bad.replace("SMS_100000001", "SMS_100000003")
                    + "    include_codes: true\n")
    phone = _phone(8)
    secrets = seed_codes(bench.engine, bench.vault, "p1", 1)
    order_id = bench.order("N8", phone=phone)
    before = len(bench.sms.sent)
    bench.run()
    sms = bench.sms_to(phone, before)
    assert len(sms) == 1 and secrets[0] in sms[0].text
    assert not any(s in m.get_content() for m in bench.sink.to(EMAIL) for s in secrets)
    with bench.engine.connect() as conn:
        assert conn.execute(select(deliveries.c.seen_at)
                            .where(deliveries.c.order_id == order_id)).scalar() is not None
        details = [json.loads(d) for d in conn.execute(
            select(audit_log.c.details).where(audit_log.c.action == "notify_codes")).scalars()]
    assert len(details) == 1 and list(details[0]) == ["code_ids"]


def test_config_show_masks_the_notifiers_secrets(bench: Bench, smtp: tuple[Sink, int]) -> None:
    """The SMTP password and the Aliyun key secret print as stars in ``robot config show``,
    and the raw config as written is not kept beside the validated one."""
    bench.configure(notify_yaml(smtp[1], "http://127.0.0.1:1").replace(
        "security: none,", "security: none, username: robot, password: pw-Secret-123,"))
    code, out = bench.cli("config", "show")
    assert code == 0, out
    assert "pw-Secret-123" not in out and TEST_KEY_SECRET not in out
    assert "smtp" in out and "aliyun_sms" in out
    assert bench.shop.notify.channels[Channel.EMAIL].spec.config == {}


def test_config_errors_name_file_shop_and_field(bench: Bench) -> None:
    """An unknown notifier, a notifier of the wrong channel and a plugin config missing a
    field are all reported in one pass, each naming file, shop and field."""
    text = notify_yaml(1, "http://127.0.0.1:1").replace("notifier: smtp", "notifier: smtpp")
    text = text.replace(" sign_name: 测试小店,", "")
    text += "  language: fr\n"
    with pytest.raises(ConfigError) as caught:
        bench.configure(text.replace("  language: zh\n", ""))
    lines = caught.value.problems
    assert any("notify.language" in line for line in lines)
    with pytest.raises(ConfigError) as caught:
        bench.configure(text.replace("  language: fr\n", ""))
    lines = caught.value.problems
    assert "shops/mem.yaml: shop 'mem': notify.email.notifier: unknown notifier 'smtpp' " \
           "(did you mean 'smtp'?); registered for email: smtp" in lines
    assert "shops/mem.yaml: shop 'mem': notify.sms.config.sign_name: Field required" in lines
    with pytest.raises(ConfigError) as caught:
        bench.configure(notify_yaml(1, "http://127.0.0.1:1").replace(
            "notifier: smtp", "notifier: aliyun_sms"))
    assert any("notify.email.notifier: 'aliyun_sms' sends sms, not email" in line
               for line in caught.value.problems)


def test_running_robot_tells_the_buyer_and_picks_up_a_reload(
        tmp_path: Path, smtp: tuple[Sink, int], sms_fake: tuple[AliyunSmsFakeState, str]) -> None:
    """The robot itself (``robot run``'s pieces): an order of a shop without ``notify:`` is
    shipped and nobody is told; after a reload that turns e-mail on, the next order's buyer
    gets one e-mail."""
    from robot.daemon import Robot
    from robot.db import make_engine
    from robot.migrate import upgrade
    from robot.vault import open_vault
    from tests.test_daemon import wait_for, write_config

    sink, port = smtp
    name = f"notify-run-{tmp_path.name}"
    config_path = write_config(tmp_path, name)
    shop_file = tmp_path / "shops" / "mem.yaml"
    plain_shop = shop_file.read_text()
    config = load_config(config_path)
    engine = make_engine(config.database)
    upgrade(engine)
    seed_codes(engine, open_vault(config.key_file), "p1", 4)
    platform = MemoryPlatform.named(name)
    mail_to = "runner@example.net"

    def shipped(number: str) -> bool:
        return platform.all_shipments().get(number) == 1

    async def scenario() -> int:
        robot = Robot(config, drain_timeout=5)
        await asyncio.to_thread(robot.prepare)
        task = asyncio.create_task(robot.run(install_signals=False))
        platform.put_order(dataclasses.replace(paid_order("R1", ("s1", 1)), buyer_email=mail_to))
        await wait_for(lambda: shipped("R1"))
        shop_file.write_text(plain_shop + notify_yaml(port, sms_fake[1]).replace(
            "  sms:\n", "  sms:\n    enabled: false\n"))
        assert await robot.reload() is not None
        platform.put_order(dataclasses.replace(paid_order("R2", ("s1", 1)), buyer_email=mail_to))
        await wait_for(lambda: len(sink.to(mail_to)) == 1)
        robot.stop()
        return await task

    assert asyncio.run(scenario()) == 0
    (mail,) = sink.to(mail_to)
    assert "R2" in mail["Subject"]
    with engine.connect() as conn:
        rows = conn.execute(select(notifications.c.channel, notifications.c.state)).all()
    assert [tuple(r) for r in rows] == [("email", "sent")]
    engine.dispose()


def test_a_notification_that_cannot_be_queued_never_blocks_the_shipment(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug while recording the event is logged; the shipment is recorded all the same."""
    import robot.notify

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(robot.notify, "on_shipped", broken)
    seed_codes(bench.engine, bench.vault, "p1", 1)
    order_id = bench.order("N9")
    with capture_logs() as logs:
        bench.run()
    assert bench.platform.all_shipments().get("N9") == 1
    code, out = bench.cli("orders", "show", str(order_id), "--json")
    assert code == 0 and json.loads(out)["state"] == "shipped"
    assert bench.rows(order_id) == []
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["notification_not_queued"]


def test_a_replacement_of_bad_codes_tells_the_buyer_again_once(bench: Bench) -> None:
    """`robot orders redeliver` replaces the buyer's bad code: the buyer is told again (one
    more e-mail and SMS, event ``replaced-1``, the pickup link, no code), once; an order
    never told anything is not told of its replacement either."""
    phone = _phone(7)
    secrets = seed_codes(bench.engine, bench.vault, "p1", 4)
    order_id = bench.order("R1", phone=phone)
    silent = bench.order("R2", email=None, phone=None)
    bench.run()
    before = len(bench.sms.sent)
    for oid in (order_id, silent):
        done = support.redeliver(bench.engine, oid, reason="buyer says used", actor="cs")
        assert len(done.replaced) == 1
    bench.run()
    bench.run(hours=30)
    assert {(r["channel"], r["event"], r["state"]) for r in bench.rows(order_id)} == {
        ("email", "delivered", "sent"), ("sms", "delivered", "sent"),
        ("email", "replaced-1", "sent"), ("sms", "replaced-1", "sent")}
    assert bench.rows(silent) == []
    mails = bench.sink.to(EMAIL)
    assert len(mails) == 2 and mails[0]["Message-ID"] != mails[1]["Message-ID"]
    assert f"{PUBLIC_URL}/p/" in mails[1].get_content()
    assert len(bench.sms_to(phone, before)) == 1
    assert not any(s in mails[1].get_content() for s in secrets)
