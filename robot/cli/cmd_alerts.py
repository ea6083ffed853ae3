"""``robot alerts``: send a test message to every alert target; list the alerts that are on.

``test`` shows each target as apprise prints it with privacy on (tokens elided); this module
must never print a target's full URL.
"""

from __future__ import annotations

import click

from robot import alerts
from robot.cli.common import App, emit_json, json_option, print_table
from robot.errors import UserError


@click.group("alerts")
def alerts_group() -> None:
    """Alerts to people: low stock, stuck orders, paused shops, poll lag, expiring codes."""


@alerts_group.command("test")
@json_option
@click.pass_obj
def test_cmd(app: App, as_json: bool) -> None:
    """Send a test message to each target in alerts.targets; exit 1 if any failed."""
    targets = app.config.alerts.targets
    if not targets:
        raise UserError("no alert targets: add apprise URLs under alerts.targets in the robot "
                        "file")
    results = alerts.AppriseNotifier(targets).test(
        f"{alerts.TITLE_PREFIX} test message",
        "This is a test from the delivery robot: alerts reach this channel.")
    if as_json:
        emit_json([{"target": r.target, "ok": r.ok, "error": r.error} for r in results])
    else:
        print_table(app, "alert targets", ["target", "result"],
                    [[r.target, "sent" if r.ok else f"FAILED: {r.error}"] for r in results])
    failed = sum(not r.ok for r in results)
    if failed:
        raise UserError(f"{failed} of {len(results)} alert targets failed")


@alerts_group.command("list")
@json_option
@click.pass_obj
def list_cmd(app: App, as_json: bool) -> None:
    """The alerts that are on now (as last sent), oldest first."""
    rows = alerts.active_alerts(app.engine)
    if as_json:
        emit_json(rows, app.zone)
        return
    if not rows:
        app.console.print("[green]no alerts are on[/green]")
        return
    print_table(app, "active alerts", ["alert", "since", "last sent", "detail"],
                [[r["key"], app.time(r["since"]), app.time(r["last_sent_at"]), r["detail"]]
                 for r in rows])


COMMANDS: list[click.Command] = [alerts_group]
