"""Database engines with the durability and locking settings each backend needs.

SQLite: WAL, ``synchronous=FULL`` (a claim is durable before any write-back may start),
``busy_timeout``, foreign keys, and every transaction opened with ``BEGIN IMMEDIATE`` so a
writer waits for the lock instead of failing with SQLITE_BUSY on upgrade. RETURNING needs
SQLite >= 3.35, checked here.

PostgreSQL (psycopg 3): ``statement_timeout`` and ``idle_in_transaction_session_timeout`` so
one stuck session cannot bloat the queue tables; refuses to start with
``synchronous_commit=off``.

MySQL 8 / MariaDB >= 10.6 (pymysql): READ COMMITTED (no gap locks between claims and
imports), ``SKIP LOCKED`` available. This module must never log a URL with its password.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Dialect, Engine, LargeBinary, Table, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    PendingRollbackError,
    ResourceClosedError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import QueuePool

from robot import writes
from robot.errors import ConfigError, DatabaseUnavailable, DiskFull, Fatal, Unavailable

SQLITE_MIN = (3, 35, 0)
PG_STATEMENT_TIMEOUT_MS = 30_000
PG_IDLE_IN_TX_TIMEOUT_MS = 60_000
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_FULL = 13  # sqlite3 error code: "database or disk is full"
PG_DISK_FULL = "53100"  # SQLSTATE disk_full
MYSQL_DISK_FULL = (1021, 1114)  # ER_DISK_FULL, ER_RECORD_FILE_FULL ("The table is full")
REASON_MAX = 200

_T = TypeVar("_T")


def normalize_url(url: str) -> str:
    """Pick our drivers for bare scheme names (``postgresql://``, ``mysql://``, ``mariadb://``)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database: not a database URL: {safe_url(url)!r}") from exc
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise ConfigError(
            f"database: unsupported backend {backend!r}; use sqlite, postgresql, mysql or mariadb"
        )
    # The driver part as written (asking SQLAlchemy would import the default driver).
    driver = parsed.drivername.partition("+")[2]
    if backend == "postgresql" and driver in ("psycopg2", "psycopg", ""):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend in ("mysql", "mariadb"):
        parsed = parsed.set(drivername=f"{backend}+pymysql")
    return parsed.render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def dialect_of(engine_or_conn: Engine | Connection) -> str:
    """``sqlite``, ``postgresql`` or ``mysql`` (MariaDB reports as mysql)."""
    name = engine_or_conn.dialect.name
    return "mysql" if name in ("mysql", "mariadb") else name


def make_engine(url: str, *, pool_size: int = 8) -> Engine:
    """Create an engine for ``url`` with the robot's per-backend settings."""
    url = normalize_url(url)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = _sqlite_engine(url)
    elif backend == "postgresql":
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args={
                "options": f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}"
                f" -c idle_in_transaction_session_timeout={PG_IDLE_IN_TX_TIMEOUT_MS}"
                " -c synchronous_commit=on",
                "connect_timeout": 10,
            },
        )
    else:
        engine = _mysql_engine(url, pool_size)
    # The first commit listener: statements run as a transaction commits belong to it, and
    # any listener registered later (a recorder, a test's) sees them before the commit.
    listen_once(engine, "commit", _run_before_commit)
    _watch_writes(engine)
    return engine


def _mysql_engine(url: str, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        isolation_level="READ COMMITTED",
        connect_args={"connect_timeout": 10, "charset": "utf8mb4"},
    )

    @event.listens_for(engine, "connect")
    def _mysql_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("SET SESSION innodb_lock_wait_timeout = 30")
        cur.execute("SET SESSION time_zone = '+00:00'")
        cur.close()

    return engine


def _sqlite_engine(url: str) -> Engine:
    if sqlite3.sqlite_version_info < SQLITE_MIN:
        raise Fatal(
            f"SQLite {sqlite3.sqlite_version} is too old: the robot needs >= 3.35 (RETURNING)"
        )
    parsed = make_url(url)
    memory = parsed.database in (None, "", ":memory:")
    path = None if memory else os.path.abspath(str(parsed.database))
    engine = create_engine(
        url,
        # One pooled connection (opening one costs the PRAGMAs and a WAL check), lent to one
        # thread at a time. Every transaction here is BEGIN IMMEDIATE, one writer at a time:
        # threads that queued on SQLite's own lock waited in its busy handler, which sleeps
        # 1, 2, 5 ... up to 100 ms between tries, so under load the lock sat free while the
        # next writer slept. Queued on the pool instead, the next thread takes the
        # connection the moment it is returned. (Other processes, such as CLI commands,
        # still meet the busy handler; the daemon is the only long-lived writer.)
        poolclass=QueuePool if not memory else None,
        **({"pool_size": 1, "max_overflow": 0, "pool_timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
           if not memory else {}),
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_conn: Any, record: Any) -> None:
        # Take transaction control away from the sqlite3 module: we issue BEGIN ourselves.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
        if path is not None:
            record.info["sqlite_file"] = _file_id(path)

    if path is not None:

        @event.listens_for(engine, "checkout")
        def _sqlite_still_there(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
            # A pooled connection keeps writing to its open file even after the file was
            # moved or deleted (those writes would be lost): check it is still the file at
            # the configured path, else reconnect (which fails loudly if it is gone).
            if record.info.get("sqlite_file") != _file_id(path):
                raise DisconnectionError("the SQLite file was moved, replaced or deleted")

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        # On the driver's cursor like robot.db.write (same events, same error handling):
        # every transaction runs it, and exec_driver_sql's execution context cost ~45 us.
        _on_cursor(conn, "BEGIN IMMEDIATE", ())

    return engine


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_durability(engine: Engine) -> None:
    """Refuse to run where a committed claim might not survive a power loss."""
    dialect = dialect_of(engine)
    with engine.connect() as conn:
        if dialect == "postgresql":
            value = conn.execute(text("SHOW synchronous_commit")).scalar_one()
            if str(value).lower() == "off":
                raise Fatal(
                    "PostgreSQL synchronous_commit is off: a crash could undo a claim whose code "
                    "a buyer already has. Turn it on for the robot's database or role."
                )
        elif dialect == "sqlite":
            value = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
            if int(value) < 2:
                raise Fatal("SQLite synchronous is below FULL; refusing to run")


def bulk_insert(conn: Connection, table: Table, columns: Sequence[str],
                rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows`` (tuples in ``columns`` order) in the connection's transaction, through
    the driver: ``COPY … FROM STDIN`` on PostgreSQL, one ``executemany`` elsewhere.

    For imports of a million codes, where SQLAlchemy's per-value parameter handling cost more
    than the database. Values pass each column type's bind processor as usual; a constraint
    violation raises SQLAlchemy's :class:`IntegrityError` like ``conn.execute`` would.
    """
    if not rows:
        return
    dialect = conn.dialect
    rows = _bound(dialect, table, columns, rows)
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    if dialect_of(conn) == "postgresql":
        sql = f"COPY {quote(table.name)} ({names}) FROM STDIN"
        dbapi_conn = conn.connection.driver_connection
        try:
            with dbapi_conn.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[union-attr]
                for row in rows:
                    copy.write_row(row)
        except dialect.loaded_dbapi.IntegrityError as exc:
            raise IntegrityError(sql, None, exc) from exc
        return
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {quote(table.name)} ({names}) "  # noqa: S608 - quoted names, bound values
           f"VALUES ({', '.join([mark] * len(columns))})")
    conn.exec_driver_sql(sql, list(rows))


def _bound(dialect: Dialect, table: Table, columns: Sequence[str],
           rows: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
    """``rows`` with each value through its column type's bind processor (memoized per
    column: an import's timestamps repeat). Binary columns are left as they are: their
    processor only wraps bytes in ``dbapi.Binary``, and every driver here takes bytes."""
    procs = [(i, f) for i, name in enumerate(columns)
             if not isinstance(table.c[name].type, LargeBinary)
             and (f := table.c[name].type._cached_bind_processor(dialect)) is not None]  # noqa: SLF001 - SQLAlchemy's per-dialect memo of bind_processor; the public call rebuilds it per row
    if not procs:
        return rows
    memo: list[dict[Any, Any]] = [{} for _ in procs]
    out = []
    for row in rows:
        values = list(row)
        for (i, f), seen in zip(procs, memo, strict=True):
            v = values[i]
            if v is not None:
                done = seen.get(v)
                if done is None:
                    done = seen[v] = f(v)
                values[i] = done
        out.append(tuple(values))
    return out


@dataclass(frozen=True)
class Written:
    """What a write through :func:`write` tells: rows matched, and an insert's new id."""

    rowcount: int
    inserted_primary_key: tuple[Any, ...] | None


#: Per (statement, dialect, parameter names): its SQL text, bind names in order (None for
#: named parameters), the compiled form, its bind processors, and where each driver
#: parameter's value comes from (:data:`_Source`; None: SQLAlchemy's ``construct_params``
#: each time) — or None where SQLAlchemy must run the statement.
_Plan = tuple[str, Sequence[str] | None, Any, Any, "tuple[_Source, ...] | None"]
#: One driver parameter: its name, the caller's key that gives its value (None: the
#: statement's own constant, already processed), that constant, the value's bind processor.
_Source = tuple[str, str | None, Any, Any]
_PLANS: dict[tuple[Any, ...], _Plan | None] = {}
_PLANS_MAX = 512
_LASTROWID = frozenset({"sqlite", "mysql", "mariadb"})


def write(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> Written:
    """Run one single-row INSERT / UPDATE / DELETE built once (bound parameters only) in
    the caller's transaction, as ``conn.execute(stmt, params)`` would.

    SQLAlchemy's execution costs more than many a write itself (its execution context and
    result, 10-60 us of CPU a statement): here the statement is compiled once by
    SQLAlchemy for the connection's dialect (same SQL, same type processing of every value)
    and run on the driver's cursor (sqlite3, psycopg, PyMySQL), with the engine's
    ``before_cursor_execute`` / ``after_cursor_execute`` events fired and a driver error
    wrapped and reported (``handle_error``) as SQLAlchemy does. Statements with expanding or
    Python-computed values, an insert whose new key neither the driver (``lastrowid``), nor
    the statement's RETURNING of the key (PostgreSQL), nor the parameters tell, and a
    connection outside a transaction go through ``conn.execute`` unchanged.
    """
    plan = _driver_plan(conn, stmt, params)
    key_from: str | None = None
    if plan is not None and plan[2].isinsert:
        key_from = _key_source(conn, plan[2], params)
        if key_from is None:
            plan = None
    if plan is None:
        result = conn.execute(stmt, dict(params))
        key = result.inserted_primary_key if result.context.isinsert else None
        return Written(result.rowcount, None if key is None else tuple(key))
    cursor = _on_cursor(conn, plan[0], _args(plan, params), keep=True)
    try:  # read before closing: some drivers forget both on close
        if key_from == "returning":
            row = cursor.fetchone()
            return Written(cursor.rowcount, None if row is None else tuple(row))
        if key_from == "lastrowid":
            return Written(cursor.rowcount, (cursor.lastrowid,))
        if key_from == "params":
            table = plan[2].statement.table
            return Written(cursor.rowcount, tuple(params[c.key] for c in table.primary_key))
        return Written(cursor.rowcount, None)
    finally:
        cursor.close()


def _key_source(conn: Connection, compiled: Any, params: Mapping[str, Any]) -> str | None:
    """Where an insert's new primary key comes from on the driver's path: the statement's
    RETURNING of it, the parameters (a key given whole), or the driver's ``lastrowid``
    (SQLite, MySQL); None when from none of them (SQLAlchemy runs the insert)."""
    if compiled.effective_returning:
        return "returning"
    if all(c.key in params for c in compiled.statement.table.primary_key):
        return "params"
    if conn.dialect.name in _LASTROWID:
        return "lastrowid"
    return None


def write_many(conn: Connection, stmt: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run an INSERT built once for every row of ``rows`` (one ``executemany``) in the
    caller's transaction, as ``conn.execute(stmt, rows)`` would (every row or an error).

    Every row must name the same columns. On the driver's cursor as :func:`write` does (the
    same compiled SQL and value processing, the same engine events and error wrapping);
    a statement SQLAlchemy must run goes through ``conn.execute`` unchanged."""
    if not rows:
        return
    first = rows[0]
    keys = set(first)
    if any(set(row) != keys for row in rows):
        raise ValueError("write_many: every row must name the same columns")
    plan = _driver_plan(conn, stmt, first)
    if plan is not None and plan[2].effective_returning:
        plan = None  # an executemany with RETURNING: SQLAlchemy's insertmanyvalues
    if plan is None or len(rows) == 1:
        if plan is not None:
            write(conn, stmt, first)
        else:
            conn.execute(stmt, [dict(r) for r in rows])
        return
    _on_cursor(conn, plan[0], [_args(plan, row) for row in rows], many=True)


def read(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> list[Any]:
    """Every row of a SELECT (or of a write's RETURNING) built once with bound parameters
    only, in the caller's transaction, as ``conn.execute(stmt, params).all()`` would.

    On the driver's cursor like :func:`write`: compiled once, each value through its type's
    bind processor, each column of the result through its type's result processor; rows
    are named tuples (``row.column``, ``row[0]``, ``row._mapping``). For statements
    SQLAlchemy must run (expanding parameters and the like), SQLAlchemy's own rows."""
    plan = _driver_plan(conn, stmt, params)
    if plan is None:
        return list(conn.execute(stmt, dict(params)).all())
    sql, compiled = plan[0], plan[2]
    cursor = _on_cursor(conn, sql, _args(plan, params), keep=True)
    try:
        fetched = cursor.fetchall()
        shape = _shape(compiled, cursor.description)
    finally:
        cursor.close()
    make, results = shape
    if results:
        return [make(*(f(v) if f is not None else v for f, v in zip(results, r, strict=True)))
                for r in fetched]
    return [make(*r) for r in fetched]


def first(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> Any | None:
    """The first row of :func:`read`, or None."""
    got = read(conn, stmt, params)
    return got[0] if got else None


class _Row(tuple):  # type: ignore[type-arg]
    """Base of :func:`read`'s named tuples: adds SQLAlchemy's ``row._mapping``."""

    __slots__ = ()
    _fields: tuple[str, ...]

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))


#: Per compiled statement: the row class and the result processors of its columns.
_SHAPES: dict[Any, tuple[Any, list[Any] | None]] = {}


def _shape(compiled: Any, description: Any) -> tuple[Any, list[Any] | None]:
    got = _SHAPES.get(compiled)
    if got is not None:
        return got
    names = tuple(str(d[0]) for d in description or ())
    cls = namedtuple("Row", list(names), rename=True)  # type: ignore[misc]
    make = type("Row", (_Row, cls), {"__slots__": ()})
    columns = getattr(compiled, "_result_columns", None) or []
    procs: list[Any] | None = None
    if len(columns) == len(names):
        dialect = compiled.dialect
        procs = [c[3]._cached_result_processor(dialect, None) for c in columns]  # noqa: SLF001 - SQLAlchemy's per-dialect memo
        if not any(procs):
            procs = None
    shape = (make, procs)
    if len(_SHAPES) < _PLANS_MAX:
        _SHAPES[compiled] = shape
    return shape


def _on_cursor(conn: Connection, sql: str, args: Any, *, many: bool = False,
               keep: bool = False) -> Any:
    """Run ``sql`` on the connection's driver cursor with the engine's cursor events and
    SQLAlchemy's error handling; the cursor (closed unless ``keep``)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for listener in conn.dispatch.before_cursor_execute:
            sql, args = listener(conn, cursor, sql, args, None, many)
        if many:
            cursor.executemany(sql, args)
        else:
            cursor.execute(sql, args)
        conn.dispatch.after_cursor_execute(conn, cursor, sql, args, None, many)
    except BaseException as exc:  # as SQLAlchemy does: wrapped if the driver's, reported
        cursor.close()
        conn._handle_dbapi_exception(exc, sql, args, cursor, None)  # noqa: SLF001
        raise  # (not reached: the line above raises)
    if not keep:
        cursor.close()
    return cursor


def _returns_at_most_the_key(compiled: Any) -> bool:
    """No RETURNING, or an insert's implicit RETURNING of its table's primary key (the new
    id on PostgreSQL). A text statement's own RETURNING is its SQL: :func:`read` runs it."""
    returning = compiled.effective_returning
    if not returning:
        return True
    return bool(compiled.isinsert) and \
        [c.key for c in returning] == [c.key for c in compiled.statement.table.primary_key]


def _driver_plan(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> _Plan | None:
    """The statement's plan for the driver's cursor, or None where SQLAlchemy must run it
    (outside a transaction, with SQL echo on, or a statement :func:`_plan` refuses)."""
    if not conn.in_transaction() or conn._echo:  # noqa: SLF001
        return None
    return _plan(conn, stmt, params)


def _args(plan: _Plan, params: Mapping[str, Any]) -> Any:
    """The driver's parameters for one execution: each value through its type's bind
    processor, in the compiled statement's order (positional styles) or by name."""
    _sql, names, compiled, processors, sources = plan
    if sources is not None:
        if names is None:
            return {n: (c if k is None else f(params[k]) if f is not None else params[k])
                    for n, k, c, f in sources}
        return tuple(c if k is None else f(params[k]) if f is not None else params[k]
                     for _n, k, c, f in sources)
    values = compiled.construct_params(dict(params), _check=False)
    if names is None:
        return {n: processors[n](v) if n in processors else v for n, v in values.items()}
    return tuple(processors[n](values[n]) if n in processors else values[n] for n in names)


def plan_key(dialect: Dialect, stmt: Any, names: Sequence[str]) -> tuple[Any, ...]:
    """The key of a statement's plan: what its compiled SQL depends on (the dialect and
    its driver, MariaDB or MySQL, the server's version) and the parameters given."""
    return (stmt, dialect.name, dialect.driver, getattr(dialect, "is_mariadb", False),
            dialect.server_version_info, tuple(names))


def _plan(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> _Plan | None:
    key = plan_key(conn.dialect, stmt, tuple(params))
    try:
        return _PLANS[key]
    except KeyError:
        pass
    compiled = stmt.compile(dialect=conn.dialect, column_keys=sorted(params))
    plain = (not (compiled.insert_prefetch or compiled.update_prefetch
                  or compiled.literal_execute_params or compiled.post_compile_params)
             and _returns_at_most_the_key(compiled)
             and not any(b.expanding for b in compiled.binds.values())
             and (compiled.positiontup is not None
                  or conn.dialect.paramstyle in ("named", "pyformat")))
    names = None if compiled.positiontup is None else tuple(compiled.positiontup)
    plan = (compiled.string, names, compiled, compiled._bind_processors,  # noqa: SLF001
            _sources(compiled, names, params)) if plain else None
    if len(_PLANS) < _PLANS_MAX:
        _PLANS[key] = plan
    return plan


def _sources(compiled: Any, names: Sequence[str] | None,
             params: Mapping[str, Any]) -> tuple[_Source, ...] | None:
    """Where each driver parameter's value comes from, worked out once per plan as
    SQLAlchemy's ``construct_params`` does on every call (a bind's key in the caller's
    parameters, else its name, else the statement's own value); None where only it can
    (a value computed when run, a required value the caller left out)."""
    if getattr(compiled, "_render_postcompile", False):
        return None
    collected = getattr(compiled, "_collected_params", None) or {}  # a statement's .params()
    escaped = compiled.escaped_bind_names or {}
    processors = compiled._bind_processors  # noqa: SLF001 - SQLAlchemy's per-dialect memo
    found: dict[str, _Source] = {}
    for bind, name in compiled.bind_names.items():
        out = escaped.get(name, name)
        proc = processors.get(out)
        if bind.key in params:
            found[out] = (out, bind.key, None, proc)
        elif name in params:
            found[out] = (out, name, None, proc)
        elif bind.key in collected or name in collected:
            value = collected[bind.key if bind.key in collected else name]
            found[out] = (out, None, value if proc is None else proc(value), None)
        elif bind.required or bind.callable:
            return None
        else:
            found[out] = (out, None, bind.value if proc is None else proc(bind.value), None)
    order = list(found) if names is None else names
    if any(n not in found for n in order):
        return None
    return tuple(found[n] for n in order)


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One short transaction (BEGIN IMMEDIATE on SQLite); commits on success.

    Reports to the engine's :class:`robot.writes.WriteSignal`: a database failure as a
    failed write, a commit of a transaction that changed rows as a successful one.
    """
    try:
        with engine.begin() as conn:
            conn.info[_WROTE] = False
            yield conn
            wrote = bool(conn.info.get(_WROTE))
    except DBAPIError as exc:
        if writes.is_outage(exc):
            writes.signal_of(engine).failed(error_reason(exc))
        raise
    if wrote:
        writes.signal_of(engine).succeeded()


def before_commit(conn: Connection, fn: Callable[[Connection], None]) -> None:
    """Run ``fn(conn)`` inside the caller's transaction as it commits, after its last
    statement and before the commit's other listeners (not when it rolls back). A failure
    of ``fn`` fails the commit."""
    callbacks: list[Callable[[Connection], None]] | None = tx_value(conn, _BEFORE_COMMIT)
    if callbacks is None:
        callbacks = keep_for_tx(conn, _BEFORE_COMMIT, [])
    callbacks.append(fn)
    listen_once(conn.engine, "commit", _run_before_commit)  # an engine not from make_engine


def _run_before_commit(conn: Connection) -> None:
    for fn in pop_tx_value(conn, _BEFORE_COMMIT) or ():
        fn(conn)


def keep_for_tx(conn: Connection, key: str, value: _T) -> _T:
    """Keep ``value`` in ``conn.info[key]`` for the connection's current transaction only
    (:func:`tx_value`); returns it."""
    conn.info[key] = (conn.get_transaction(), value)
    return value


def tx_value(conn: Connection, key: str) -> Any | None:
    """What :func:`keep_for_tx` kept under ``key`` for the current transaction; None when
    nothing was kept, or only for an earlier transaction of the connection (one that
    rolled back before anyone took the value out)."""
    held = conn.info.get(key)
    if held is not None and held[0] is conn.get_transaction():
        return held[1]
    return None


def pop_tx_value(conn: Connection, key: str) -> Any | None:
    """:func:`tx_value`, taken out of ``conn.info`` (whatever transaction it was for)."""
    held = conn.info.pop(key, None)
    if held is not None and held[0] is conn.get_transaction():
        return held[1]
    return None


def listen_once(engine: Engine, name: str, fn: Callable[..., Any]) -> None:
    """``event.listen(engine, name, fn)`` unless already done (cheap to call on a hot path)."""
    key = (name, fn)
    if key in _LISTENING.get(engine, ()):
        return
    with _LISTENING_LOCK:
        done = _LISTENING.setdefault(engine, set())
        if key not in done:
            event.listen(engine, name, fn)
            done.add(key)


_BEFORE_COMMIT = "robot_before_commit"  # Connection.info key (keep_for_tx): the callbacks
_LISTENING: weakref.WeakKeyDictionary[Engine, set[tuple[str, Any]]] = \
    weakref.WeakKeyDictionary()
_LISTENING_LOCK = threading.Lock()


_WROTE = "robot_wrote"  # Connection.info key: the transaction changed rows
_CHANGE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE")
#: Statements whose failure is a failed write (SQLite's BEGIN IMMEDIATE takes the write lock).
_WRITE_VERBS = (*_CHANGE_VERBS, "BEGIN IMMEDIATE")


def _starts(statement: str | None, verbs: tuple[str, ...]) -> bool:
    return statement is not None and statement.lstrip()[:15].upper().startswith(verbs)


def _watch_writes(engine: Engine) -> None:
    """Mark connections that changed rows; report failing writes to the write signal."""

    @event.listens_for(engine, "after_cursor_execute")
    def _wrote(conn: Connection, _cursor: Any, statement: str, _params: Any, context: Any,
               _many: bool) -> None:
        changed = context is not None and (context.isinsert or context.isupdate
                                           or context.isdelete)
        if changed or _starts(statement, _CHANGE_VERBS):
            conn.info[_WROTE] = True

    @event.listens_for(engine, "handle_error")
    def _failed(context: Any) -> None:
        conn = context.connection
        # statement None: the commit (or rollback) itself failed
        wrote = conn is not None and not conn.invalidated and bool(conn.info.get(_WROTE))
        if (_starts(context.statement, _WRITE_VERBS) or (context.statement is None and wrote)) \
                and context.sqlalchemy_exception is not None \
                and writes.is_outage(context.sqlalchemy_exception):
            writes.signal_of(engine).failed(error_reason(context.sqlalchemy_exception))


def is_disk_full(exc: BaseException) -> bool:
    """Whether a driver error (or SQLAlchemy's wrapper of one) says the disk is full."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorcode", None) == SQLITE_FULL \
            or "database or disk is full" in str(orig)
    if getattr(orig, "sqlstate", None) == PG_DISK_FULL:
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in MYSQL_DISK_FULL


def error_reason(exc: BaseException, url: str | None = None) -> str:
    """One short line saying why a database call failed: no traceback, no password."""
    if is_disk_full(exc):
        return "the database's disk is full (database or disk is full)"
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    text = f"{type(orig).__name__}: {lines[0]}" if lines else type(orig).__name__
    password = _password(url)
    if password:
        text = text.replace(password, "***")
    return text[:REASON_MAX]


def _password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return make_url(url).password
    except ArgumentError:
        return None


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a driver or file error while opening ``url`` into one clear RobotError naming
    the database (password masked): :class:`DiskFull` or :class:`DatabaseUnavailable`."""
    try:
        yield
    except DBAPIError as exc:
        if is_disk_full(exc):
            raise DiskFull(f"database {safe_url(url)}: {error_reason(exc, url)}; free space "
                           "and try again") from exc
        raise DatabaseUnavailable(
            f"database {safe_url(url)} is unavailable: {error_reason(exc, url)}") from exc
    except OSError as exc:  # a SQLite directory that is missing or not writable
        raise DatabaseUnavailable(
            f"database {safe_url(url)} is unavailable: {type(exc).__name__}: "
            f"{exc.strerror or exc}") from exc


def _driver_errors() -> tuple[type[BaseException], ...]:
    """The drivers' own base exceptions (raised unwrapped by raw-connection work)."""
    found: list[type[BaseException]] = [sqlite3.Error]
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the driver is a dependency
        pass
    else:
        found.append(psycopg.Error)
    try:
        import pymysql
    except ImportError:  # pragma: no cover - the driver is a dependency
        pass
    else:
        found.append(pymysql.err.Error)
    return tuple(found)


def start_error_is_transient(exc: BaseException) -> bool:
    """Whether start-up should wait out ``exc`` as it waits out an absent database.

    Any driver error (a server down or restarting, a session killed under us, a connection
    reset, a full disk, a lock held too long) and the errors SQLAlchemy raises on a
    connection such an error left behind (a transaction that must be rolled back first, a
    closed result, a pool that gave no connection in time). Configuration, key and schema
    problems are not here: they need a person.
    """
    return isinstance(exc, (Unavailable, DBAPIError, DisconnectionError, PendingRollbackError,
                            ResourceClosedError, PoolTimeout, ConnectionError,
                            *_driver_errors()))
