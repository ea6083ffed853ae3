"""``robot db …``: the schema."""

from __future__ import annotations

import click

from robot.cli.common import App
from robot.db import make_engine, safe_url
from robot.migrate import current_revision, head_revision, upgrade


@click.group("db")
def db_group() -> None:
    """Database schema management."""


@db_group.command("upgrade")
@click.pass_obj
def upgrade_cmd(app: App) -> None:
    """Bring the database schema up to date (``robot run`` also does this on start)."""
    engine = make_engine(app.config.database)
    before = current_revision(engine)
    upgrade(engine)
    after = current_revision(engine)
    click.echo(f"{safe_url(app.config.database)}: schema {before or 'empty'} -> {after}")
    engine.dispose()


@db_group.command("status")
@click.pass_obj
def status_cmd(app: App) -> None:
    """Show the schema revision in the database and the one this robot ships."""
    engine = make_engine(app.config.database)
    click.echo(f"database: {current_revision(engine) or 'empty'}; this robot: {head_revision()}")
    engine.dispose()


COMMANDS: list[click.Command] = [db_group]
