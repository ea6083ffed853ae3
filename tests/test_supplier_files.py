"""Importing the files suppliers send (Excel, GBK CSV, Chinese headers, blank lines) and
exporting codes back for reconciliation, through the database on every backend and through
`robot pools import` / `robot codes export`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import stat
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from openpyxl import Workbook
from rich.console import Console
from sqlalchemy import Engine, select

from robot import pipeline
from robot import pools as P
from robot.cli import cmd_pools
from robot.clock import DEFAULT_ZONE, utcnow
from robot.display import format_time
from robot.errors import ImportRejected
from robot.outbox import Dispatcher, RetryPolicy
from robot.schema import audit_log, codes, deliveries, orders
from robot.vault import Vault, join_pair
from tests.factories import Shop, paid_order, sku

ACTOR = "test:supplier"
POOL = "game-card"


def code(i: int) -> str:
    """A synthetic code: nothing like a real card."""
    return f"TEST-S-{i:06d}-ZXWV"


@pytest.fixture
def pool(engine: Engine) -> str:
    P.create_pool(engine, POOL, actor=ACTOR)
    return POOL


def stored(engine: Engine, vault: Vault, batch_id: int | None) -> list[tuple[int, str, Any, Any]]:
    """(line, plaintext, expires_at, cost_cents) of a batch's codes, in file order."""
    with engine.connect() as conn:
        rows = conn.execute(select(codes).where(codes.c.batch_id == batch_id)
                            .order_by(codes.c.source_line)).all()
    return [(r.source_line, vault.decrypt(r.key_id, bytes(r.ciphertext), code_id=r.id,
                                          pool_id=r.pool_id, fingerprint=bytes(r.fingerprint),
                                          aad_version=r.aad_version),
             r.expires_at, r.cost_cents) for r in rows]


def supplier_workbook(path: Path, rows: list[list[Any]]) -> Path:
    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.title = "卡密"
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row, start=1):
            if value is not None:
                ws.cell(row=r, column=c, value=value)
                if isinstance(value, datetime):
                    ws.cell(row=r, column=c).number_format = "yyyy-mm-dd"
    book.save(path)
    return path


# ---------------------------------------------------------------------------- imports


def test_xlsx_import_stores_exact_codes_dates_and_costs(engine: Engine, vault: Vault, pool: str,
                                                        tmp_path: Path) -> None:
    """A supplier's workbook (Chinese headers, numeric card numbers, date cells, float costs,
    blank rows) imports exactly what Excel shows, and the blank rows are counted."""
    path = supplier_workbook(tmp_path / "供货单.xlsx", [
        ["卡号", "密码", "有效期", "进价"],
        [123456789012, "PW-01", datetime(2030, 3, 1), 29.9],
        [],
        [123456789013, "PW-02", datetime(2030, 3, 1), 29.9],
        ["", "  "],
    ])
    report = P.import_codes(engine, vault, POOL, path, actor=ACTOR)
    assert (report.imported, report.blank, report.lines) == (2, 2, 4)
    assert stored(engine, vault, report.batch_id) == [
        (2, join_pair("123456789012", "PW-01"), datetime(2030, 3, 1, 15, 59, 59), 2990),
        (4, join_pair("123456789013", "PW-02"), datetime(2030, 3, 1, 15, 59, 59), 2990),
    ]
    assert report.as_dict()["summary"] == {"accepted": 2, "skipped_blank": 2, "rejected": 0,
                                           "rejected_by_reason": {}}


def test_gbk_csv_with_chinese_headers_imports(engine: Engine, vault: Vault, pool: str,
                                              tmp_path: Path) -> None:
    """A GBK export from Chinese Windows (卡密/过期时间/成本) imports its Chinese codes exactly."""
    text = "卡密,过期时间,成本\r\n充值卡-0001,2030-03-01,5\r\n\r\n充值卡-0002,,5.5\r\n"
    path = tmp_path / "codes.csv"
    path.write_bytes(text.encode("gbk"))
    report = P.import_codes(engine, vault, POOL, path, actor=ACTOR)
    assert [(line, secret, cost) for line, secret, _, cost in
            stored(engine, vault, report.batch_id)] == [(2, "充值卡-0001", 500),
                                                       (4, "充值卡-0002", 550)]
    assert report.blank == 1


def test_blank_lines_never_refuse_a_file(engine: Engine, vault: Vault, pool: str,
                                         tmp_path: Path) -> None:
    """Blank lines at the start, middle and end are skipped and counted; the codes import."""
    path = tmp_path / "a.txt"
    path.write_text(f"\n\n{code(1)}\n   \n{code(2)}\n\n", encoding="utf-8")
    report = P.import_codes(engine, vault, POOL, path, actor=ACTOR)
    assert (report.imported, report.blank) == (2, 4)
    assert [(line, secret) for line, secret, _, _ in stored(engine, vault, report.batch_id)] == [
        (3, code(1)), (5, code(2))]


def test_refusal_carries_a_summary_by_reason(engine: Engine, vault: Vault, pool: str,
                                             tmp_path: Path) -> None:
    """A refused file reports every bad line and a summary: accepted, blank, rejected by
    reason; bad values shown as written, codes masked."""
    path = tmp_path / "a.csv"
    path.write_text("code,有效期,cost\n"
                    f"{code(1)},2030-01-01,1\n"
                    "\n"
                    f"{code(2)},2030-02-30,1\n"
                    f"{code(3)},2030-01-01,abc\n"
                    f"{code(1)},2030-01-01,1\n"
                    f"{code(4)},{code(99)},1\n"
                    f"{code(5)},2030-01-01,1\n", encoding="utf-8")
    with pytest.raises(ImportRejected) as info:
        P.import_codes(engine, vault, POOL, path, actor=ACTOR, chunk=2)
    assert info.value.rejects == [
        (4, "bad date: 2030-02-30"), (5, "bad cost: abc"),
        (6, "duplicate in file (same as line 2)"), (7, "bad date: TE****WV"),
    ]
    assert info.value.summary == {"accepted": 2, "skipped_blank": 1, "rejected": 4,
                                  "rejected_by_reason": {"bad date": 2, "bad cost": 1,
                                                         "duplicate in file": 1}}
    assert code(99) not in repr(info.value.rejects)


# ---------------------------------------------------------------------------- CLI


@dataclass
class FakeApp:
    """What the pool commands use of robot.cli.common.App."""

    engine: Engine
    vault: Vault
    console: Console
    zone: tzinfo = DEFAULT_ZONE

    def time(self, value: datetime | None, *, empty: str = "") -> str:
        return format_time(value, zone=self.zone, empty=empty)


def run(engine: Engine, vault: Vault, *args: str, tty: bool = False, stdin: str | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> Any:
    group = {"pools": cmd_pools.pools, "codes": cmd_pools.codes}[args[0]]
    console = Console(width=200, color_system=None, file=io.StringIO(), force_terminal=tty)
    if monkeypatch is not None:
        monkeypatch.setattr(cmd_pools, "is_terminal", lambda: tty)
    app = FakeApp(engine, vault, console)
    result = CliRunner().invoke(group, list(args[1:]), obj=app, input=stdin)
    result.console_text = console.file.getvalue()  # type: ignore[attr-defined]
    return result


def test_cli_xlsx_sheet_and_summary(engine: Engine, vault: Vault, pool: str,
                                    tmp_path: Path) -> None:
    """`pools import POOL FILE.xlsx --sheet NAME` imports that sheet and prints the summary;
    --json carries the same summary."""
    path = supplier_workbook(tmp_path / "a.xlsx", [["卡密"], [code(1)], [], [code(2)]])
    result = run(engine, vault, "pools", "import", POOL, str(path), "--sheet", "卡密",
                 "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"] == {
        "accepted": 2, "skipped_blank": 1, "rejected": 0, "rejected_by_reason": {}}
    result = run(engine, vault, "pools", "import", POOL, str(path))
    assert result.exit_code == 0, result.output
    assert "summary: 2 accepted, 1 blank line(s) skipped, 0 rejected" in result.console_text
    missing = run(engine, vault, "pools", "import", POOL, str(path), "--sheet", "Sheet9",
                  "--allow-same-file")
    assert missing.exit_code == 1
    assert "line 1: no sheet named 'Sheet9' (sheets: 卡密)" in missing.stderr


def test_cli_encoding_option(engine: Engine, vault: Vault, pool: str, tmp_path: Path) -> None:
    """--encoding gbk reads a GBK file whose detection would be ambiguous (one UTF-8-looking
    line); a bad --encoding is a usage error."""
    path = tmp_path / "a.txt"
    # GBK "学" (d1 a7) is also valid UTF-8: this file alone looks mixed, so it is read as
    # UTF-8 and the GBK line refused, unless the merchant says it is GBK.
    path.write_bytes("学\n充值卡0002\n".encode("gbk"))
    refused = run(engine, vault, "pools", "import", POOL, str(path))
    assert refused.exit_code == 1
    assert "--encoding gbk" in refused.stderr
    result = run(engine, vault, "pools", "import", POOL, str(path), "--encoding", "gbk", "--json")
    assert result.exit_code == 0, result.output
    batch = json.loads(result.stdout)["batch_id"]
    assert [s for _, s, _, _ in stored(engine, vault, batch)] == ["学", "充值卡0002"]
    bad = run(engine, vault, "pools", "import", POOL, str(path), "--encoding", "latin-1")
    assert bad.exit_code == 2


def test_cli_refusal_prints_lines_then_summary(engine: Engine, vault: Vault, pool: str,
                                               tmp_path: Path) -> None:
    """A refused import lists each bad line (codes masked), then the summary, then the error;
    --json has the same rejects and summary."""
    path = tmp_path / "a.csv"
    path.write_text(f"code,cost\n{code(1)},1\n\n{code(2)},9.999\n", encoding="utf-8")
    result = run(engine, vault, "pools", "import", POOL, str(path))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "line 4: bad cost: 9.999",
        "summary: 1 accepted, 1 blank line(s) skipped, 1 rejected (bad cost 1)",
    ]
    assert isinstance(result.exception, ImportRejected)  # run_guarded prints it as "error: …"
    data = json.loads(run(engine, vault, "pools", "import", POOL, str(path), "--json").stdout)
    assert data["rejected"] == [{"line": 4, "reason": "bad cost: 9.999"}]
    assert data["summary"]["rejected_by_reason"] == {"bad cost": 1}


def test_progress_bar_only_for_big_files_on_a_terminal(engine: Engine, vault: Vault, pool: str,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal sees a progress bar for a file of more than a few thousand lines; a small
    file, a pipe and --json never do."""
    monkeypatch.setattr(cmd_pools, "PROGRESS_FROM_LINES", 50)
    small = tmp_path / "small.txt"
    small.write_text("".join(f"{code(i)}\n" for i in range(10)), encoding="utf-8")
    big = tmp_path / "big.txt"
    big.write_text("".join(f"{code(i)}\n" for i in range(100, 200)), encoding="utf-8")
    quiet = run(engine, vault, "pools", "import", POOL, str(small), tty=True,
                monkeypatch=monkeypatch)
    assert quiet.exit_code == 0, quiet.output
    assert "importing" not in quiet.console_text
    as_json = run(engine, vault, "pools", "import", POOL, str(big), "--dry-run", "--json",
                  tty=True, monkeypatch=monkeypatch)
    assert as_json.exit_code == 0, as_json.output
    assert "importing" not in as_json.console_text
    json.loads(as_json.stdout)
    loud = run(engine, vault, "pools", "import", POOL, str(big), tty=True,
               monkeypatch=monkeypatch)
    assert loud.exit_code == 0, loud.output
    assert "importing" in loud.console_text


# ---------------------------------------------------------------------------- export


SHOP = Shop(name="shop-a", items=(sku("s1", (POOL, 1)),))


def deliver(engine: Engine, vault: Vault, tmp_path: Path) -> dict[str, Any]:
    """Import 4 codes (supplier acme, 29.90 each); ship one order of 2; void none."""
    from connectors.memory import MemoryConnector, MemoryPlatform

    path = tmp_path / "stock.csv"
    path.write_text("code,expires_at\n" + "".join(f"{code(i)},2030-03-01\n" for i in range(4)),
                    encoding="utf-8")
    P.import_codes(engine, vault, POOL, path, actor=ACTOR, supplier="acme", cost_cents=2990)
    platform = MemoryPlatform()
    order = paid_order("TB-1001", ("s1", 2))
    platform.put_order(order)
    pipeline.intake(engine, SHOP, order)
    while pipeline.allocate_next(engine):
        pass
    disp = Dispatcher(engine, vault, {SHOP.name: MemoryConnector(platform)}, {SHOP.name: SHOP},
                      RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.001),
                      worker="test")
    while asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=1))):
        pass
    with engine.connect() as conn:
        row = conn.execute(select(orders.c.id, orders.c.state)).one()
        delivered = list(conn.execute(select(deliveries.c.code_id).order_by(
            deliveries.c.code_id)).scalars())
    assert row.state == "shipped"
    return {"order_id": int(row.id), "delivered": delivered}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_export_delivered_masked(engine: Engine, vault: Vault, pool: str,
                                 tmp_path: Path) -> None:
    """`codes export POOL --state delivered --csv F` writes the delivered codes masked, with
    batch, supplier, cost in yuan, expiry, order and delivery time; nothing is audited."""
    shipped = deliver(engine, vault, tmp_path)
    out = tmp_path / "delivered.csv"
    result = run(engine, vault, "codes", "export", POOL, "--state", "delivered", "--since", "1d",
                 "--csv", str(out))
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert [int(r["code_id"]) for r in rows] == shipped["delivered"]
    first = rows[0]
    assert first["code"] == "TE****WV" and first["password"] == ""
    assert (first["state"], first["supplier"], first["cost"], first["platform_order_id"],
            first["shop"], first["order_id"]) == (
        "delivered", "acme", "29.90", "TB-1001", "shop-a", str(shipped["order_id"]))
    assert first["expires_at"] == "2030-03-01 23:59:59+08:00"
    assert first["delivered_at"].endswith("+08:00")
    assert code(0) not in out.read_text(encoding="utf-8")
    with engine.connect() as conn:
        assert conn.execute(select(audit_log).where(audit_log.c.action == "export")).all() == []
    everything = tmp_path / "all.csv"
    assert run(engine, vault, "codes", "export", POOL, "--csv", str(everything)).exit_code == 0
    assert sorted(r["state"] for r in read_csv(everything)) == [
        "available", "available", "delivered", "delivered"]
    old = tmp_path / "old.csv"
    assert run(engine, vault, "codes", "export", POOL, "--since", "2099-01-01",
               "--csv", str(old)).exit_code == 0
    assert read_csv(old) == []


def test_export_plaintext_asks_audits_and_is_private(engine: Engine, vault: Vault, pool: str,
                                                     tmp_path: Path) -> None:
    """--plaintext asks first (no answer: nothing written, nothing audited); with --yes it
    writes the exact codes to a 0600 file (even over an existing world-readable one) and
    audits who, what and how many."""
    deliver(engine, vault, tmp_path)
    out = tmp_path / "plain.csv"
    out.write_text("old", encoding="utf-8")
    out.chmod(0o644)
    declined = run(engine, vault, "codes", "export", POOL, "--state", "delivered",
                   "--plaintext", "--csv", str(out), stdin="n\n")
    assert declined.exit_code == 1
    assert out.read_text(encoding="utf-8") == "old"
    result = run(engine, vault, "codes", "export", POOL, "--state", "delivered", "--plaintext",
                 "--csv", str(out), stdin="y\n")
    assert result.exit_code == 0, result.output
    assert "PLAIN TEXT" in result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(r["code"] for r in read_csv(out)) == [code(0), code(1)]
    scripted = tmp_path / "scripted.csv"
    again = run(engine, vault, "codes", "export", POOL, "--plaintext", "--yes", "--json",
                "--csv", str(scripted))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["rows"] == 4
    with engine.connect() as conn:
        entries = conn.execute(select(audit_log).where(audit_log.c.action == "export")).all()
    assert sorted((json.loads(e.details)["count"], json.loads(e.details)["state"],
                   json.loads(e.details)["plaintext"], e.subject) for e in entries) == [
        (2, "delivered", True, f"pool:{POOL}"), (4, None, True, f"pool:{POOL}")]
    assert all(e.actor.startswith("cli:") for e in entries)
    assert not any(code(i) in e.details for e in entries for i in range(4))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_export_refusals(engine: Engine, vault: Vault, pool: str, tmp_path: Path) -> None:
    """An unknown pool or a bad --since is a clear error and writes no file."""
    out = tmp_path / "x.csv"
    missing = run(engine, vault, "codes", "export", "nope", "--csv", str(out))
    assert missing.exit_code == 1 and "no pool 'nope'" in str(missing.exception)
    bad = run(engine, vault, "codes", "export", POOL, "--since", "last week", "--csv", str(out))
    assert bad.exit_code == 1
    assert not out.exists()


def test_plaintext_export_marks_reserved_codes_seen(engine: Engine, vault: Vault, pool: str,
                                                    tmp_path: Path) -> None:
    """Reserved codes exported in plaintext count as seen, so a cancelled order cannot put
    them back on sale; a masked export marks nothing."""
    path = tmp_path / "stock.txt"
    path.write_text("".join(f"{code(i)}\n" for i in range(3)), encoding="utf-8")
    P.import_codes(engine, vault, POOL, path, actor=ACTOR)
    order = paid_order("TB-2001", ("s1", 1))
    pipeline.intake(engine, SHOP, order)
    while pipeline.allocate_next(engine):
        pass

    def seen() -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(select(deliveries.c.seen_at)).scalars())

    assert run(engine, vault, "codes", "export", POOL, "--state", "reserved",
               "--csv", str(tmp_path / "m.csv")).exit_code == 0
    assert seen() == [None]
    result = run(engine, vault, "codes", "export", POOL, "--state", "reserved", "--plaintext",
                 "--yes", "--csv", str(tmp_path / "p.csv"))
    assert result.exit_code == 0, result.output
    assert [r["state"] for r in read_csv(tmp_path / "p.csv")] == ["reserved"]
    [when] = seen()
    assert when is not None
