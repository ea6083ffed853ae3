"""The hash-chained audit log on every backend, and the ``robot audit`` commands."""

from __future__ import annotations

import itertools
import json
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, delete, event, func, insert, select, update
from structlog.testing import capture_logs

import robot.cli
from robot import audit
from robot.cli.common import EXIT_USER, App, run_guarded
from robot.clock import DEFAULT_ZONE, utcnow
from robot.db import tx_value
from robot.errors import Fatal
from robot.schema import audit_head, audit_log
from robot.vault import Vault, init_key_file
from tests.conftest import backends


@pytest.fixture(autouse=True)
def _first_free_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read chains by number: every transaction looks for a free head from
    chain 1 (the daemon's rotation is tested on its own)."""
    monkeypatch.setattr(audit, "_ROTATION", itertools.repeat(0))


def _append(engine: Engine, n: int, *, actor: str = "test", action: str = "import") -> list[int]:
    seqs = []
    for i in range(n):
        with engine.begin() as conn:
            seqs.append(audit.append(conn, actor=actor, action=action, subject=f"batch:{i}",
                                     details={"i": i, "pool": "youku-vip", "备注": "导入"}))
    return seqs


def _key(engine: Engine) -> bytes:
    """The audit key (as an insider holding the key file would have it)."""
    return audit.seal_of(engine).chain_key


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


def _head_updates(engine: Engine) -> list[str]:
    """The UPDATEs of ``audit_head`` the engine runs from now on."""
    seen: list[str] = []

    def note(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE AUDIT_HEAD"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    return seen


def _heads(engine: Engine) -> dict[int, tuple[int, str]]:
    with engine.connect() as conn:
        return {int(r.id): (int(r.seq), str(r.hash))
                for r in conn.execute(select(audit_head)) if r.seq}


def _ends(engine: Engine) -> dict[int, tuple[int, str]]:
    """Each chain's last entry in the log."""
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.chain, audit_log.c.seq, audit_log.c.hash)
                            .order_by(audit_log.c.chain, audit_log.c.seq)).all()
    return {int(r.chain): (int(r.seq), str(r.hash)) for r in rows}


def test_a_transaction_moves_its_head_once(engine: Engine) -> None:
    """Many appends in one transaction (a group commit's batch) move the chain's head once,
    as the transaction commits, to the chain's last entry."""
    _append(engine, 1)
    updates = _head_updates(engine)
    with engine.begin() as conn:
        seqs = [audit.append(conn, actor="t", action="allocate", subject=f"order:{i}")
                for i in range(20)]
    assert seqs == list(range(seqs[0], seqs[0] + 20))
    assert len(updates) == 1
    assert _heads(engine) == _ends(engine)
    assert audit.verify(engine).ok


def test_the_head_moves_before_the_commits_other_listeners(engine: Engine) -> None:
    """The head's update belongs to the transaction it closes: a commit listener
    registered later (a statement recorder) sees it before the commit, not after."""
    steps: list[str] = []
    event.listen(engine, "after_cursor_execute",
                 lambda _c, _cur, statement, *_a: steps.append(statement.split()[0].upper()
                                                               + " " + statement.split()[1]))
    event.listen(engine, "commit", lambda _conn: steps.append("COMMIT"))
    _append(engine, 2)
    assert steps.count("COMMIT") == 2
    for chunk in "|".join(steps).split("COMMIT")[:2]:
        assert chunk.rstrip("|").endswith("UPDATE audit_head"), chunk


def test_a_rolled_back_savepoint_takes_its_entries_and_the_chain_goes_on(
        engine: Engine) -> None:
    """Entries appended in a savepoint that is rolled back are gone; the transaction's next
    entry follows the last one kept, and the head commits at the chain's real end (also
    when nothing is appended after the rollback)."""
    _append(engine, 1)
    with engine.begin() as conn:
        kept = audit.append(conn, actor="t", action="intake", subject="order:1")
        savepoint = conn.begin_nested()
        audit.append(conn, actor="t", action="intake", subject="order:2")
        savepoint.rollback()
        assert audit.append(conn, actor="t", action="intake", subject="order:3") == kept + 1
    assert _heads(engine) == _ends(engine)
    assert audit.verify(engine) == audit.VerifyResult(True, kept + 1)
    with engine.begin() as conn:
        last = audit.append(conn, actor="t", action="intake", subject="order:4")
        savepoint = conn.begin_nested()
        audit.append(conn, actor="t", action="intake", subject="order:5")
        savepoint.rollback()
    assert _heads(engine) == _ends(engine)
    assert audit.verify(engine) == audit.VerifyResult(True, last)


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
    forged = audit._entry_hash(_key(engine), last["hash"], 4, at, chain=1, actor="x",
                               action="void", subject="code:1", details="{}")
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
    forged = audit._entry_hash(_key(engine), prev["hash"], 3, row["at"], chain=1, actor="x",
                               action="void", subject="code:1", details="{}")
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
                chains.append(tx_value(conn, audit._TAKEN).chain)
            second_done.set()

        thread = threading.Thread(target=second)
        thread.start()
        waited = not second_done.wait(timeout=20)
        first.commit()
        thread.join()
    assert not waited, "the second appender waited for the first one's chain"
    assert chains and chains[0] != 1
    assert audit.verify(engine) == audit.VerifyResult(True, 2)


@pytest.mark.parametrize("backend", [b for b in backends() if b != "sqlite"], indirect=True)
def test_transactions_spread_their_appends_over_every_chain(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """One after another, a process's transactions start looking for a free head at the
    next chain each time, so the heads (and the row versions their updates leave for a
    held vacuum horizon) share the appends; a held chain is passed over, and every chain
    verifies."""
    monkeypatch.setattr(audit, "_ROTATION", itertools.count())
    _append(engine, 2 * audit.AUDIT_CHAINS)
    with engine.connect() as conn:
        per_chain = dict(conn.execute(select(audit_log.c.chain, func.count())
                                      .group_by(audit_log.c.chain)).all())
    assert per_chain == dict.fromkeys(range(1, audit.AUDIT_CHAINS + 1), 2)
    with engine.connect() as held:
        held.begin()
        audit.append(held, actor="held", action="intake", subject="order:held")
        taken = tx_value(held, audit._TAKEN).chain
        monkeypatch.setattr(audit, "_ROTATION", itertools.repeat(taken - 1))
        with engine.begin() as conn:  # starts at the held chain: takes the next free one
            audit.append(conn, actor="t", action="intake", subject="order:next")
            assert tx_value(conn, audit._TAKEN).chain == taken % audit.AUDIT_CHAINS + 1
        held.commit()
    assert audit.verify(engine).ok


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
    app.zone = DEFAULT_ZONE  # no robot file: its default timezone
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
    assert err == ("error: audit chain BROKEN at chain 1, entry 2: "
                   "entry 2 is missing (next is 3)\n")


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
    assert entries[0]["at"].endswith("+08:00")  # the robot's zone (Asia/Shanghai by default)
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


# --- what the database alone cannot hide: keyed hashes and checkpoints outside it ---------


def _verify_cli(monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`robot audit verify` as the operator runs it: (exit status, stderr)."""
    status, _, err = _run_guarded(monkeypatch, capsys, "audit", "verify")
    return status, err


def _spread(engine: Engine) -> list[int]:
    """Entries in two chains on server databases (one held open while another appends), in
    chain 1 on SQLite; returns the chains used."""
    if engine.dialect.name == "sqlite":
        _append(engine, 4)
        return [1]
    with engine.connect() as first:
        first.begin()
        audit.append(first, actor="held", action="intake", subject="order:1")
        _append(engine, 3)  # chain 1 is held: these go to another chain
        first.commit()
    with engine.connect() as conn:
        return sorted(int(c) for c in conn.execute(select(audit_log.c.chain).distinct())
                      .scalars())


def _checkpoints(engine: Engine) -> dict[int, audit.Mark]:
    return audit.read_checkpoints(audit.seal_of(engine))


def test_wiped_log_fails_verify(cli_app: App, engine: Engine, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """DELETE FROM audit_log and audit_head after a checkpoint makes verify exit 1 naming the
    chain and its checkpoint, and still after the robot appends to the recreated chain."""
    _append(engine, 5)
    assert _verify_cli(monkeypatch, capsys) == (0, "")
    with engine.begin() as conn:
        conn.execute(delete(audit_log))
        conn.execute(delete(audit_head))
    status, err = _verify_cli(monkeypatch, capsys)
    assert status == EXIT_USER
    assert "BROKEN at chain 1" in err and "the chain is missing" in err
    assert "its checkpoint says entry 5" in err
    _append(engine, 1)  # the robot recreates the heads and starts a chain again at 1
    status, err = _verify_cli(monkeypatch, capsys)
    assert status == EXIT_USER
    assert "BROKEN at chain 1" in err and "but its checkpoint says entry 5" in err


def test_chain_deleted_with_its_head_fails_verify(
        cli_app: App, engine: Engine, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Deleting one whole chain with its head row makes verify exit 1 naming that chain."""
    chains = _spread(engine)
    assert _verify_cli(monkeypatch, capsys) == (0, "")
    gone = chains[-1]
    with engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.chain == gone))
        conn.execute(delete(audit_head).where(audit_head.c.id == gone))
    status, err = _verify_cli(monkeypatch, capsys)
    assert status == EXIT_USER
    assert f"BROKEN at chain {gone}" in err and "the chain is missing" in err


def test_empty_chain_deleted_fails_verify(engine: Engine) -> None:
    """A chain with no entries is missing too when its head row is deleted."""
    _append(engine, 1)
    with engine.begin() as conn:
        conn.execute(delete(audit_head).where(audit_head.c.id == 5))
    result = audit.verify(engine)
    assert (result.ok, result.chain) == (False, 5)
    assert "the chain is missing" in (result.problem or "")


def test_heads_reset_to_genesis_fail_verify(
        cli_app: App, engine: Engine, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Entries deleted and every head reset to genesis makes verify exit 1 with the
    checkpoint expected and what was found."""
    chains = _spread(engine)
    assert _verify_cli(monkeypatch, capsys) == (0, "")
    marks = _checkpoints(engine)
    with engine.begin() as conn:
        conn.execute(delete(audit_log))
        conn.execute(update(audit_head).values(seq=0, hash=audit.GENESIS))
    status, err = _verify_cli(monkeypatch, capsys)
    assert status == EXIT_USER
    first = chains[0]
    assert f"BROKEN at chain {first}" in err
    assert (f"the chain ends at entry 0 (hash {audit.GENESIS[:16]}…) but its checkpoint says "
            f"entry {marks[first].seq} (hash {marks[first].hash[:16]}…)") in err


def _rehash_from(engine: Engine, seq: int, digest: Any) -> None:
    """An attacker's rewrite of chain 1 from ``seq`` on: every hash recomputed with
    ``digest(prev, row)`` and the head moved to the last one."""
    with engine.begin() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.chain == 1)
                            .order_by(audit_log.c.seq)).all()
        prev = audit.GENESIS
        for r in rows:
            if r.seq >= seq:
                new = digest(prev, r)
                conn.execute(update(audit_log).where(audit_log.c.chain == 1,
                                                     audit_log.c.seq == r.seq)
                             .values(prev_hash=prev, hash=new))
                prev = new
            else:
                prev = r.hash
        conn.execute(update(audit_head).where(audit_head.c.id == 1).values(hash=prev))


def _unkeyed(prev: str, r: Any) -> str:
    return audit._legacy_hash(prev, r.seq, r.at, actor=r.actor, action=r.action,
                              subject=r.subject, details=r.details, chain=r.chain)


def _own_key(prev: str, r: Any) -> str:
    return audit._entry_hash(b"k" * 32, prev, r.seq, r.at, chain=r.chain, actor=r.actor,
                             action=r.action, subject=r.subject, details=r.details)


@pytest.mark.parametrize("digest", [_unkeyed, _own_key], ids=["sha256", "hmac-own-key"])
def test_edited_entry_with_every_hash_recomputed_fails_verify(
        cli_app: App, engine: Engine, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], digest: Any) -> None:
    """An entry edited and every hash after it recomputed (unkeyed SHA-256, or HMAC under a
    key of the attacker's own) makes verify exit 1 at the edited entry: the hash is keyed."""
    _append(engine, 5)
    _set(engine, 3, details='{"i":2,"pool":"forged"}')
    _rehash_from(engine, 3, digest)
    status, err = _verify_cli(monkeypatch, capsys)
    assert status == EXIT_USER
    assert err == "error: audit chain BROKEN at chain 1, entry 3: entry 3 was altered\n"


def test_rewritten_as_an_old_unkeyed_chain_is_refused(
        cli_app: App, engine: Engine, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A keyed, checkpointed chain rewritten with unkeyed hashes and marked as an old
    version's is a downgrade: verify exits 1 and the upgrade refuses to re-seal it."""
    _append(engine, 4)
    assert _verify_cli(monkeypatch, capsys) == (0, "")
    _set(engine, 2, details='{"forged":true}')
    _rehash_from(engine, 1, _unkeyed)
    with engine.begin() as conn:
        conn.execute(update(audit_head).where(audit_head.c.id == 1).values(keyed=False))
    status, err = _verify_cli(monkeypatch, capsys)
    assert status == EXIT_USER
    assert "a downgrade" in err
    with pytest.raises(Fatal, match="a downgrade"):
        audit.upgrade_legacy(engine, actor="test")
    with engine.connect() as conn:
        assert conn.execute(select(audit_head.c.keyed).where(audit_head.c.id == 1)).scalar_one() \
            is False


def test_verify_with_another_key_file_fails(engine: Engine, tmp_path: Path) -> None:
    """Entries sealed under one key file do not verify under another: the hash is keyed."""
    _append(engine, 2)
    other = tmp_path / "other" / "robot.key"
    init_key_file(other)
    audit.bind(engine, other)
    result = audit.verify(engine)
    assert (result.ok, result.first_bad_seq, result.problem) == (False, 1, "entry 1 was altered")


def test_audit_key_survives_key_rotation(engine: Engine, key_file: Path, vault: Vault) -> None:
    """`robot keys rotate` changes the code keys, not the audit key: the log verifies
    before and after, and entries appended after it verify too."""
    from robot.keys import rotate

    _append(engine, 2)
    assert audit.verify(engine).ok
    report = rotate(key_file, engine, actor="test")
    assert report.new_key == "k2"
    audit.bind(engine, key_file)  # a fresh process reading the rotated file
    _append(engine, 1)
    result = audit.verify(engine)
    assert result.ok, result.problem


def test_checkpoint_file_is_private_signed_and_replaced_whole(engine: Engine, key_file: Path
                                                            ) -> None:
    """The checkpoint file sits beside the key file, mode 0600, with no temp file left; an
    edited checkpoint fails its signature and verify says so."""
    _append(engine, 3)
    assert audit.verify(engine).ok
    path = audit.checkpoint_path(key_file)
    assert path.parent == key_file.parent
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert _checkpoints(engine)[1] == audit.Mark(3, _row(engine, 3)["hash"])
    doc = json.loads(path.read_text())
    doc["chains"]["1"][0] = 2  # an attacker moving the checkpoint back
    path.write_text(json.dumps(doc))
    result = audit.verify(engine)
    assert not result.ok
    assert "fails its signature" in (result.problem or "")
    tampered = path.read_text()
    with pytest.raises(audit.CheckpointError, match="fails its signature"):
        audit.checkpoint(engine)
    assert path.read_text() == tampered  # the evidence is never overwritten


def test_checkpoint_never_moves_back(engine: Engine) -> None:
    """A head behind its checkpoint (entries removed from the end, head moved back) leaves
    the checkpoint where it was, logged; verify reports the removal."""
    _append(engine, 5)
    audit.checkpoint(engine)
    third = _row(engine, 3)["hash"]
    with engine.begin() as conn:
        conn.execute(delete(audit_log).where(audit_log.c.seq > 3))
        conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=3, hash=third))
    with capture_logs() as logs:
        marks = audit.checkpoint(engine)
    assert marks[1].seq == 5
    assert [e["chain"] for e in logs if e["event"] == "audit_checkpoint_refused"] == [1]
    result = audit.verify(engine)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert "its checkpoint says entry 5" in (result.problem or "")


def test_checkpoint_moves_only_over_verified_entries(engine: Engine) -> None:
    """A forged entry with the head moved over it does not move the checkpoint."""
    _append(engine, 2)
    audit.checkpoint(engine)
    last = _row(engine, 2)
    with engine.begin() as conn:
        conn.execute(insert(audit_log).values(chain=1, seq=3, at=last["at"], actor="x",
                                              action="void", subject="code:1", details="{}",
                                              prev_hash=last["hash"], hash="e" * 64))
        conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=3, hash="e" * 64))
    assert audit.checkpoint(engine)[1] == audit.Mark(2, last["hash"])


def test_checkpoint_is_logged_and_follows_appends(engine: Engine, key_file: Path) -> None:
    """After an append, checkpoint_due writes the checkpoint (at most once per interval) and
    logs it with the chain, sequence and hash; with nothing appended it does nothing."""
    audit.bind(engine, key_file)  # as `robot run` binds its engine
    assert audit.checkpoint_due(engine, every=0.0) is False  # nothing appended yet
    _append(engine, 2)
    with capture_logs() as logs:
        assert audit.checkpoint_due(engine, every=0.0) is True
    head = _row(engine, 2)["hash"]
    [first] = [e["chains"] for e in logs if e["event"] == "audit_checkpoint"]
    assert first == {1: [2, head], **{c: [0, audit.GENESIS] for c in range(2, 9)}}
    _append(engine, 1)
    assert audit.checkpoint_due(engine, every=3600.0) is False  # too soon after the last
    assert _checkpoints(engine)[1].seq == 2
    with capture_logs() as logs:
        assert audit.checkpoint_due(engine, every=0.0) is True
    assert [e["chains"] for e in logs if e["event"] == "audit_checkpoint"] == [
        {1: [3, _row(engine, 3)["hash"]]}]  # only what moved


def test_concurrent_checkpoints_never_regress(engine: Engine) -> None:
    """Appenders and several checkpointing threads at once: every checkpoint read is a valid
    signed file whose sequences never go down, and the last one matches the heads."""
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: dict[int, list[dict[int, audit.Mark]]] = {n: [] for n in range(3)}

    def appender() -> None:
        try:
            _append(engine, 30)
        except BaseException as exc:
            errors.append(exc)

    def checkpointer(n: int) -> None:
        try:
            while not stop.is_set():
                audit.checkpoint(engine)
                seen[n].append(_checkpoints(engine))
        except BaseException as exc:
            errors.append(exc)

    appenders = [threading.Thread(target=appender) for _ in range(2)]
    checkers = [threading.Thread(target=checkpointer, args=(n,)) for n in seen]
    for t in (*appenders, *checkers):
        t.start()
    for t in appenders:
        t.join()
    stop.set()
    for t in checkers:
        t.join()
    assert errors == []
    final = audit.checkpoint(engine)
    for reads in seen.values():
        for before, after in zip(reads, [*reads[1:], final], strict=True):
            assert all(after[c].seq >= m.seq for c, m in before.items()), (before, after)
    with engine.connect() as conn:
        heads = {int(r.id): audit.Mark(int(r.seq), str(r.hash))
                 for r in conn.execute(select(audit_head))}
    assert final == heads
    assert audit.verify(engine) == audit.VerifyResult(True, 60)


def _legacy_chain(engine: Engine, n: int, *, alter: int | None = None) -> None:
    """Chain 1 as an older version left it: unkeyed SHA-256 hashes, head not keyed."""
    prev = audit.GENESIS
    with engine.begin() as conn:
        for seq in range(1, n + 1):
            at = utcnow()
            details = '{"old":true}'
            digest = audit._legacy_hash(prev, seq, at, actor="old", action="import",
                                        subject=f"batch:{seq}", details=details)
            if seq == alter:
                details = '{"old":"forged"}'
            conn.execute(insert(audit_log).values(chain=1, seq=seq, at=at, actor="old",
                                                  action="import", subject=f"batch:{seq}",
                                                  details=details, prev_hash=prev, hash=digest))
            prev = digest
        conn.execute(update(audit_head).where(audit_head.c.id == 1)
                     .values(seq=n, hash=prev, keyed=False))


def test_an_old_unkeyed_chain_is_verified_then_resealed(engine: Engine) -> None:
    """An older version's chain fails verify (and refuses appends) until the upgrade, which
    verifies it under SHA-256, re-seals it keyed, audits itself and checkpoints; again, it
    does nothing."""
    _legacy_chain(engine, 3)
    result = audit.verify(engine)
    assert not result.ok and "run `robot audit upgrade`" in (result.problem or "")
    with pytest.raises(Fatal, match="robot audit upgrade"), engine.begin() as conn:
        audit.append(conn, actor="t", action="import", subject="x")
    with capture_logs() as logs:
        assert audit.upgrade_legacy(engine, actor="test") == {1: 3}
    assert [e["entries"] for e in logs if e["event"] == "audit_chain_resealed"] == [3]
    assert audit.verify(engine) == audit.VerifyResult(True, 4)
    with engine.connect() as conn:
        last = conn.execute(select(audit_log).order_by(audit_log.c.seq.desc()).limit(1)).one()
    assert (last.action, json.loads(last.details)) == ("audit_reseal", {"chains": {"1": 3}})
    assert _checkpoints(engine)[1].seq == 4
    assert audit.upgrade_legacy(engine, actor="test") == {}


def test_cli_upgrade_reseals_old_chains(cli_app: App, engine: Engine,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`robot audit upgrade` re-seals an older version's chain and says so; verify then
    exits 0; a second run finds nothing to do."""
    _legacy_chain(engine, 3)
    assert _verify_cli(monkeypatch, capsys)[0] == EXIT_USER
    status, out, _ = _run_guarded(monkeypatch, capsys, "audit", "upgrade")
    assert (status, out) == (0, "chain 1: 3 entries verified and re-sealed with the key file\n")
    assert _verify_cli(monkeypatch, capsys) == (0, "")
    status, out, _ = _run_guarded(monkeypatch, capsys, "audit", "upgrade")
    assert (status, out) == (0, "every audit chain is keyed already\n")


def test_a_tampered_old_chain_is_not_resealed(engine: Engine) -> None:
    """An older version's chain that fails its unkeyed verification is refused, unchanged."""
    _legacy_chain(engine, 4, alter=2)
    with pytest.raises(Fatal, match="fails its unkeyed verification at entry 2"):
        audit.upgrade_legacy(engine, actor="test")
    with engine.connect() as conn:
        assert conn.execute(select(audit_head.c.keyed).where(audit_head.c.id == 1)).scalar_one() \
            is False
    assert not audit.verify(engine).ok


def test_the_robot_checkpoints_while_it_runs_and_at_shutdown(tmp_path: Path) -> None:
    """`robot run` re-seals nothing on a new database, checkpoints within a second of its
    appends while running (without any verify), and leaves the checkpoint at every chain's
    head when it stops."""
    import asyncio
    import uuid

    from connectors.memory import MemoryPlatform
    from robot.config import load_config
    from robot.daemon import Robot
    from robot.db import make_engine
    from robot.migrate import upgrade
    from robot.schema import orders
    from robot.vault import open_vault
    from tests.factories import paid_order, seed_codes
    from tests.test_daemon import wait_for, write_config

    name = f"audit-{uuid.uuid4().hex}"
    config = load_config(write_config(tmp_path, name))
    engine = make_engine(config.database)
    upgrade(engine)
    seed_codes(engine, open_vault(config.key_file), "p1", 5)
    platform = MemoryPlatform.named(name)
    for i in range(3):
        platform.put_order(paid_order(f"A{i}", ("s1", 1)))
    seal = audit.Seal.from_key_file(config.key_file)

    def heads() -> dict[int, audit.Mark]:
        with engine.connect() as conn:
            return {int(r.id): audit.Mark(int(r.seq), str(r.hash))
                    for r in conn.execute(select(audit_head))}

    def checkpointed_shipments() -> bool:
        with engine.connect() as conn:
            shipped = conn.execute(select(func.count()).select_from(orders)
                                   .where(orders.c.state == "shipped")).scalar_one()
        return shipped == 3 and audit.read_checkpoints(seal) == heads()

    async def scenario() -> int:
        robot = Robot(config, drain_timeout=5)
        await asyncio.to_thread(robot.prepare)
        task = asyncio.create_task(robot.run(install_signals=False))
        await wait_for(checkpointed_shipments)
        robot.stop()
        return await task

    assert asyncio.run(scenario()) == 0
    assert audit.read_checkpoints(seal) == heads()
    assert heads()[1].seq > 3
    engine.dispose()
