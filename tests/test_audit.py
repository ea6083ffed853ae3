"""The hash-chained audit log on every backend, and the ``robot audit`` commands."""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, delete, func, insert, select, update

import robot.cli
from robot import audit
from robot.cli.common import EXIT_USER, App, run_guarded
from robot.schema import audit_head, audit_log
from tests.conftest import backends


def _append(engine: Engine, n: int, *, actor: str = "test", action: str = "import") -> list[int]:
    seqs = []
    for i in range(n):
        with engine.begin() as conn:
            seqs.append(audit.append(conn, actor=actor, action=action, subject=f"batch:{i}",
                                     details={"i": i, "pool": "youku-vip", "备注": "导入"}))
    return seqs


def _row(engine: Engine, seq: int) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(audit_log).where(audit_log.c.seq == seq)).one()._mapping)


def _set(engine: Engine, seq: int, **values: object) -> None:
    with engine.begin() as conn:
        assert conn.execute(
            update(audit_log).where(audit_log.c.seq == seq).values(**values)
        ).rowcount == 1


def _delete(engine: Engine, seq: int) -> None:
    with engine.begin() as conn:
        assert conn.execute(delete(audit_log).where(audit_log.c.seq == seq)).rowcount == 1


# --- the chain ----------------------------------------------------------------------------


def test_empty_log_verifies(engine: Engine) -> None:
    """A new database's chain is valid with zero entries."""
    assert audit.verify(engine) == audit.VerifyResult(True, 0)


def test_appended_entries_verify(engine: Engine) -> None:
    """Entries appended in their own or in shared transactions form one valid chain."""
    assert _append(engine, 5) == [1, 2, 3, 4, 5]
    with engine.begin() as conn:
        assert audit.append(conn, actor="cli:ops", action="reveal", subject="code:7") == 6
        assert audit.append(conn, actor="cli:ops", action="void", subject="code:7",
                            details={"reason": "withdrawn"}) == 7
    assert audit.verify(engine) == audit.VerifyResult(True, 7)
    assert audit.verify(engine, batch=2) == audit.VerifyResult(True, 7)
    row = _row(engine, 7)
    assert row["details"] == '{"reason":"withdrawn"}'
    assert row["prev_hash"] == _row(engine, 6)["hash"]


def test_rolled_back_append_leaves_no_trace(engine: Engine) -> None:
    """An append in a transaction that rolls back neither adds an entry nor moves the head."""
    _append(engine, 2)

    def append_then_fail() -> None:
        with engine.begin() as conn:
            audit.append(conn, actor="t", action="import", subject="x")
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        append_then_fail()
    assert _append(engine, 1) == [3]
    assert audit.verify(engine) == audit.VerifyResult(True, 3)


@pytest.mark.parametrize(
    "change",
    [
        {"details": '{"i":2,"pool":"other"}'},
        {"actor": "someone-else"},
        {"action": "void"},
        {"subject": "batch:99"},
    ],
)
def test_altered_entry_is_named(engine: Engine, change: dict[str, object]) -> None:
    """Changing any field of one entry is reported at that entry."""
    _append(engine, 5)
    _set(engine, 3, **change)
    result = audit.verify(engine)
    assert not result.ok
    assert result.first_bad_seq == 3
    assert result.entries == 2
    assert result.problem == "entry 3 was altered"


def test_altered_time_is_named(engine: Engine) -> None:
    """Moving an entry's timestamp by one microsecond is detected."""
    _append(engine, 4)
    at = _row(engine, 2)["at"]
    _set(engine, 2, at=at.replace(microsecond=(at.microsecond + 1) % 1_000_000))
    result = audit.verify(engine)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_rehashed_entry_breaks_the_next_link(engine: Engine) -> None:
    """An entry altered and re-hashed in place no longer fits the entry after it."""
    _append(engine, 5)
    row = _row(engine, 3)
    _set(engine, 3, hash="f" * 64)
    result = audit.verify(engine)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    _set(engine, 3, hash=row["hash"], details='{"forged":true}')
    assert audit.verify(engine).first_bad_seq == 3


def test_deleted_middle_entry_is_named(engine: Engine) -> None:
    """Removing an entry in the middle is reported as that entry missing."""
    _append(engine, 6)
    _delete(engine, 4)
    result = audit.verify(engine)
    assert not result.ok
    assert result.first_bad_seq == 4
    assert result.problem == "entry 4 is missing (next is 5)"


def test_deleted_first_entry_is_named(engine: Engine) -> None:
    """Removing the very first entry is reported as entry 1 missing."""
    _append(engine, 3)
    _delete(engine, 1)
    assert audit.verify(engine).first_bad_seq == 1


def test_swapped_entries_are_detected(engine: Engine) -> None:
    """Exchanging the contents of two entries (a reorder) is reported at the first of them."""
    _append(engine, 5)
    second, third = _row(engine, 2), _row(engine, 3)
    fields = ("at", "actor", "action", "subject", "details", "prev_hash", "hash")
    _set(engine, 2, **{f: third[f] for f in fields})
    _set(engine, 3, **{f: second[f] for f in fields})
    result = audit.verify(engine)
    assert not result.ok
    assert result.first_bad_seq == 2
    assert result.problem == "entry 2 does not follow entry 1"


def test_swapped_content_with_hashes_kept_is_detected(engine: Engine) -> None:
    """Exchanging only what two entries say (hashes left in place) is detected too."""
    _append(engine, 5)
    second, fourth = _row(engine, 2), _row(engine, 4)
    fields = ("actor", "action", "subject", "details")
    _set(engine, 2, **{f: fourth[f] for f in fields})
    _set(engine, 4, **{f: second[f] for f in fields})
    assert audit.verify(engine).first_bad_seq == 2


def test_deleted_last_entry_is_detected(engine: Engine) -> None:
    """Removing the newest entry (the head row untouched) is reported."""
    _append(engine, 5)
    _delete(engine, 5)
    result = audit.verify(engine)
    assert not result.ok
    assert result.entries == 4
    assert result.first_bad_seq == 5
    assert "removed from the end" in (result.problem or "")


def test_deleted_head_row_is_detected(engine: Engine) -> None:
    """Removing the head row of a chain with entries is reported (not taken as a new log)."""
    _append(engine, 3)
    with engine.begin() as conn:
        conn.execute(delete(audit_head))
    result = audit.verify(engine)
    assert not result.ok
    assert "head row is missing" in (result.problem or "")


def test_entry_added_behind_the_robots_back_is_detected(engine: Engine) -> None:
    """An entry inserted with a valid hash but without moving the head is reported."""
    _append(engine, 3)
    last = _row(engine, 3)
    at = last["at"]
    forged = audit._entry_hash(last["hash"], 4, at, actor="x", action="void", subject="code:1",
                               details="{}")
    with engine.begin() as conn:
        conn.execute(insert(audit_log).values(seq=4, at=at, actor="x", action="void",
                                              subject="code:1", details="{}",
                                              prev_hash=last["hash"], hash=forged))
    result = audit.verify(engine)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "beyond the chain head" in (result.problem or "")


def test_replaced_last_entry_is_detected_by_the_head(engine: Engine) -> None:
    """A last entry replaced by a consistent forgery no longer matches the head's hash."""
    _append(engine, 3)
    prev = _row(engine, 2)
    row = _row(engine, 3)
    forged = audit._entry_hash(prev["hash"], 3, row["at"], actor="x", action="void",
                               subject="code:1", details="{}")
    _set(engine, 3, actor="x", action="void", subject="code:1", details="{}", hash=forged)
    result = audit.verify(engine)
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "head does not match" in (result.problem or "")


def test_concurrent_appends_form_gapless_valid_chains(engine: Engine) -> None:
    """4 threads x 50 appends, each in its own transaction, give gapless valid chains that
    hold every entry once."""
    threads, per_thread = 4, 50
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            start.wait()
            _append(engine, per_thread, actor=f"worker-{n}")
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    total = threads * per_thread
    assert audit.verify(engine) == audit.VerifyResult(True, total)
    with engine.connect() as conn:
        by_actor: Counter[str] = Counter(dict(conn.execute(
            select(audit_log.c.actor, func.count()).group_by(audit_log.c.actor)).all()))
        per_chain: dict[int, list[int]] = {}
        for chain, seq in conn.execute(select(audit_log.c.chain, audit_log.c.seq)
                                       .order_by(audit_log.c.chain, audit_log.c.seq)):
            per_chain.setdefault(int(chain), []).append(int(seq))
        heads = dict(conn.execute(select(audit_head.c.id, audit_head.c.seq)).all())
    assert by_actor == {f"worker-{n}": per_thread for n in range(threads)}
    for chain, seqs in per_chain.items():
        assert seqs == list(range(1, len(seqs) + 1)) and heads[chain] == len(seqs)
    assert sum(heads.values()) == total
    if engine.dialect.name == "sqlite":
        assert set(per_chain) == {1}  # one writer at a time: one chain


@pytest.mark.parametrize("backend", [b for b in backends() if b != "sqlite"], indirect=True)
def test_an_appender_takes_a_free_chain_instead_of_waiting(engine: Engine) -> None:
    """While one transaction holds a chain's head until it commits, another appends to a
    free chain at once (server databases; SQLite has one writer); both chains verify."""
    with engine.connect() as first:
        first.begin()
        audit.append(first, actor="slow", action="intake", subject="order:1")
        second_done = threading.Event()
        chains: list[int] = []

        def second() -> None:
            with engine.begin() as conn:
                audit.append(conn, actor="fast", action="intake", subject="order:2")
                chains.append(int(conn.info[audit._TAKEN][1]))
            second_done.set()

        thread = threading.Thread(target=second)
        thread.start()
        waited = not second_done.wait(timeout=20)
        first.commit()
        thread.join()
    assert not waited, "the second appender waited for the first one's chain"
    assert chains and chains[0] != 1
    assert audit.verify(engine) == audit.VerifyResult(True, 2)


def test_verify_while_appending_reports_no_false_break(engine: Engine) -> None:
    """Verifying while other connections append never reports a removed or missing entry."""
    done = threading.Event()
    errors: list[BaseException] = []

    def appender() -> None:
        try:
            _append(engine, 60, actor="appender")
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    _append(engine, 1)
    thread = threading.Thread(target=appender)
    thread.start()
    results = []
    while not done.is_set():
        results.append(audit.verify(engine, batch=7))
    thread.join()
    results.append(audit.verify(engine, batch=7))
    assert errors == []
    assert [r for r in results if not r.ok] == []
    assert results[-1].entries == 61


# --- robot audit --------------------------------------------------------------------------


@pytest.fixture
def cli_app(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    """The CLI, talking to the test database instead of a configured one."""
    robot.cli._register()
    app = App(config_path=tmp_path / "robot.yaml")
    app._engine = engine
    monkeypatch.setattr(robot.cli, "App", lambda config_path: app)
    return app


def _run_guarded(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                 *args: str) -> tuple[int, str, str]:
    """Run the CLI as `robot` does (exit status from run_guarded)."""
    monkeypatch.setattr(sys, "argv", ["robot", *args])
    status = run_guarded(robot.cli.cli)
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_verify_ok(cli_app: App, engine: Engine, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    """`robot audit verify` on an intact chain prints OK with the count and exits 0."""
    _append(engine, 3)
    status, out, err = _run_guarded(monkeypatch, capsys, "audit", "verify")
    assert (status, out, err) == (0, "audit chain OK: 3 entries\n", "")


def test_cli_verify_broken_exits_1(cli_app: App, engine: Engine,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A broken chain prints where it breaks and exits 1."""
    _append(engine, 4)
    _delete(engine, 2)
    status, out, err = _run_guarded(monkeypatch, capsys, "audit", "verify")
    assert status == EXIT_USER
    assert out == ""
    assert err == "error: audit chain BROKEN at entry 2: entry 2 is missing (next is 3)\n"


def test_cli_verify_json(cli_app: App, engine: Engine, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the result as one document, and still exits 1 when broken."""
    _append(engine, 3)
    status, out, _ = _run_guarded(monkeypatch, capsys, "audit", "verify", "--json")
    assert status == 0
    assert json.loads(out) == {"ok": True, "entries": 3, "first_bad_seq": None, "chain": None,
                               "problem": None}
    _set(engine, 3, subject="batch:x")
    status, out, _ = _run_guarded(monkeypatch, capsys, "audit", "verify", "--json")
    assert status == EXIT_USER
    assert json.loads(out) == {"ok": False, "entries": 2, "first_bad_seq": 3, "chain": 1,
                               "problem": "entry 3 was altered"}


def test_cli_list_newest_first_with_filters(cli_app: App, engine: Engine) -> None:
    """`robot audit list` shows the newest entries first, limited and filtered by action."""
    _append(engine, 3, action="import")
    with engine.begin() as conn:
        audit.append(conn, actor="cli:ops", action="reveal", subject="code:9",
                     details={"masked": "12****90"})
    runner = CliRunner()
    result = runner.invoke(robot.cli.cli, ["audit", "list", "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [e["seq"] for e in entries] == [4, 3]
    assert entries[0]["actor"] == "cli:ops"
    assert entries[0]["action"] == "reveal"
    assert entries[0]["subject"] == "code:9"
    assert entries[0]["details"] == {"masked": "12****90"}
    assert entries[0]["at"].endswith("Z")
    result = runner.invoke(robot.cli.cli, ["audit", "list", "--action", "import", "--json"])
    assert [e["seq"] for e in json.loads(result.stdout)] == [3, 2, 1]
    table = runner.invoke(robot.cli.cli, ["audit", "list"])
    assert table.exit_code == 0, table.output
    assert "reveal" in table.stdout
    assert "code:9" in table.stdout


def test_cli_list_rejects_a_zero_limit(cli_app: App) -> None:
    """--limit must be at least 1."""
    result = CliRunner().invoke(robot.cli.cli, ["audit", "list", "--limit", "0"])
    assert result.exit_code == 2
    assert "--limit" in result.output
