"""``robot keys``: create the key file, show which keys the stored codes depend on, rotate.

The key file is the only way to read the codes; the database alone is useless to a thief, and
so is a backup of it without the key file. This module must never print key material (only
key ids) and never overwrite an existing key file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _KeyStatus:
    """What `robot keys status` found: the key file's keys against the database's use."""

    path: Path
    current: str
    key_rows: list[dict[str, object]]
    missing: list[str]
    unfinished: bool
    old_binding: int | None
    db_error: str | None
    key_error: str | None


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
    found = _key_status(app, path)
    if as_json:
        emit_json({
            "key_file": str(path),
            "current": found.current,
            "keys": found.key_rows,
            "missing_key_ids": found.missing,
            "rotation_unfinished": found.unfinished,
            "codes_on_old_binding": found.old_binding,
            "database_error": found.db_error,
            "key_check": "not run" if found.db_error else (found.key_error or "ok"),
        })
    else:
        _print_status(app, found)
    if found.key_error is not None:
        raise VaultError(found.key_error)


def _key_status(app: App, path: Path) -> _KeyStatus:
    """Read the key file and ask the database which key ids its rows are under."""
    ring = load_key_ring(path)
    usage = _usage(app)
    if isinstance(usage, str):
        return _KeyStatus(path, ring.current, _key_rows(ring.keys, ring.current, None, None, []),
                          [], False, None, usage, None)
    key_error = _key_check(app, path)
    code_counts, secret_counts = usage
    # Key ids the database uses that the file lacks: those rows cannot be decrypted.
    missing = sorted((set(code_counts) | set(secret_counts)) - set(ring.keys))
    # An unfinished rotation: rows under an old key, or an old key not yet retired.
    old_binding = _old_binding(app)
    unfinished = (any(kid != ring.current for kid in (*code_counts, *secret_counts))
                  or len(ring.keys) > 1 or bool(old_binding))
    return _KeyStatus(path, ring.current,
                      _key_rows(ring.keys, ring.current, code_counts, secret_counts, missing),
                      missing, unfinished, old_binding, None, key_error)


def _key_rows(ring_keys: Iterable[str], current: str, code_counts: dict[str, int] | None,
              secret_counts: dict[str, int] | None,
              missing: list[str]) -> list[dict[str, object]]:
    """One row per key id of the file and per id the database uses that the file lacks."""
    return [
        {
            "key_id": kid,
            "current": kid == current,
            "in_key_file": kid not in missing,
            "codes": None if code_counts is None else code_counts.get(kid, 0),
            "secrets": None if secret_counts is None else secret_counts.get(kid, 0),
        }
        for kid in [*ring_keys, *missing]
    ]


def _print_status(app: App, found: _KeyStatus) -> None:
    """The table of key ids, then a line for each thing the operator must do."""
    print_table(
        app,
        f"key file {found.path}",
        ["key id", "current", "in key file", "codes", "shop secrets"],
        [
            [
                r["key_id"],
                "yes" if r["current"] else "",
                "yes" if r["in_key_file"] else "MISSING",
                "?" if r["codes"] is None else r["codes"],
                "?" if r["secrets"] is None else r["secrets"],
            ]
            for r in found.key_rows
        ],
    )
    if found.db_error is not None:
        click.echo(f"database not checked: {found.db_error}", err=True)
    if found.old_binding:
        click.echo(f"{found.old_binding} code(s) are on the old binding (their ciphertext "
                   "does not bind their id yet): the robot re-binds them at start, or run "
                   "`robot keys rotate`", err=True)
    if found.unfinished and not found.missing:
        click.echo("a key rotation is unfinished: run `robot keys rotate` to finish it "
                   "(re-encrypt and retire the old key)", err=True)
    if found.missing:
        click.echo(
            "WARNING: rows are encrypted under key id(s) the key file lacks: "
            f"{', '.join(found.missing)}; restore the key file from its backup.",
            err=True,
        )


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
