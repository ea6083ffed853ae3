"""A database a test can take away and give back, on every backend.

SQLite: the database file lives in a directory of its own, which ``down()`` renames away
(the file is gone from where the robot looks) and ``up()`` renames back. Servers: the robot
reaches the server through a :class:`~tests.http.proxy.TcpProxy`; ``down()`` refuses and
drops every connection, ``up()`` accepts again.

:class:`FailingWrites` makes an engine's writes fail as on a disk returning EIO while its
reads go on answering; :func:`kill_session` ends a connection's session from another one
(PostgreSQL ``pg_terminate_backend``, MySQL ``KILL``; SQLite: its handle is closed).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url

from robot.db import make_engine, normalize_url
from tests.http.proxy import TcpProxy


class Switch:
    """``url`` reaches the database while it is up."""

    def __init__(self, url: str, down: Callable[[], None], up: Callable[[], None]) -> None:
        self.url = url
        self.down = down
        self.up = up


@contextmanager
def switchable_database(backend: str, server_url: str | None, root: Path) -> Iterator[Switch]:
    """A switch on a new SQLite file under ``root``, or on the server database ``server_url``."""
    if backend == "sqlite":
        home, away = root / "dbdir", root / "dbdir-away"
        home.mkdir()
        yield Switch(f"sqlite:///{home / 'robot.db'}", lambda: os.rename(home, away),
                     lambda: os.rename(away, home))
        return
    assert server_url is not None
    url = make_url(normalize_url(server_url))
    proxy = TcpProxy((url.host or "127.0.0.1", int(url.port or 0)))
    proxy.start()
    try:
        yield Switch(url.set(host="127.0.0.1", port=proxy.port)
                     .render_as_string(hide_password=False), proxy.stop, proxy.start)
    finally:
        proxy.stop()


class FailingWrites:
    """While ``failing``, every statement of an engine that changes rows fails with the
    driver's own OperationalError for an I/O error; reads (and SQLite's BEGIN IMMEDIATE,
    which a full or failing disk lets through) go on as before."""

    VERBS = ("INSERT", "UPDATE", "DELETE")

    def __init__(self) -> None:
        self.failing = False
        self._count = 0
        self._lock = threading.Lock()

    @property
    def failures(self) -> int:
        """Writes refused so far."""
        return self._count

    def install(self, engine: Engine) -> Engine:
        @event.listens_for(engine, "before_cursor_execute")
        def _fail(conn: Connection, _cursor: Any, statement: str, _params: Any, _context: Any,
                  _many: bool) -> None:
            if self.failing and statement.lstrip()[:6].upper() in self.VERBS:
                with self._lock:
                    self._count += 1
                raise _io_error(conn.dialect.loaded_dbapi, conn.dialect.name)

        return engine


def _io_error(dbapi: Any, dialect: str) -> Exception:
    """What each driver raises when the server's (or SQLite's) disk returns EIO."""
    if dialect == "sqlite":
        return dbapi.OperationalError("disk I/O error")  # type: ignore[no-any-return]
    if dialect == "postgresql":
        return dbapi.OperationalError(  # type: ignore[no-any-return]
            'could not extend file "base/16384/16385": Input/output error')
    return dbapi.OperationalError(  # type: ignore[no-any-return]
        1030, "Got error 5 - 'Input/output error' from storage engine")


def kill_session(conn: Connection, url: str) -> None:
    """End ``conn``'s session from another connection and wait until it is gone (SQLite:
    close its handle, which is what ending a session means for a file)."""
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None
    dialect = conn.dialect.name
    if dialect == "sqlite":
        dbapi_conn.close()
        return
    killer = make_engine(url)
    try:
        with killer.connect() as other:
            if dialect == "postgresql":
                pid = dbapi_conn.info.backend_pid  # type: ignore[attr-defined]
                other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p")
            else:
                pid = dbapi_conn.thread_id()  # type: ignore[attr-defined]
                other.execute(text(f"KILL {int(pid)}"))
                alive = text("SELECT count(*) FROM information_schema.processlist "
                             "WHERE id = :p")
            deadline = time.monotonic() + 30
            while other.execute(alive, {"p": pid}).scalar_one():
                assert time.monotonic() < deadline, "the session outlived its kill"
                other.rollback()
                time.sleep(0.01)
    finally:
        killer.dispose()
