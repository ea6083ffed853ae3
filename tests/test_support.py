"""Customer service through the CLI, on every backend: finding orders and codes, re-sending
and renewing pickup links (with the memo rewritten), replacing bad cards, releasing ignored
orders and top-ups held for their account, and what ``cancel`` and ``reveal`` tell the
person who runs them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.console import Console
from sqlalchemy import Engine, func, insert, select, update

import robot.cli
from connectors.base import PlatformStatus
from connectors.memory import MemoryConnector, MemoryPlatform
from robot import audit, outbox, pipeline, support
from robot.cli.common import App
from robot.clock import NEVER, utcnow
from robot.errors import RobotError
from robot.http import links
from robot.http.handover import code_rows, decrypt
from robot.outbox import Dispatcher, Job, RetryPolicy
from robot.pools import reserve_code_ids
from robot.schema import (
    audit_log,
    batches,
    codes,
    deliveries,
    orders,
    pickup_links,
    replacements,
    stock,
    supplier_attempts,
)
from robot.schema import (
    outbox as outbox_t,
)
from robot.vault import AAD_CURRENT, Vault, join_pair, mask
from tests.factories import ensure_pool, paid_order, seed_codes

PUBLIC_URL = "https://robot.example.com"
SHOP_YAML = """name: mem
platform: memory
unmapped: {unmapped}
items:
{items}
platform_config: {{name: {platform}}}
pickup: {{link_ttl: 7d}}
"""


class Said(Result):
    """A result whose output ends with the error line ``robot`` would print."""

    def __init__(self, result: Result, output: str) -> None:
        self.__dict__.update(result.__dict__)
        self._said = output

    @property
    def output(self) -> str:
        return self._said


@dataclass
class Desk:
    """A robot with one memory shop ``mem`` (s1 → p1, s2 → p2), driven through the CLI."""

    engine: Engine
    vault: Vault
    tmp: Path
    db_url: str
    key_file: Path
    platform_name: str
    app: App

    @property
    def platform(self) -> MemoryPlatform:
        return MemoryPlatform.named(self.platform_name)

    def configure(self, *, unmapped: str = "hold",
                  items: tuple[tuple[str, str], ...] = (("s1", "p1"), ("s2", "p2"))) -> None:
        (self.tmp / "shops").mkdir(exist_ok=True)
        (self.tmp / "robot.yaml").write_text(
            f"database: {self.db_url}\nkey_file: {self.key_file}\nshops: shops/*.yaml\n"
            f"http: {{public_url: '{PUBLIC_URL}'}}\n")
        (self.tmp / "shops" / "mem.yaml").write_text(SHOP_YAML.format(
            unmapped=unmapped, platform=self.platform_name,
            items="\n".join(f"  - {{sku_id: {s}, pool: {p}}}" for s, p in items)))
        self.configure_app()

    def configure_app(self) -> None:
        """Read the files written under ``tmp`` again, on the test's engine."""
        self.app = App(config_path=self.tmp / "robot.yaml")
        self.app._engine = self.engine
        self.app.__dict__["console"] = Console(width=250, color_system=None)

    def cli(self, *args: str, input: str | None = None) -> Result:
        """Run a command; a robot error's one line (what ``robot`` prints) is in ``output``."""
        robot.cli._register()
        result = CliRunner().invoke(robot.cli.cli, list(args), obj=self.app, input=input)
        if isinstance(result.exception, RobotError):
            return Said(result, f"{result.output}error: {result.exception.message}\n")
        return result

    @property
    def shop(self) -> Any:
        return self.app.config.shop("mem")

    def order(self, number: str, *lines: tuple[str, int], buyer: str = "buyer-1",
              ship: bool = True) -> int:
        snap = paid_order(number, *lines, buyer=buyer)
        self.platform.put_order(snap)
        result = pipeline.intake(self.engine, self.shop, snap, allocate=True)
        assert result.order_id is not None
        if ship:
            self.run_write_back()
        return result.order_id

    def dispatcher(self) -> Dispatcher:
        hook = links.pickup_url_hook(self.engine, self.vault, {"mem": self.shop}, PUBLIC_URL)
        return Dispatcher(self.engine, self.vault,
                          {"mem": MemoryConnector(self.platform)}, {"mem": self.shop},
                          RetryPolicy(max_attempts=5, backoff_initial=0.001, backoff_max=0.001),
                          worker="test", pickup_url=hook)

    def run_write_back(self) -> None:
        disp = self.dispatcher()
        for _ in range(10):
            if not asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=2))):
                return

    def json(self, *args: str, input: str | None = None) -> Any:
        result = self.cli(*args, "--json", input=input)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def desk(engine: Engine, vault: Vault, tmp_path: Path, db_url: str, key_file: Path) -> Desk:
    name = f"desk-{tmp_path.name}"
    d = Desk(engine, vault, tmp_path, db_url, key_file, name, App(config_path=tmp_path / "x"))
    d.configure()
    return d


def plain(desk: Desk, order_id: int) -> list[str]:
    """What the pickup page would hand over (without marking anything seen)."""
    with desk.engine.connect() as conn:
        return [decrypt(desk.vault, r)[0] for r in code_rows(conn, order_id)]


def audited(engine: Engine, action: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [json.loads(d) for d in conn.execute(
            select(audit_log.c.details).where(audit_log.c.action == action)
            .order_by(audit_log.c.at)).scalars()]


# ------------------------------------------------------------------------------ orders find


def test_find_by_number_suffix_buyer_and_robot_id(desk: Desk) -> None:
    """An order is found by its number (exact, normalized, or a unique 6+ suffix), buyer id
    or robot id in any shop, with state, shop, masked codes and link status; a short suffix,
    a prefix or LIKE wildcards match nothing."""
    secrets = seed_codes(desk.engine, desk.vault, "p1", 5)
    a = desk.order("2024111122223333", ("s1", 1), buyer="buyer-alice")
    b = desk.order("2024111199993333", ("s1", 1), buyer="buyer-bob")
    found = desk.json("orders", "find", "2024111122223333")
    assert [m["id"] for m in found["matches"]] == [a]
    match = found["matches"][0]
    assert match["state"] == "shipped" and match["shop"] == "mem"
    assert match["matched"] == "order number" and match["paid_at"] is None
    assert match["codes"] == [mask(secrets[0])]
    assert match["link"]["status"] == "live"
    # Full-width digits, spaces and a zero-width space, as pasted from a chat window.
    pasted = " ２０２４１１１１２２２２３３３３\u200b "
    assert [m["id"] for m in desk.json("orders", "find", pasted)["matches"]] == [a]
    assert [m["id"] for m in desk.json("orders", "find", "122223333")["matches"]] == [a]
    assert desk.json("orders", "find", "buyer-bob")["matches"][0]["id"] == b
    assert desk.json("orders", "find", str(b))["matches"][0]["matched"] == "robot order id"
    assert desk.json("orders", "find", "23333")["matches"] == []  # under 6: no suffix search
    unique = desk.cli("orders", "find", "993333")  # only b ends so
    assert unique.exit_code == 0 and "2024111199993333" in unique.stdout
    assert "2024111122223333" not in unique.stdout
    for wildcard in ("%%%%%%", "______", "2024111122223333%"):  # LIKE characters are text
        assert desk.json("orders", "find", wildcard)["matches"] == [], wildcard
    prefix = desk.cli("orders", "find", "2024111")
    assert prefix.exit_code == 0 and "no order matches" in prefix.stdout  # not a suffix
    table = desk.cli("orders", "find", "buyer-alice")
    assert "2024111122223333" in table.stdout and mask(secrets[0]) in table.stdout
    assert not any(s in table.stdout for s in secrets)


def test_find_by_buyer_nick_from_the_platform_data(desk: Desk) -> None:
    """A buyer nick the platform gave (kept in the order's extra data) finds the order."""
    seed_codes(desk.engine, desk.vault, "p1", 1)
    snap = paid_order("N-1", ("s1", 1))
    snap = dataclasses.replace(snap, extra={"buyer_nick": "小明 \"x\"%"})
    oid = pipeline.intake(desk.engine, desk.shop, snap).order_id
    found = desk.json("orders", "find", " 小明 \"x\"% ")
    assert [(m["id"], m["matched"]) for m in found["matches"]] == [(oid, "buyer nick")]
    assert desk.json("orders", "find", "小明")["matches"] == []


def test_an_ambiguous_suffix_lists_every_candidate_and_exits_1(desk: Desk) -> None:
    """A suffix two order numbers end with names both and answers with exit status 1."""
    seed_codes(desk.engine, desk.vault, "p1", 3)
    a = desk.order("9000000123456", ("s1", 1))
    b = desk.order("8000000123456", ("s1", 1))
    result = desk.cli("orders", "find", "123456")
    assert result.exit_code == 1
    assert "2 orders end with 123456" in result.stdout
    assert "9000000123456" in result.stdout and "8000000123456" in result.stdout
    data = json.loads(desk.cli("orders", "find", "123456", "--json").stdout)
    assert data["ambiguous"] is True
    assert sorted(m["id"] for m in data["matches"]) == sorted([a, b])


# ------------------------------------------------------------------------------- codes find


def test_codes_find_uses_the_fingerprint_is_audited_and_refuses_argv(
        desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    """``codes find`` reads the code from stdin or a hidden prompt (never argv), finds the
    order through the fingerprint (decrypting only the hit, to mask it), and audits the
    look-up whether or not it found anything."""
    secrets = seed_codes(desk.engine, desk.vault, "p1", 30)
    oid = desk.order("F-100001", ("s1", 1))
    calls: list[int] = []
    real = Vault.decrypt

    def counting(self: Vault, *args: Any, **kwargs: Any) -> str:
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Vault, "decrypt", counting)
    hits = desk.json("codes", "find", "-", input=f"  {secrets[0]}\n")
    assert len(calls) == 1  # the hit, to mask it: the pool of 30 was not decrypted
    assert hits == [{"code_id": hits[0]["code_id"], "pool": "p1", "batch_id": 1,
                     "state": "delivered", "order_id": oid, "shop": "mem",
                     "platform_order_id": "F-100001", "order_state": "shipped", "line_no": 0,
                     "masked": mask(secrets[0])}]
    unsold = desk.json("codes", "find", input=secrets[5] + "\n")  # the hidden prompt
    assert unsold[0]["state"] == "available" and unsold[0]["order_id"] is None
    missing = desk.cli("codes", "find", "-", input="NOT-A-CODE\n")
    assert missing.exit_code == 0 and "no such code" in missing.stdout
    refused = desk.cli("codes", "find", secrets[0])
    assert refused.exit_code != 0 and "standard input" in refused.output
    assert secrets[0] not in refused.output
    entries = audited(desk.engine, "code_find")
    assert [e["order_ids"] for e in entries] == [[oid], [], []]
    assert not any(s in json.dumps(entries) for s in secrets)
    assert audit.verify(desk.engine).ok


def test_codes_find_matches_a_card_and_pin_pasted_on_one_line(desk: Desk) -> None:
    """A card-number/PIN code is found from "card PIN" as a buyer pastes it (space, tab or
    comma between), and from full-width characters."""
    pid = ensure_pool(desk.engine, "p1")
    secret = join_pair("CARD12345678", "PIN9876")
    _insert_code(desk, pid, secret)
    for pasted in ("CARD12345678 PIN9876", "CARD12345678\tPIN9876", "CARD12345678,PIN9876",
                   "ＣＡＲＤ12345678　PIN9876"):
        hits = desk.json("codes", "find", "-", input=pasted + "\n")
        assert [h["state"] for h in hits] == ["available"], pasted
    bad = desk.cli("codes", "find", "-", input="CARD\x1b[2J\n")
    assert bad.exit_code == 1 and "control" in bad.output


def _insert_code(desk: Desk, pid: int, secret: str) -> int:
    now = utcnow()
    fp = desk.vault.fingerprint(secret)
    (cid,) = reserve_code_ids(desk.engine, 1)
    kid, blob = desk.vault.encrypt(secret, code_id=cid, pool_id=pid, fingerprint=fp)
    with desk.engine.begin() as conn:
        bid = conn.execute(insert(batches).values(
            pool_id=pid, state="active", file_name="pairs.csv", file_sha256="1" * 64,
            code_count=1, imported_by="test", created_at=now, updated_at=now,
        )).inserted_primary_key[0]
        conn.execute(insert(codes).values(
            id=cid, pool_id=pid, batch_id=bid, source_line=1, fingerprint=fp, key_id=kid,
            ciphertext=blob, created_at=now, aad_version=AAD_CURRENT))
        conn.execute(insert(stock).values(code_id=cid, pool_id=pid, expires_at=NEVER))
    return cid


# ------------------------------------------------------------------------------ orders show


def test_show_has_titles_line_codes_link_state_and_write_back_history(desk: Desk) -> None:
    """``orders show`` gives each line's title and masked codes, the pickup link's views,
    and every write-back attempt with its result and error (a retry, then success)."""
    secrets = seed_codes(desk.engine, desk.vault, "p1", 3, prefix="AA")
    desk.platform.inject("ship", "retriable", times=1)
    oid = desk.order("SH-1", ("s1", 2))
    with desk.engine.connect() as conn:
        link_id = conn.execute(select(pickup_links.c.id)).scalar_one()
        assert conn.execute(select(orders.c.state)).scalar_one() == "shipped"
    token = links.token_for(links.link_key(desk.vault), oid, int(link_id))
    assert links.resolve(desk.engine, links.link_key(desk.vault), token) is not None
    data = desk.json("orders", "show", str(oid))
    assert data["lines"][0]["title"] == "item s1"
    assert data["lines"][0]["codes"] == [mask(secrets[0]), mask(secrets[1])]
    assert data["link"]["status"] == "live" and data["link"]["views"] == 0
    results = [(a["kind"], a["result"]) for a in data["attempts"]]
    assert results == [("ship", "retry"), ("ship", "done"), ("memo", "done")]
    assert data["attempts"][0]["error"]
    assert "." not in data["attempts"][0]["at"]  # no microseconds
    text = desk.cli("orders", "show", str(oid))
    assert text.exit_code == 0, text.output
    for expected in ("item s1", "write-back history", "retry", "pickup link: live", "views 0"):
        assert expected in text.stdout
    assert not any(s in text.stdout for s in secrets)
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", text.stdout)


# ------------------------------------------------------------------------------ orders link


def test_link_prints_the_memo_link_and_new_rewrites_the_memo(desk: Desk) -> None:
    """``orders link`` prints the link the memo carries (audited); ``--new`` revokes it,
    prints a working new one, and the write-back rewrites the platform memo with it."""
    seed_codes(desk.engine, desk.vault, "p1", 2)
    oid = desk.order("L-1", ("s1", 1))
    memo = desk.platform.memo("L-1") or ""
    current = desk.cli("orders", "link", str(oid))
    assert current.exit_code == 0, current.output
    url = current.stdout.strip()
    assert url.startswith(PUBLIC_URL + "/p/") and url in memo
    key = links.link_key(desk.vault)
    renewed = desk.json("orders", "link", str(oid), "--new")
    assert renewed["revoked"] == 1 and renewed["new"] and renewed["memo_rewrite_queued"]
    new_url = renewed["url"]
    assert new_url != url
    assert links.resolve(desk.engine, key, url.rsplit("/", 1)[1]) is None
    assert links.resolve(desk.engine, key, new_url.rsplit("/", 1)[1]) is not None
    with desk.engine.connect() as conn:
        job = conn.execute(select(outbox_t.c.state).where(outbox_t.c.kind == "memo")).scalar_one()
    assert job == "pending"  # through the outbox, not a platform call from the CLI
    assert url in (desk.platform.memo("L-1") or "")
    desk.run_write_back()
    assert new_url in (desk.platform.memo("L-1") or "")
    assert url not in (desk.platform.memo("L-1") or "")
    assert [e["new"] for e in audited(desk.engine, "pickup_link")] == [False, True]


def test_link_refuses_orders_with_nothing_to_pick_up(desk: Desk) -> None:
    """A cancelled order has no pickup page: ``orders link`` says so instead of a dead URL."""
    seed_codes(desk.engine, desk.vault, "p1", 1)
    oid = desk.order("L-2", ("s1", 1), ship=False)
    desk.cli("orders", "cancel", str(oid))
    result = desk.cli("orders", "link", str(oid))
    assert result.exit_code == 1 and "cancelled" in result.output


def test_a_memo_queued_again_while_a_worker_writes_it_runs_again(desk: Desk) -> None:
    """A worker that was writing the old memo when the memo was queued again does not mark
    the new one done: the job stays pending for the new text."""
    seed_codes(desk.engine, desk.vault, "p1", 1)
    oid = desk.order("L-3", ("s1", 1), ship=False)
    now = utcnow()
    with desk.engine.begin() as conn:
        outbox.queue_memo(conn, oid, now)
    disp = desk.dispatcher()
    jobs = [j for j in outbox.claim_jobs(desk.engine, "test", now=now, limit=10,
                                         lease=timedelta(seconds=30)) if j.kind == "memo"]
    assert len(jobs) == 1
    with desk.engine.begin() as conn:
        outbox.queue_memo(conn, oid, now)  # e.g. `orders link --new` meanwhile
    disp._done(Job(jobs[0].id, oid, "memo", 0))
    with desk.engine.connect() as conn:
        assert conn.execute(select(outbox_t.c.state).where(outbox_t.c.kind == "memo")
                            ).scalar_one() == "pending"


# ------------------------------------------------------------------------- orders redeliver


def test_redeliver_replaces_a_bad_code_from_the_same_pool_in_one_step(desk: Desk) -> None:
    """The named code becomes defective (out of stock for good, counted per pool and batch),
    a code from the same pool takes its place on the pickup page and in the rewritten memo,
    and it is audited."""
    first = seed_codes(desk.engine, desk.vault, "p1", 2, prefix="AA")
    oid = desk.order("R-1", ("s1", 2))
    spare = seed_codes(desk.engine, desk.vault, "p1", 2, prefix="BB")
    shown = desk.json("orders", "show", str(oid))
    bad = shown["codes"][1]["code_id"]
    result = desk.cli("orders", "redeliver", str(oid), "--code", str(bad),
                      "--reason", "buyer says already used")
    assert result.exit_code == 0, result.output
    assert plain(desk, oid) == [first[0], spare[0]]
    with desk.engine.connect() as conn:
        states = dict(conn.execute(select(deliveries.c.code_id, deliveries.c.state)).all())
        in_stock = set(conn.execute(select(stock.c.code_id)).scalars())
    assert states[bad] == "defective" and bad not in in_stock and len(in_stock) == 1
    assert list(states.values()).count("delivered") == 2
    desk.run_write_back()
    memo = desk.platform.memo("R-1") or ""
    assert "BB****ZZ" in memo and memo.count("****") == 2
    pools_json = desk.json("pools", "list")
    assert pools_json[0]["defective"] == 1 and pools_json[0]["available"] == 1
    defects = desk.json("codes", "defects")
    assert [(d["batch_id"], d["delivered"], d["defective"]) for d in defects] == [(1, 2, 1)]
    entry = audited(desk.engine, "redeliver")[0]
    assert entry["defective_code_ids"] == [bad] and len(entry["new_code_ids"]) == 1
    assert entry["reason"] == "buyer says already used"
    reveal = desk.json("reveal", str(oid))
    assert [r["card_no"] for r in reveal] == [first[0], spare[0]]
    assert audit.verify(desk.engine).ok


def test_redeliver_refuses_what_it_cannot_do(desk: Desk) -> None:
    """Not delivered, refunded, a code not of the order or already replaced, no reason:
    each refused with a clear message and nothing changed."""
    seed_codes(desk.engine, desk.vault, "p1", 6)
    shipped = desk.order("X-2", ("s1", 1))
    refunded = desk.order("X-3", ("s1", 1))
    desk.platform.set_status("X-3", PlatformStatus.CLOSED)
    pipeline.intake(desk.engine, desk.shop, desk.platform.order("X-3"))
    unshipped = desk.order("X-1", ("s1", 1), ship=False)

    def refused(*args: str) -> str:
        result = desk.cli("orders", "redeliver", *args)
        assert result.exit_code == 1, result.output
        return result.output

    assert "allocated, not delivered" in refused(str(unshipped), "--reason", "bad")
    assert "refunded" in refused(str(refunded), "--reason", "bad")
    assert "not one of order" in refused(str(shipped), "--code", "999", "--reason", "bad")
    assert "no codes on line 4" in refused(str(shipped), "--line", "4", "--reason", "bad")
    assert "--reason is required" in refused(str(shipped), "--reason", "  ")
    code = desk.json("orders", "show", str(shipped))["codes"][0]["code_id"]
    desk.cli("orders", "redeliver", str(shipped), "--code", str(code), "--reason", "bad")
    assert "replaced already" in refused(str(shipped), "--code", str(code), "--reason", "bad")
    assert len(audited(desk.engine, "redeliver")) == 1


def test_redeliver_short_of_stock_waits_visibly_and_is_served_later(desk: Desk) -> None:
    """With the pool empty the request is kept (exit 1, ``status`` counts it, ``show`` lists
    it); once codes arrive the sweep serves it and the memo is rewritten; a refund cancels a
    request still waiting."""
    seed_codes(desk.engine, desk.vault, "p1", 2)
    oid = desk.order("W-1", ("s1", 1))
    other = desk.order("W-2", ("s1", 1))
    result = desk.cli("orders", "redeliver", str(oid), "--reason", "does not work")
    assert result.exit_code == 1
    assert "stock is short" in result.output and "pool p1 needs 1" in result.output
    assert plain(desk, oid) == []
    status = desk.json("status")
    assert status["attention"]["replacements_waiting"] == 1
    text = desk.cli("status")
    assert "1 replacement(s) of bad codes wait for stock" in text.stdout
    assert "nothing needs attention" not in text.stdout
    assert desk.json("orders", "show", str(oid))["replacements"][0]["state"] == "waiting"
    assert support.fulfil_replacements(desk.engine) == 0  # still no stock
    desk.cli("orders", "redeliver", str(other), "--reason", "does not work either")
    fresh = seed_codes(desk.engine, desk.vault, "p1", 1, prefix="NEW")
    assert support.fulfil_replacements(desk.engine) == 1
    assert plain(desk, oid) == fresh
    with desk.engine.connect() as conn:
        assert conn.execute(select(outbox_t.c.state).where(
            outbox_t.c.order_id == oid, outbox_t.c.kind == "memo")).scalar_one() == "pending"
    desk.platform.set_status("W-2", PlatformStatus.CLOSED)
    pipeline.intake(desk.engine, desk.shop, desk.platform.order("W-2"))
    with desk.engine.connect() as conn:
        states = dict(conn.execute(select(replacements.c.order_id, replacements.c.state)).all())
        defective = conn.execute(select(func.count()).select_from(deliveries).where(
            deliveries.c.order_id == other, deliveries.c.state == "defective")).scalar_one()
    assert states == {oid: "done", other: "cancelled"}
    assert defective == 1  # the refund flags codes for review but keeps defective ones
    assert desk.json("status")["attention"]["replacements_waiting"] == 0


# ------------------------------------------------------------------- release ignored orders


def test_an_ignored_order_is_released_once_its_mapping_is_fixed(desk: Desk) -> None:
    """An order ignored for an unmapped SKU shows under "needs attention"; release refuses
    while nothing maps, then maps it from the fixed shop file and allocates it; a
    blacklisted buyer's released order is held."""
    desk.configure(unmapped="ignore")
    seed_codes(desk.engine, desk.vault, "p9", 2)
    oid = desk.order("I-1", ("s9", 1), ship=False)
    risky = desk.order("I-2", ("s9", 1), buyer="bad-buyer", ship=False)
    with desk.engine.connect() as conn:
        assert set(conn.execute(select(orders.c.state)).scalars()) == {"ignored"}
    assert desk.json("status")["attention"]["ignored_unmapped_7d"] == 2
    still = desk.cli("orders", "release", str(oid))
    assert still.exit_code == 1 and "still no line maps" in still.output
    desk.configure(unmapped="ignore", items=(("s1", "p1"), ("s9", "p9")))
    released = desk.cli("orders", "release", str(oid))
    assert released.exit_code == 0, released.output
    assert "now received" in released.stdout
    assert pipeline.allocate(desk.engine, oid) is not None
    added = desk.cli("blacklist", "add", "--buyer", "bad-buyer")
    assert added.exit_code == 0, added.output
    held = desk.json("orders", "release", str(risky))
    assert held["state"] == "held"
    with desk.engine.connect() as conn:
        assert conn.execute(select(orders.c.state).where(orders.c.id == oid)).scalar_one() \
            == "allocated"
    assert desk.json("status")["attention"]["ignored_unmapped_7d"] == 0
    assert [e["from"] for e in audited(desk.engine, "release")] == ["ignored", "ignored"]


def test_old_ignored_orders_are_not_counted(desk: Desk) -> None:
    """Only ignored paid orders of the last 7 days count under "needs attention"."""
    desk.configure(unmapped="ignore")
    oid = desk.order("I-9", ("s9", 1), ship=False)
    with desk.engine.begin() as conn:
        conn.execute(update(orders).where(orders.c.id == oid).values(
            paid_at=utcnow() - timedelta(days=8), received_at=utcnow() - timedelta(days=8)))
    assert desk.json("status")["attention"]["ignored_unmapped_7d"] == 0


TOPUP_ITEM = ('  - {sku_id: t50, account: {source: buyer_message, format: mobile}, '
              'suppliers: [{supplier: memsup, product: topup-mobile-50, max_cost: "49.90"}]}')


def test_a_topup_held_for_its_account_is_released_with_one_through_the_cli(desk: Desk) -> None:
    """``robot orders release ID --account``: a top-up whose buyer wrote no number is held
    with the reason; release without an account, or with one of the wrong form, is refused
    and changes nothing; a valid number releases it, is audited masked, and is the account
    the supplier purchase credits (shown masked by ``orders show``)."""
    (desk.tmp / "shops").mkdir(exist_ok=True)
    (desk.tmp / "robot.yaml").write_text(
        f"database: {desk.db_url}\nkey_file: {desk.key_file}\nshops: shops/*.yaml\n"
        f"http: {{public_url: '{PUBLIC_URL}'}}\n"
        f"suppliers:\n  memsup:\n    plugin: memory\n    config: {{name: {desk.platform_name}}}\n")
    (desk.tmp / "shops" / "mem.yaml").write_text(SHOP_YAML.format(
        unmapped="hold", platform=desk.platform_name, items=TOPUP_ITEM))
    desk.configure_app()
    snap = dataclasses.replace(paid_order("A-1", ("t50", 1)), buyer_message="尽快发货，谢谢")
    oid = pipeline.intake(desk.engine, desk.shop, snap, allocate=True).order_id
    assert oid is not None
    shown = desk.json("orders", "show", str(oid))
    assert shown["state"] == "held"
    assert shown["reason"] == ("line 0: top-up account missing: the buyer's message holds no "
                               "mobile number (11 digits)")
    bare = desk.cli("orders", "release", str(oid))
    assert bare.exit_code == 1 and f"robot orders release {oid} --account" in bare.output
    wrong = desk.cli("orders", "release", str(oid), "--account", "12345")
    assert wrong.exit_code == 1 and "--account refused" in wrong.output
    assert desk.json("orders", "show", str(oid))["state"] == "held"
    released = desk.json("orders", "release", str(oid), "--account", "13900001111")
    assert released == {"order_id": oid, "state": "received"}
    [given] = audited(desk.engine, "set_account")
    assert given["account"] == "139****1111"
    with desk.engine.connect() as conn:
        details = conn.execute(select(audit_log.c.details)).scalars().all()
    assert not any("13900001111" in d for d in details)
    assert pipeline.allocate(desk.engine, oid) is not None
    shown = desk.json("orders", "show", str(oid))
    assert shown["state"] == "sourcing"
    [attempt] = shown["supplier_attempts"]
    assert (attempt["supplier"], attempt["account"]) == ("memsup", "139****1111")
    with desk.engine.connect() as conn:
        assert conn.execute(select(supplier_attempts.c.account).where(
            supplier_attempts.c.order_id == oid)).scalar_one() == "13900001111"


# ------------------------------------------------------------------------- cancel, reveal


def test_cancel_says_the_platform_order_stays_paid(desk: Desk) -> None:
    """Cancelling tells the person plainly to refund the buyer on the platform."""
    seed_codes(desk.engine, desk.vault, "p1", 1)
    oid = desk.order("C-1", ("s1", 1), ship=False)
    result = desk.cli("orders", "cancel", str(oid))
    assert result.exit_code == 0, result.output
    assert "still PAID on the platform" in result.stdout and "refund" in result.stdout


def test_reveal_labels_card_number_and_pin_and_escapes_control_characters(desk: Desk) -> None:
    """``reveal`` prints card number and PIN as labelled fields (JSON too), with control
    characters in a stored code escaped, never sent to the terminal."""
    pid = ensure_pool(desk.engine, "p1")
    _insert_code(desk, pid, join_pair("CARD-0001", "PIN\x1b[2J42"))
    oid = desk.order("V-1", ("s1", 1))
    text = desk.cli("reveal", str(oid))
    assert text.exit_code == 0, text.output
    assert "card number: CARD-0001" in text.stdout
    assert "PIN:         PIN\\x1b[2J42" in text.stdout
    assert "\x1b" not in text.stdout and "\x1f" not in text.stdout
    data = desk.json("reveal", str(oid))
    assert data == [{"code_id": data[0]["code_id"], "line_no": 0, "pool": "p1",
                     "card_no": "CARD-0001", "pin": "PIN\\x1b[2J42"}]


# ------------------------------------------------------------------------- example shops


def test_example_card_shops_hold_unmapped_skus() -> None:
    """Every example shop file (all card shops) holds orders with unmapped SKUs."""
    for path in sorted(Path(__file__).parents[1].glob("shops/example-*.yaml")):
        assert re.search(r"^unmapped: hold\b", path.read_text(), re.M), path.name
