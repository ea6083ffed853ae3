"""robot.db.write: a hot single-row write on the driver's cursor (SQLite) is the same write
SQLAlchemy makes — same row, same values, same events, same errors — on every backend."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, event, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from robot import writes
from robot.clock import utcnow
from robot.db import _PLANS, transaction, write
from robot.schema import push_seen

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
    assert done.inserted_primary_key is not None
    if engine.dialect.name == "sqlite":  # it went the driver's way, not SQLAlchemy's
        assert _PLANS[(_MARK, ("shop", "message_id", "received_at"))] is not None
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
