"""``robot config check`` and ``robot config show``: is the configuration right, and what is it.

``check`` loads the robot file and every shop file (all problems at once, exit status 2) and,
when the database already exists, checks that every pool the shops name exists. It never
creates a database file and never runs migrations. ``show`` prints the effective
configuration; it must never print a secret (every ``Secret`` shows as ``********``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from robot.cli.common import App, emit_json, json_option
from robot.config import RobotConfig, check_pools, effective_dict
from robot.db import make_engine, safe_url
from robot.errors import ConfigError, RobotError
from robot.schema import pools


def _missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file ``url`` points at, if it does not exist yet (connecting would create it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def _pool_names(config: RobotConfig) -> tuple[set[str] | None, str | None]:
    """The pool names in the database, or None and a note saying why they were not read."""
    missing = _missing_sqlite_file(config.database)
    if missing is not None:
        return None, f"database {missing} does not exist yet; pool names not checked"
    try:
        engine = make_engine(config.database)
    except RobotError as exc:
        return None, f"database not usable ({exc.message}); pool names not checked"
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(pools.name):
                return None, "database has no pools table yet; pool names not checked"
            from robot.pools import pool_names

            names = pool_names(conn)
    except SQLAlchemyError as exc:
        # The driver's text may quote the URL; name the error class and the masked URL only.
        return None, (
            f"database {safe_url(config.database)} unreachable ({type(exc).__name__}); "
            "pool names not checked"
        )
    finally:
        engine.dispose()
    return names, None


@click.group()
def config() -> None:
    """Check and show the robot's configuration."""


@config.command("check")
@json_option
@click.pass_obj
def check(app: App, as_json: bool) -> None:
    """Validate the robot file, every shop file, and the pools the shops name."""
    cfg = app.config  # raises ConfigError listing every problem
    names, note = _pool_names(cfg)
    if names is not None:
        problems = check_pools(cfg, names)
        if problems:
            raise ConfigError(problems)
    notes = [note] if note else []
    if not cfg.key_file.exists():
        notes.append(f"key file {cfg.key_file} does not exist yet; create it with: robot keys init")
    if as_json:
        checked = names is not None
        emit_json({"ok": True, "shops": len(cfg.shops), "pools_checked": checked, "notes": notes})
        return
    for line in notes:
        click.echo(f"note: {line}", err=True)
    click.echo(f"config OK: {len(cfg.shops)} shop(s)")


@config.command("show")
@json_option
@click.pass_obj
def show(app: App, as_json: bool) -> None:
    """Print the effective configuration (defaults applied, secrets masked)."""
    data: dict[str, Any] = effective_dict(app.config)
    if as_json:
        emit_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


COMMANDS: list[click.Command] = [config]
