"""Whether the database takes the robot's writes: one signal per engine, shared by all.

A database can answer every read and refuse every write — a full disk, an I/O error (EIO),
a file system remounted read-only, a server that became a read-only replica — and
``SELECT 1`` stays green through all of it. So the places that write report here, and
``/healthz`` and the daemon read it:

* a write that failed (:meth:`WriteSignal.failed`): every :func:`robot.db.transaction` —
  which the poller's intake, the outbox, the allocator and the push intake write through —
  that ends in a database error, and any statement that changes rows (or the commit after
  one) failing on any connection of the engine (``handle_error``, installed by
  :func:`robot.db.make_engine`);
* a write that succeeded (:meth:`WriteSignal.succeeded`): a :func:`robot.db.transaction`
  that changed rows and committed.

"Failing" lasts from the first failed write to the next successful one. Errors about one
item rather than the database (a unique key already there, a value that does not fit, a
deadlock the caller retries) are not outages and are not reported (:func:`is_outage`).

This module never logs (the daemon logs an outage once when it starts and once when it
ends) and never touches the database.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from robot.clock import utcnow

#: SQLSTATEs of a transaction the server rolled back to resolve contention (PostgreSQL,
#: serialization failure and deadlock) and MySQL's deadlock error: retried, not an outage.
_CONTENTION_SQLSTATES = frozenset({"40001", "40P01"})
_MYSQL_DEADLOCK = 1213


@dataclass(frozen=True)
class WriteState:
    """What the signal says now."""

    failing: bool
    failed_at: datetime | None  # the first failure of the current (or last) outage
    recovered_at: datetime | None  # when the last outage ended
    reason: str | None  # one short line, as robot.db.error_reason gives it


class WriteSignal:
    """"Last write failed at / recovered at" for one engine; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = WriteState(False, None, None, None)

    def failed(self, reason: str, now: datetime | None = None) -> bool:
        """Record a failed write; True when this starts an outage."""
        with self._lock:
            if self._state.failing:
                return False
            self._state = WriteState(True, now or utcnow(), self._state.recovered_at, reason)
            return True

    def succeeded(self, now: datetime | None = None) -> bool:
        """Record a committed write; True when this ends an outage."""
        with self._lock:
            if not self._state.failing:
                return False
            self._state = WriteState(False, self._state.failed_at, now or utcnow(),
                                     self._state.reason)
            return True

    @property
    def failing(self) -> bool:
        return self._state.failing

    def state(self) -> WriteState:
        return self._state


_signals: weakref.WeakKeyDictionary[Engine, WriteSignal] = weakref.WeakKeyDictionary()
_signals_lock = threading.Lock()


def signal_of(engine: Engine) -> WriteSignal:
    """The engine's signal (made on first use)."""
    with _signals_lock:
        signal = _signals.get(engine)
        if signal is None:
            signal = _signals[engine] = WriteSignal()
        return signal


def is_outage(exc: BaseException) -> bool:
    """Whether a database error says the database is failing, not that one item is bad."""
    if not isinstance(exc, DBAPIError) or isinstance(exc, IntegrityError | DataError):
        return False
    return not is_contention(exc)


def is_contention(exc: BaseException) -> bool:
    """Whether the server rolled the whole transaction back to resolve contention with
    another one (a deadlock, a serialization failure): running it again is the remedy."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _CONTENTION_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    return isinstance(args, tuple) and bool(args) and args[0] == _MYSQL_DEADLOCK
