"""robot.db.write, read, write_many: a hot statement on the driver's cursor is the same statement
SQLAlchemy makes — same row, same values, same events, same errors — on every backend."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, event, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from robot import writes
from robot.clock import utcnow
from robot.db import _PLANS, first, plan_key, read, transaction, write, write_many
from robot.schema import pools, push_seen

_MARK = insert(push_seen)
_MOVE = update(push_seen).where(push_seen.c.shop == bindparam("b_shop"))


def _rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(push_seen.c.shop, push_seen.c.message_id, push_seen.c.received_at)
            .order_by(push_seen.c.message_id))]


def test_a_write_stores_what_sqlalchemy_stores(engine: Engine) -> None:
    """The same insert through write() and through conn.execute reads back the same (the
    timestamp through the column type's processing); an update's rowcount counts the rows
    it matched; an insert tells its new id."""
    now = utcnow()
    with transaction(engine) as conn:
        conn.execute(_MARK, {"shop": "s", "message_id": "m-sa", "received_at": now})
        done = write(conn, _MARK, {"shop": "s", "message_id": "m-fast", "received_at": now})
    assert done.inserted_primary_key == ("s", "m-fast")  # the natural key, as given
    # It went the driver's way, not SQLAlchemy's.
    assert _PLANS[plan_key(engine.dialect, _MARK, ("shop", "message_id", "received_at"))]
    sa, fast = _rows(engine)
    assert sa[0] == fast[0] == "s" and sa[2] == fast[2]
    later = now + timedelta(seconds=5)
    with transaction(engine) as conn:
        moved = write(conn, _MOVE, {"b_shop": "s", "received_at": later})
        none = write(conn, _MOVE, {"b_shop": "nobody", "received_at": later})
    assert (moved.rowcount, none.rowcount) == (2, 0)
    stamps = {r[2] for r in _rows(engine)}
    assert len(stamps) == 1 and stamps != {sa[2]}


def test_a_write_raises_sqlalchemys_errors(engine: Engine) -> None:
    """A constraint the write breaks raises SQLAlchemy's IntegrityError (callers catch that
    one), and the transaction rolls back as with conn.execute."""
    now = utcnow()
    with transaction(engine) as conn:
        write(conn, _MARK, {"shop": "s", "message_id": "dup", "received_at": now})

    def both() -> None:
        with transaction(engine) as conn:
            write(conn, _MARK, {"shop": "s", "message_id": "other", "received_at": now})
            write(conn, _MARK, {"shop": "s", "message_id": "dup", "received_at": now})

    with pytest.raises(IntegrityError):
        both()
    assert [r[1] for r in _rows(engine)] == ["dup"]


def test_a_write_fires_the_engines_events_and_reports_a_failing_disk(engine: Engine) -> None:
    """The engine's statement events see the write (a fault injected there fails it, as a
    failing disk would), and the failure is reported to the write signal like any other."""
    seen: list[str] = []

    def watch(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.split(maxsplit=1)[0].upper())

    event.listen(engine, "before_cursor_execute", watch)
    try:
        with transaction(engine) as conn:
            write(conn, _MARK, {"shop": "s", "message_id": "seen", "received_at": utcnow()})
    finally:
        event.remove(engine, "before_cursor_execute", watch)
    assert "INSERT" in seen

    dbapi = engine.dialect.loaded_dbapi

    def fail(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            raise dbapi.OperationalError("disk I/O error")

    event.listen(engine, "before_cursor_execute", fail)
    try:
        with pytest.raises(OperationalError), transaction(engine) as conn:
            write(conn, _MARK, {"shop": "s", "message_id": "lost", "received_at": utcnow()})
    finally:
        event.remove(engine, "before_cursor_execute", fail)
    assert writes.signal_of(engine).failing
    assert [r[1] for r in _rows(engine)] == ["seen"]


_SEEN_SINCE = select(push_seen.c.shop, push_seen.c.message_id, push_seen.c.received_at).where(
    push_seen.c.received_at >= bindparam("b_since")).order_by(push_seen.c.message_id)


def test_a_read_returns_what_sqlalchemy_returns(engine: Engine) -> None:
    """read() and first() give the rows conn.execute gives: same values after the column
    types' result processing (the timestamp a datetime again), by name, by index and by
    mapping; an empty result is empty (first: None)."""
    now = utcnow()
    with transaction(engine) as conn:
        for k in range(3):
            write(conn, _MARK, {"shop": "s", "message_id": f"m{k}",
                                "received_at": now + timedelta(seconds=k)})
    with transaction(engine) as conn:
        fast = read(conn, _SEEN_SINCE, {"b_since": now + timedelta(seconds=1)})
        sa = conn.execute(_SEEN_SINCE, {"b_since": now + timedelta(seconds=1)}).all()
        top = first(conn, _SEEN_SINCE, {"b_since": now})
        nothing = first(conn, _SEEN_SINCE, {"b_since": now + timedelta(days=1)})
    assert [tuple(r) for r in fast] == [tuple(r) for r in sa]
    assert [r.message_id for r in fast] == ["m1", "m2"]
    assert isinstance(fast[0].received_at, type(sa[0].received_at))
    assert fast[0]._mapping == dict(sa[0]._mapping)
    assert top is not None and top[1] == "m0" and nothing is None
    assert _PLANS[plan_key(engine.dialect, _SEEN_SINCE, ("b_since",))] is not None


def test_write_many_stores_every_row_and_refuses_mixed_rows(engine: Engine) -> None:
    """write_many() inserts every row as conn.execute(stmt, rows) would (values through
    the column types), and refuses rows naming different columns."""
    now = utcnow()
    rows = [{"shop": "s", "message_id": f"w{k}", "received_at": now} for k in range(4)]
    with transaction(engine) as conn:
        write_many(conn, _MARK, rows)
        write_many(conn, _MARK, [])
    assert [r[1] for r in _rows(engine)] == ["w0", "w1", "w2", "w3"]
    assert {r[2] for r in _rows(engine)} == {now}
    with pytest.raises(ValueError, match="same columns"), transaction(engine) as conn:
        write_many(conn, _MARK, [{"shop": "s", "message_id": "x1", "received_at": now},
                                 {"shop": "s", "message_id": "x2"}])
    assert len(_rows(engine)) == 4  # rolled back
    with pytest.raises(IntegrityError), transaction(engine) as conn:
        write_many(conn, _MARK, [{"shop": "s", "message_id": "y", "received_at": now},
                                 {"shop": "s", "message_id": "w0", "received_at": now}])
    assert len(_rows(engine)) == 4


_NEW_POOL = insert(pools)


def test_an_insert_tells_its_generated_id_as_sqlalchemy_does(engine: Engine) -> None:
    """An insert into a table with a generated id gives the id the database gave the row
    (lastrowid on SQLite and MariaDB, the RETURNING SQLAlchemy compiles on PostgreSQL), on
    the driver's path, the same as conn.execute's inserted_primary_key for the next row."""
    now = utcnow()
    with transaction(engine) as conn:
        sa = conn.execute(_NEW_POOL, {"name": "p-sa", "created_at": now}).inserted_primary_key
        fast = write(conn, _NEW_POOL, {"name": "p-fast", "created_at": now})
        again = write(conn, _NEW_POOL, {"name": "p-again", "created_at": now})
    assert _PLANS[plan_key(engine.dialect, _NEW_POOL, ("name", "created_at"))] is not None
    assert fast.rowcount == 1 and fast.inserted_primary_key is not None
    assert again.inserted_primary_key is not None
    ids = {name: pid for pid, name in _pool_rows(engine)}
    assert ids["p-sa"] == sa[0]
    assert ids["p-fast"] == fast.inserted_primary_key[0] != sa[0]
    assert ids["p-again"] == again.inserted_primary_key[0] != fast.inserted_primary_key[0]


def _pool_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(pools.c.id, pools.c.name))]


def test_driver_parameters_are_those_sqlalchemy_makes(engine: Engine) -> None:
    """Where each driver parameter comes from is worked out once per plan; for statements
    with the caller's values, the statement's own constants (processed by their type), a
    value used twice and a value the caller names differently from its column, the
    parameters are exactly those of SQLAlchemy's ``construct_params`` and bind processing."""
    from robot import db

    now = utcnow()
    cases: list[tuple[Any, dict[str, Any]]] = [
        (_MARK, {"shop": "s", "message_id": "m", "received_at": now}),
        (_MOVE, {"b_shop": "s", "received_at": now}),
        (update(push_seen).where(push_seen.c.shop == "fixed",
                                 push_seen.c.received_at < now - timedelta(days=1))
         .values(received_at=bindparam("b_at")), {"b_at": now}),
        (select(push_seen.c.message_id).where(
            push_seen.c.shop == bindparam("b_shop"),
            push_seen.c.message_id != bindparam("b_shop")), {"b_shop": "x"}),
        (insert(pools).values(name=bindparam("b_name"), created_at=now), {"b_name": "p"}),
        (select(push_seen.c.shop).where(push_seen.c.received_at > bindparam("b_t"))
         .params(b_t=now), {}),
    ]
    with transaction(engine) as conn:
        for stmt, params in cases:
            plan = db._plan(conn, stmt, params)
            assert plan is not None and plan[4] is not None, stmt
            slow = (*plan[:4], None)
            assert db._args(plan, params) == db._args(slow, params), stmt


def test_a_value_computed_when_run_keeps_sqlalchemys_parameters(engine: Engine) -> None:
    """A bind whose value is computed at each execution (a callable) cannot be worked out
    once: such a plan builds its parameters through SQLAlchemy every time."""
    from robot import db

    calls: list[int] = []

    def stamp() -> Any:
        calls.append(1)
        return utcnow()

    stmt = update(push_seen).where(push_seen.c.shop == bindparam("b_shop")).values(
        received_at=bindparam("b_at", callable_=stamp))
    with transaction(engine) as conn:
        plan = db._plan(conn, stmt, {"b_shop": "s"})
        assert plan is not None and plan[4] is None
        write(conn, stmt, {"b_shop": "s"})
        write(conn, stmt, {"b_shop": "s"})
    assert len(calls) == 2
