"""``robot audit``: verify the keyed hash-chained audit log, list its entries, upgrade it.

``verify`` walks every chain with the audit key (derived from the key file) and holds each
against its signed checkpoint kept beside the key file; it exits with status 1 (a
:class:`~robot.errors.UserError`) naming the chain and what was found when an entry was
altered, removed or reordered, or a chain is shorter than its checkpoint, differs from it,
or is missing. When all is well it moves the checkpoints forward. ``upgrade`` re-seals the
unkeyed chains of an older version (``robot run`` does it at start). This module never
"repairs" the log.
"""

from __future__ import annotations

import json
from typing import Any

import click
from sqlalchemy import select

from robot import audit
from robot.cli.common import App, actor, emit_json, json_option, print_table
from robot.display import zone_name
from robot.errors import UserError
from robot.schema import audit_log


@click.group("audit")
def audit_group() -> None:
    """Check and read the tamper-evident audit log."""


@audit_group.command("verify")
@json_option
@click.pass_obj
def verify(app: App, as_json: bool) -> None:
    """Walk every chain; exit 1 if any entry was altered, removed or reordered, or a chain
    is shorter than its checkpoint, differs from it, or is missing."""
    result = audit.verify(app.engine)
    if as_json:
        emit_json({
            "ok": result.ok,
            "entries": result.entries,
            "first_bad_seq": result.first_bad_seq,
            "chain": result.chain,
            "problem": result.problem,
        })
    if result.ok:
        if not as_json:
            click.echo(f"audit chain OK: {result.entries} entries")
        return
    where = "" if result.chain is None else f"chain {result.chain}, "
    at = "" if result.first_bad_seq is None else f"entry {result.first_bad_seq}"
    raise UserError(f"audit chain BROKEN at {where}{at}: {result.problem}"
                    if where or at else f"audit chain BROKEN: {result.problem}")


@audit_group.command("upgrade")
@click.pass_obj
def upgrade(app: App) -> None:
    """Re-seal the chains an older version wrote with unkeyed hashes (verified first).

    Resumable (one chain per transaction); refuses a chain that fails its old verification
    or that its checkpoint says was keyed already. `robot run` does this at start.
    """
    done = audit.upgrade_legacy(app.engine, actor=actor())
    if not done:
        click.echo("every audit chain is keyed already")
        return
    for chain, entries in sorted(done.items()):
        click.echo(f"chain {chain}: {entries} entries verified and re-sealed with the key file")


def _details(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # an altered entry may not hold JSON any more; show it as it is


@audit_group.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the most recent entries to show.")
@click.option("--action", default=None, help="Only entries with this action (e.g. reveal).")
@json_option
@click.pass_obj
def list_entries(app: App, limit: int, action: str | None, as_json: bool) -> None:
    """Show the most recent entries, newest first."""
    stmt = select(
        audit_log.c.chain, audit_log.c.seq, audit_log.c.at, audit_log.c.actor,
        audit_log.c.action, audit_log.c.subject, audit_log.c.details,
    ).order_by(audit_log.c.at.desc(), audit_log.c.seq.desc(), audit_log.c.chain).limit(limit)
    if action is not None:
        stmt = stmt.where(audit_log.c.action == action)
    with app.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    if as_json:
        emit_json([
            {
                "chain": r.chain,
                "seq": r.seq,
                "at": r.at,
                "actor": r.actor,
                "action": r.action,
                "subject": r.subject,
                "details": _details(r.details),
            }
            for r in rows
        ], app.zone)
        return
    print_table(
        app,
        "audit log (newest first)",
        ["entry", f"at ({zone_name(app.zone)})", "actor", "action", "subject", "details"],
        [
            [str(r.seq) if r.chain == 1 else f"{r.chain}:{r.seq}",
             app.time(r.at), r.actor, r.action, r.subject,
             r.details]
            for r in rows
        ],
    )


COMMANDS: list[click.Command] = [audit_group]
