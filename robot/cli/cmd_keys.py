"""``robot keys``: create the key file, show which keys the stored codes depend on, rotate.

The key file is the only way to read the codes; the database alone is useless to a thief, and
so is a backup of it without the key file. This module must never print key material (only
key ids) and never overwrite an existing key file.
"""

from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy import Connection, Table, func, select
from sqlalchemy.exc import SQLAlchemyError

from robot.cli.common import App, actor, emit_json, json_option, print_table
from robot.errors import RobotError, VaultError
from robot.keys import lost_key_file
from robot.log import scrub
from robot.schema import codes, shop_secrets
from robot.vault import init_key_file, load_key_ring, open_vault

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
    """Create a new key file (mode 0600); refuses to overwrite an existing one, and refuses
    while the database holds codes, secrets or audit entries that need another key file."""
    from robot.keys import refuse_new_key_file

    path = _key_path(app, key_file)
    # With --key-file and no robot file yet (setting up) there is no database to ask.
    known = app.has_database() if key_file is None else app.has_database(optional=True)
    if not path.exists() and known:
        refuse_new_key_file(app.engine, path)
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


def _old_binding(app: App) -> int | None:
    """Codes whose ciphertext does not bind their own id yet (None: not counted)."""
    from robot.keys import old_binding

    try:
        with app.engine.connect() as conn:
            return old_binding(conn)
    except SQLAlchemyError:
        return None


@keys.command("status")
@key_file_option
@json_option
@click.pass_obj
def status(app: App, key_file: Path | None, as_json: bool) -> None:
    """Show the key ids in the key file, the current one, and what each one encrypts; exit
    non-zero when the key file does not fit the database (the check `robot run` makes)."""
    path = _key_path(app, key_file)
    if not path.exists() and app.has_database():
        lost = lost_key_file(app.engine, path)
        if lost is not None:
            raise lost
    ring = load_key_ring(path)
    usage = _usage(app)
    key_error = None if isinstance(usage, str) else _key_check(app, path)
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
    # An unfinished rotation: rows under an old key, or an old key not yet retired.
    unfinished = db_error is None and (
        any(kid != ring.current for kid in (*(code_counts or {}), *(secret_counts or {})))
        or len(ring.keys) > 1)
    old_binding = _old_binding(app) if db_error is None else None
    unfinished = unfinished or bool(old_binding)
    if as_json:
        emit_json({
            "key_file": str(path),
            "current": ring.current,
            "keys": key_rows,
            "missing_key_ids": missing,
            "rotation_unfinished": unfinished,
            "codes_on_old_binding": old_binding,
            "database_error": db_error,
            "key_check": "not run" if db_error else (key_error or "ok"),
        })
        if key_error is not None:
            raise VaultError(key_error)
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
    if old_binding:
        click.echo(f"{old_binding} code(s) are on the old binding (their ciphertext does not "
                   "bind their id yet): the robot re-binds them at start, or run "
                   "`robot keys rotate`", err=True)
    if unfinished and not missing:
        click.echo("a key rotation is unfinished: run `robot keys rotate` to finish it "
                   "(re-encrypt and retire the old key)", err=True)
    if missing:
        click.echo(
            "WARNING: rows are encrypted under key id(s) the key file lacks: "
            f"{', '.join(missing)}; restore the key file from its backup.",
            err=True,
        )
    if key_error is not None:
        raise VaultError(key_error)


def _key_check(app: App, path: Path) -> str | None:
    """Open the key file and check it against the database as `robot run` does at start."""
    from robot.keys import check_keys

    try:
        check_keys(app.engine, open_vault(path))
    except VaultError as exc:
        return exc.message
    return None


@keys.command("rotate")
@key_file_option
@click.option("--new-key", is_flag=True,
              help="Start another rotation even if an earlier one is unfinished.")
@click.option("--batch", type=click.IntRange(min=1), default=500, show_default=True,
              help="Codes re-encrypted per transaction.")
@click.option("--keep-old", is_flag=True,
              help="Do not retire the old key at the end (`robot keys retire` does it later).")
@json_option
@click.pass_obj
def rotate(app: App, key_file: Path | None, new_key: bool, batch: int, keep_old: bool,
           as_json: bool) -> None:
    """Make a new key current, re-encrypt every code and secret under it, retire the old one.

    Safe while the robot runs (it follows the key file) and resumable: run it again after an
    interruption and it finishes the unfinished rotation instead of adding another key.
    """
    from robot.keys import rotate as do_rotate

    path = _key_path(app, key_file)

    def progress(done: int) -> None:
        if not as_json:
            click.echo(f"re-encrypted {done} code(s)", err=True)

    report = do_rotate(path, app.engine, actor=actor(), new_key=new_key, batch=batch,
                       retire_old=not keep_old, on_batch=progress)
    if as_json:
        emit_json(report.as_dict())
        return
    if report.new_key is not None:
        click.echo(f"new current key: {report.new_key}")
    else:
        click.echo(f"finished the unfinished rotation to key {report.current}")
    click.echo(f"re-encrypted {report.codes} code(s) and {report.secrets} shop secret(s)")
    if report.retired:
        click.echo(f"retired key(s): {', '.join(report.retired)}")
    if report.blocked:
        click.echo(f"old key(s) kept: {report.blocked}", err=True)
    click.echo("back the key file up again now: the new key is in it.", err=True)


@keys.command("retire")
@key_file_option
@click.argument("key_id")
@click.pass_obj
def retire(app: App, key_file: Path | None, key_id: str) -> None:
    """Remove an old key from the key file; refuses while any code or secret uses it."""
    from robot.keys import retire as do_retire

    do_retire(_key_path(app, key_file), app.engine, key_id, actor=actor())
    click.echo(f"retired key {key_id}")


COMMANDS: list[click.Command] = [keys]
