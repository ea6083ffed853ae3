"""Invariant 4: no plaintext code leaves the vault by accident.

A merchant's whole day runs through the CLI and the daemon's pieces with known codes: import
(including a rejected file), orders with faults, retries, a failure and a replay, cancel,
refund, status and listings. Then every captured log line, every command's output (but
``robot reveal``'s, which is the one place codes are shown), every exception message and
every column of every table except ``codes.ciphertext`` is searched for each code. The
buyers' notifications (e-mail to a local SMTP sink, SMS through the Aliyun fake) are sent
for that day's orders and searched too: a shop that did not opt in sends the link only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import Engine, LargeBinary, select

import robot.cli
from connectors.base import PlatformStatus, RefundState
from connectors.douyin.harness import make_harness
from connectors.memory import MemoryConnector, MemoryPlatform
from robot import pipeline
from robot.clock import utcnow
from robot.config import load_config
from robot.db import make_engine
from robot.http import links
from robot.log import configure_logging
from robot.migrate import upgrade
from robot.notify import Notifications, build_notifiers
from robot.outbox import Dispatcher, RetryPolicy
from robot.schema import metadata
from robot.vault import PAIR_SEP, Vault, open_vault
from tests.douyin.helpers import (
    deliver,
    shop_connector,
    stock_pools,
    take_in_by_push,
    two_line_order,
)
from tests.factories import paid_order, seed_codes
from tests.goofish.conftest import make_xianyu
from tests.smtpsink import SmtpSink
from tests.test_daemon import write_config
from tests.test_notify import notify_yaml, served_sms_fake

robot.cli._register()


def cli(config: Path, *args: str) -> str:
    result = CliRunner().invoke(robot.cli.cli, ["-c", str(config), *args], catch_exceptions=True)
    return result.output + (str(result.exception) if result.exception else "")


def scan_database(engine: Engine, secrets: list[str]) -> list[str]:
    """Every (table.column) whose values contain one of the secrets, codes.ciphertext excepted."""
    needles = [s.encode() for s in secrets]
    found = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for column, value in row._mapping.items():
                    if table.name == "codes" and column == "ciphertext":
                        continue
                    if value is None:
                        continue
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    if any(n in raw for n in needles):
                        found.append(f"{table.name}.{column}")
            assert all(not isinstance(c.type, LargeBinary) or c.name in ("ciphertext", "fingerprint")
                       for c in table.columns)
    return found


def test_no_plaintext_code_in_logs_outputs_errors_or_database(tmp_path: Path) -> None:
    """Known codes never appear outside codes.ciphertext and robot reveal's own output, nor
    in the buyers' e-mails and SMS."""
    with SmtpSink() as sink, served_sms_fake() as sms_fake:
        _merchants_day(tmp_path, sink, sms_fake)


def _merchants_day(tmp_path: Path, sink: Any, sms_fake: Any) -> None:
    sms, sms_url = sms_fake
    sms_before = len(sms.sent)
    name = f"leak-{uuid.uuid4().hex}"
    config_path = write_config(tmp_path, name)
    with (tmp_path / "shops" / "mem.yaml").open("a") as shop_file:
        shop_file.write(notify_yaml(sink.port, sms_url))
    logs = io.StringIO()
    configure_logging("debug", "json", stream=logs)
    tag = uuid.uuid4().hex[:8].upper()
    singles = [f"LEAK{tag}{i:04d}SECRET" for i in range(12)]
    pairs = [(f"CARD{tag}{i:03d}", f"PASS{tag}{i:03d}X") for i in range(3)]
    secrets = singles + [c for c, _ in pairs] + [p for _, p in pairs]

    outputs = []
    outputs.append(cli(config_path, "pools", "create", "p1"))
    txt = tmp_path / "codes.txt"
    txt.write_text("\n".join(singles) + "\n")
    outputs.append(cli(config_path, "pools", "import", "p1", str(txt)))
    csv = tmp_path / "cards.csv"
    csv.write_text("card_no,password\n" + "\n".join(f"{c},{p}" for c, p in pairs) + "\n")
    outputs.append(cli(config_path, "pools", "import", "p1", str(csv)))
    # a rejected import: duplicates of codes already in the pool, named by line number only
    bad = tmp_path / "again.txt"
    bad.write_text(f"{singles[0]}\n{singles[1]}\n\n")
    rejected = cli(config_path, "pools", "import", "p1", str(bad))
    assert "line 1" in rejected
    outputs.append(rejected)

    config = load_config(config_path)
    engine = make_engine(config.database)
    upgrade(engine)
    vault = open_vault(config.key_file)
    shop = config.shop("mem")
    platform = MemoryPlatform.named(name)
    for i in range(6):
        order = dataclasses.replace(paid_order(f"L{i}", ("s1", 2 if i % 2 else 1)),
                                    buyer_email=f"leak{i}@example.net",
                                    buyer_phone=f"1370000{i:04d}")
        platform.put_order(order)
        pipeline.intake(engine, shop, order)
    while pipeline.allocate_next(engine):
        pass
    pipeline.intake(engine, shop, paid_order("L0", ("s1", 1), status=PlatformStatus.CLOSED))
    platform.inject("ship", "unavailable", times=2)
    notices = Notifications(engine, vault, {"mem": shop}, build_notifiers({"mem": shop}),
                            call_timeout=5, lease=timedelta(seconds=15))
    disp = Dispatcher(engine, vault, {"mem": MemoryConnector(platform)}, {"mem": shop},
                      RetryPolicy(max_attempts=1, backoff_initial=0.001, backoff_max=0.001),
                      worker="leak", notify=notices,
                      pickup_url=links.pickup_url_hook(engine, vault, {"mem": shop},
                                                       "https://robot.example.com"))
    for _ in range(10):
        asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=1)))
    failed = cli(config_path, "orders", "list", "--state", "failed", "--json")
    outputs.append(failed)
    assert json.loads(failed), "one order should have failed after the injected errors"
    outputs.append(cli(config_path, "orders", "replay", "--all-failed"))
    for _ in range(10):
        asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=2)))
    pipeline.intake(engine, shop, paid_order("L3", ("s1", 2), status=PlatformStatus.SHIPPED,
                                             refund=RefundState.REFUNDED))
    for args in (["status"], ["status", "--json"], ["orders", "list"], ["orders", "show", "2"],
                 ["orders", "show", "2", "--json"], ["pools", "list"], ["codes", "list", "p1"],
                 ["codes", "list", "p1", "--json"], ["audit", "list", "--json"],
                 ["audit", "verify"], ["config", "show"], ["orders", "cancel", "1"],
                 ["orders", "show", "999"], ["orders", "notify", "2"]):
        outputs.append(cli(config_path, *args))
    for _ in range(5):
        asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=3)))

    revealed = cli(config_path, "reveal", "2")
    assert any(s in revealed for s in secrets), "reveal must show the codes (and only it may)"
    memos = [platform.memo(f"L{i}") or "" for i in range(6)]
    assert any("****" in m for m in memos)

    # Decoded (a UTF-8 body goes base64 or quoted-printable) and as sent.
    mails = [f"{m['Subject']}\n{m.get_content()}\n{m.as_string()}" for m in sink.messages]
    texts = [f"{m.text} {m.params}" for m in sms.sent[sms_before:]]
    assert len(mails) >= 4 and len(texts) >= 4, "the shipped orders' buyers must be told"
    assert all("https://robot.example.com/p/" in t for t in mails + texts)
    haystacks = {"logs": logs.getvalue(), "outputs": "\n".join(outputs), "memos": "\n".join(memos),
                 "notifications": "\n".join(mails + texts)}
    for where, text in haystacks.items():
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"plaintext code found in {where}"
    assert PAIR_SEP not in haystacks["outputs"]
    assert scan_database(engine, secrets) == []
    engine.dispose()


def test_codes_handed_to_douyin_reach_only_the_buyer_view(engine: Engine, vault: Vault,
                                                         tmp_path: Path) -> None:
    """A channel that shows codes to the buyer (Douyin's coupons.syncV2) gets them in
    plaintext, and only there: the buyer's view on the fake holds them, while every log
    line (debug included), every database column (the audit of the hand-over too) and the
    platform's record of the call hold none."""
    logs = io.StringIO()
    configure_logging("debug", "json", stream=logs)
    with make_harness() as harness:
        codes, pairs = stock_pools(engine, vault, tmp_path)
        secrets = codes + [c for c, _ in pairs] + [p for _, p in pairs]
        oid = two_line_order(harness)
        connector = shop_connector(engine, vault, harness)

        async def scenario() -> None:
            await take_in_by_push(engine, connector, harness, oid)
            await deliver(engine, vault, connector)
            await connector.aclose()

        asyncio.run(scenario())
        seen = json.dumps(harness.fake.buyer_view(oid))
        record = json.dumps(harness.fake.writebacks.to_json())
    assert sum(s in seen for s in secrets) == 4, "the buyer must see 2 codes and 1 pair"
    assert "hand_over_started" in logs.getvalue()
    assert not [s for s in secrets if s in logs.getvalue() or s in record]
    assert scan_database(engine, secrets) == []


def test_codes_handed_to_goofish_reach_only_its_answer_and_callback(engine: Engine,
                                                                    vault: Vault) -> None:
    """闲管家 buys the codes to message them to the buyer: they are in the purchase's answer
    (served at once) and in the order callback (served later through the outbox), and in no
    log line (debug included) and no database column (the audits of both hand-overs)."""
    logs = io.StringIO()
    configure_logging("debug", "json", stream=logs)
    x = make_xianyu(engine, vault)
    served_now = seed_codes(engine, vault, "p1", 2)

    async def scenario() -> tuple[dict[str, Any], str]:
        answer = await x.buyer.purchase("G1001", 2, max_amount=1980)
        later = await x.buyer.purchase("G1001")
        return answer, later["data"]["order_no"]

    answer, later_no = asyncio.run(scenario())
    served_later = seed_codes(engine, vault, "p1", 1)
    pipeline.wake_waiting(engine)
    assert pipeline.allocate_next(engine) is not None
    for _ in range(2):
        asyncio.run(x.dispatcher().run_once(now=utcnow() + timedelta(hours=1)))
    asyncio.run(x.connector.aclose())
    secrets = served_now + served_later
    assert sorted(c["card_pwd"] for c in answer["data"]["card_items"]) == sorted(served_now)
    (callback,) = x.notify.received(later_no)
    assert callback["card_items"] == [{"card_pwd": served_later[0]}]
    assert logs.getvalue().count("hand_over_started") == 1
    assert not [s for s in secrets if s in logs.getvalue()]
    assert scan_database(engine, secrets) == []
