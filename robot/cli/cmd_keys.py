"""``robot keys``: create the key file and show which keys the stored codes depend on.

The key file is the only way to read the codes; the database alone is useless to a thief, and
so is a backup of it without the key file. This module must never print key material (only
key ids) and never overwrite an existing key file.
"""

from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy import Connection, Table, func, select
from sqlalchemy.exc import SQLAlchemyError

from robot.cli.common import App, emit_json, json_option, print_table
from robot.errors import RobotError
from robot.log import scrub
from robot.schema import codes, shop_secrets
from robot.vault import init_key_file, load_key_ring

key_file_option = click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The key file to use instead of the one named by the config's key_file.",
)


def _key_path(app: App, key_file: Path | None) -> Path:
    return (key_file if key_file is not None else app.config.key_file).expanduser()


@click.group()
def keys() -> None:
    """Manage the key file that encrypts the card codes."""


@keys.command("init")
@key_file_option
@click.pass_obj
def init(app: App, key_file: Path | None) -> None:
    """Create a new key file (mode 0600); refuses to overwrite an existing one."""
    path = _key_path(app, key_file)
    init_key_file(path)
    click.echo(f"wrote a new key file: {path.absolute()}")
    click.echo(
        "WARNING: back this file up now, and keep that backup apart from the database's. "
        "Without this file nobody can read the codes, you included; "
        "the database alone is useless to a thief.",
        err=True,
    )


def _counts(conn: Connection, table: Table) -> dict[str, int]:
    rows = conn.execute(
        select(table.c.key_id, func.count()).group_by(table.c.key_id)
    ).all()
    return {str(kid): int(n) for kid, n in rows}


def _usage(app: App) -> tuple[dict[str, int], dict[str, int]] | str:
    """Codes and shop secrets per key id, or why the database could not be asked."""
    try:
        with app.engine.connect() as conn:
            return _counts(conn, codes), _counts(conn, shop_secrets)
    except (RobotError, SQLAlchemyError) as exc:
        # Driver messages can name the server; scrub keeps any password in a URL out.
        first_line = (str(exc).splitlines() or [""])[0]
        return scrub(f"{type(exc).__name__}: {first_line}")


@keys.command("status")
@key_file_option
@json_option
@click.pass_obj
def status(app: App, key_file: Path | None, as_json: bool) -> None:
    """Show the key ids in the key file, the current one, and what each one encrypts."""
    path = _key_path(app, key_file)
    ring = load_key_ring(path)
    usage = _usage(app)
    if isinstance(usage, str):
        code_counts: dict[str, int] | None = None
        secret_counts: dict[str, int] | None = None
        db_error: str | None = usage
    else:
        code_counts, secret_counts = usage
        db_error = None
    # Key ids the database uses that the file lacks: those rows cannot be decrypted.
    missing = sorted(
        (set(code_counts or {}) | set(secret_counts or {})) - set(ring.keys)
    )
    key_rows = [
        {
            "key_id": kid,
            "current": kid == ring.current,
            "in_key_file": kid in ring.keys,
            "codes": None if code_counts is None else code_counts.get(kid, 0),
            "secrets": None if secret_counts is None else secret_counts.get(kid, 0),
        }
        for kid in [*ring.keys, *missing]
    ]
    if as_json:
        emit_json({
            "key_file": str(path),
            "current": ring.current,
            "keys": key_rows,
            "missing_key_ids": missing,
            "database_error": db_error,
        })
        return
    print_table(
        app,
        f"key file {path}",
        ["key id", "current", "in key file", "codes", "shop secrets"],
        [
            [
                r["key_id"],
                "yes" if r["current"] else "",
                "yes" if r["in_key_file"] else "MISSING",
                "?" if r["codes"] is None else r["codes"],
                "?" if r["secrets"] is None else r["secrets"],
            ]
            for r in key_rows
        ],
    )
    if db_error is not None:
        click.echo(f"database not checked: {db_error}", err=True)
    if missing:
        click.echo(
            "WARNING: rows are encrypted under key id(s) the key file lacks: "
            f"{', '.join(missing)}; restore the key file from its backup.",
            err=True,
        )


COMMANDS: list[click.Command] = [keys]
