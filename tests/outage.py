"""A database a test can take away and give back, on every backend.

SQLite: the database file lives in a directory of its own, which ``down()`` renames away
(the file is gone from where the robot looks) and ``up()`` renames back. Servers: the robot
reaches the server through a :class:`~tests.http.proxy.TcpProxy`; ``down()`` refuses and
drops every connection, ``up()`` accepts again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from robot.db import normalize_url
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
