"""What every command shares: the lazily built application context and output helpers."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from robot.errors import ConfigError, Fatal, RobotError, UserError

if TYPE_CHECKING:
    from robot.config import RobotConfig
    from robot.vault import Vault

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER = 1
EXIT_CONFIG = 2
EXIT_FATAL = 3


@dataclass
class App:
    """Built once per command; each part is loaded only when a command needs it."""

    config_path: Path
    _engine: Engine | None = field(default=None, init=False)

    @cached_property
    def config(self) -> RobotConfig:
        from robot.config import load_config

        return load_config(self.config_path)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from robot.db import database_errors, make_engine
            from robot.migrate import upgrade

            url = self.config.database
            with database_errors(url):  # one clear line naming the database, not a traceback
                engine = make_engine(url)
                try:
                    upgrade(engine)
                    # Audit entries are sealed with the key file, read when one is written.
                    from robot import audit

                    audit.bind(engine, self.config.key_file)
                except BaseException:
                    engine.dispose()
                    raise
            self._engine = engine
        return self._engine

    def has_database(self, *, optional: bool = False) -> bool:
        """Whether there is a database to ask (a SQLite file not created yet is none).

        ``optional``: a robot file that does not exist yet means no database either (a
        command given everything it needs on its command line), instead of an error.
        """
        if self._engine is not None:
            return True
        if optional and not self.config_path.exists() and "config" not in self.__dict__:
            return False
        return missing_sqlite_file(self.config.database) is None

    def close(self) -> None:
        """Close the database connections this command opened (the engine stays usable)."""
        if self._engine is not None:
            from robot import audit

            audit.checkpoint_due(self._engine, every=0.0)  # what this command appended
            self._engine.dispose()

    @cached_property
    def zone(self) -> tzinfo:
        """The robot file's ``timezone:``: every time shown and every day boundary."""
        from robot.config import zone

        return zone(self.config.timezone)

    def time(self, value: datetime | None, *, empty: str = "") -> str:
        """A stored time as people read it: in :attr:`zone`, to the second."""
        from robot.display import format_time

        return format_time(value, zone=self.zone, empty=empty)

    @cached_property
    def vault(self) -> Vault:
        from robot.vault import open_vault

        return open_vault(self.config.key_file)

    @cached_property
    def console(self) -> Console:
        return Console()


def missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file ``url`` points at, if it does not exist yet (connecting would create it)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def actor() -> str:
    """Who is running this command, for the audit log."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"cli:{user}"


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def emit_json(data: Any, zone: tzinfo | None = None) -> None:
    """One JSON document; times in it as ISO 8601 with the offset of ``zone`` (pass
    ``app.zone``; UTC when None), whole seconds."""
    from robot.display import json_times

    click.echo(json.dumps(json_times(data, zone), ensure_ascii=False, indent=2, default=str))


def print_table(app: App, title: str, columns: Sequence[str],
                rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    app.console.print(table)


def run_guarded(command: click.Group) -> int:
    """Run the CLI; turn robot errors into one line on stderr and an exit status."""
    try:
        # In non-standalone mode click *returns* the code of ctx.exit(n) / Exit(n).
        returned = command.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_USER
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        return EXIT_CONFIG
    except UserError as exc:
        click.echo(f"error: {exc.message}", err=True)
        return EXIT_USER
    except Fatal as exc:
        click.echo(f"fatal: {exc.message}", err=True)
        return EXIT_FATAL
    except RobotError as exc:
        click.echo(f"error: {exc.message}", err=True)
        return EXIT_USER
    except DBAPIError as exc:  # a database failure in mid-command (disk full, server gone)
        from robot.db import error_reason

        click.echo(f"error: database: {error_reason(exc)}; nothing more was done", err=True)
        return EXIT_FATAL
    return returned if isinstance(returned, int) and not isinstance(returned, bool) else 0


def is_terminal() -> bool:
    return sys.stdout.isatty()
