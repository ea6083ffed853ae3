"""Shared fixtures: a fresh database per test on every backend the environment provides.

SQLite always runs. PostgreSQL and MariaDB/MySQL run when ``ROBOT_TEST_PG_URL`` /
``ROBOT_TEST_MYSQL_URL`` are set; with ``ROBOT_TEST_REQUIRE_SERVERS=1`` (as ``.ci/run``
sets) an unreachable server is a failure, never a skip.

Each test session creates its own throw-away database on each server (``robot_t_<random>``),
so concurrent runs never see each other's rows; each test starts from empty tables.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from robot import audit
from robot.db import make_engine, normalize_url
from robot.log import configure_logging
from robot.schema import metadata
from robot.vault import Vault, init_key_file, open_vault

SERVER_ENV = {"postgresql": "ROBOT_TEST_PG_URL", "mysql": "ROBOT_TEST_MYSQL_URL"}


def _server_urls() -> dict[str, str]:
    return {name: os.environ[var] for name, var in SERVER_ENV.items() if os.environ.get(var)}


def backends() -> list[str]:
    return ["sqlite", *_server_urls()]


def _require_servers() -> bool:
    return os.environ.get("ROBOT_TEST_REQUIRE_SERVERS") == "1"


class ServerDatabases:
    """Creates one scratch database per server for this session and drops it at the end."""

    def __init__(self) -> None:
        self.urls: dict[tuple[str, str], str] = {}

    def url_for(self, backend: str, purpose: str = "main") -> str:
        """The session's scratch database on ``backend`` for ``purpose`` (created once)."""
        key = (backend, purpose)
        if key in self.urls:
            return self.urls[key]
        base = normalize_url(_server_urls()[backend])
        name = f"robot_t_{secrets.token_hex(4)}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                if backend == "postgresql":
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                else:
                    conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        except Exception as exc:
            msg = f"{backend} server at {make_url(base).render_as_string()} is unreachable: {exc}"
            if _require_servers():
                pytest.fail(msg)
            pytest.skip(msg)
        finally:
            admin.dispose()
        self.urls[key] = make_url(base).set(database=name).render_as_string(hide_password=False)
        return self.urls[key]

    def drop_all(self) -> None:
        for (backend, _purpose), url in self.urls.items():
            name = make_url(url).database
            base = normalize_url(_server_urls()[backend])
            admin = create_engine(base, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                if backend == "postgresql":
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                else:
                    conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            admin.dispose()


@pytest.fixture(scope="session")
def server_databases() -> Iterator[ServerDatabases]:
    dbs = ServerDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(params=backends())
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test: sqlite, postgresql or mysql."""
    return str(request.param)


@pytest.fixture
def db_url(backend: str, server_databases: ServerDatabases, tmp_path: Path) -> str:
    """A database URL with the robot's schema and empty tables."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'robot.db'}"
    else:
        url = server_databases.url_for(backend)
    engine = make_engine(url)
    try:
        if backend == "sqlite":
            metadata.create_all(engine)
        else:
            _reset_server_schema(engine)
        with engine.begin() as conn:
            audit.ensure_head(conn)
    finally:
        engine.dispose()
    return url


_schema_ready: set[str] = set()


def _reset_server_schema(engine: Engine) -> None:
    key = engine.url.render_as_string(hide_password=False)
    if key not in _schema_ready:
        metadata.drop_all(engine)
        metadata.create_all(engine)
        _schema_ready.add(key)
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
            for table in reversed(metadata.sorted_tables):
                conn.execute(text(f"TRUNCATE TABLE `{table.name}`"))
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a fresh database (every supported backend)."""
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _test_key_file(tmp_path: Path) -> Path:
    """The test's key file (created on first use by whichever needs it first)."""
    path = tmp_path / "keys" / "robot.key"
    if not path.exists():
        init_key_file(path)
    return path


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return _test_key_file(tmp_path)


@pytest.fixture(autouse=True)
def audit_seal(tmp_path: Path) -> Iterator[None]:
    """Engines a test makes itself seal the audit log with the test's key file (the robot
    binds its own engine to its configured key file)."""
    audit.bind_default(lambda: audit.Seal.from_key_file(_test_key_file(tmp_path)))
    yield
    audit.bind_default(None)


@pytest.fixture
def vault(key_file: Path) -> Vault:
    return open_vault(key_file)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The chaos suite runs last: it restarts the database servers the other tests use."""
    items.sort(key=lambda item: "tests/chaos/" in item.nodeid.replace("\\", "/"))


@pytest.fixture
def demo_logging() -> Iterator[None]:
    """A demo logs to a file of its own run and, when it closes it, to stderr again (errors
    only); afterwards a test's logging goes to a sink of its own (not stderr, which other
    tests read)."""
    yield
    configure_logging("info", "json", stream=io.StringIO())
