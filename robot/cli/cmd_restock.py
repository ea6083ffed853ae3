"""``robot restock …``: pools that refill themselves from a supplier (robot.restock)."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from robot import restock, restocker, suppliers
from robot.cli.common import App, actor, emit_json, json_option, print_table
from robot.clock import utcnow
from robot.config.restock import RestockRule
from robot.display import with_yuan
from robot.display import yuan as _money
from robot.errors import UserError
from robot.sourcing import SourcingPolicy


@click.group("restock")
def restock_group() -> None:
    """Automatic restocking (the robot file's restock:): status, run, approve, history."""


def _rule(app: App, pool: str) -> RestockRule:
    rule = app.config.restock.get(pool)
    if rule is None:
        names = ", ".join(sorted(app.config.restock)) or "none"
        raise UserError(f"pool {pool!r} has no restock rule (the robot file's restock:); "
                        f"pools with one: {names}")
    return rule


@restock_group.command("status")
@json_option
@click.pass_obj
def status_cmd(app: App, as_json: bool) -> None:
    """Per pool: rule, stock, cover, spent today / this month, last purchase, approvals."""
    rows = restock.status(app.engine, app.config.restock, zone=app.zone)
    if as_json:
        emit_json(with_yuan(rows))
        return
    table = []
    for r in rows:
        last = r["last_purchase"]
        when = [f"<= {r['below']}" if r["below"] is not None else "",
                f"cover < {r['cover_days']:g}d" if r["cover_days"] is not None else ""]
        table.append([
            r["pool"], f"{r['supplier']}/{r['product']}", " or ".join(w for w in when if w),
            f"{r['quantity']} x <= {_money(r['max_cost_cents'])}",
            "-" if r["available"] is None else str(r["available"]),
            "-" if r["days_of_cover"] is None else f"{r['days_of_cover']}",
            f"{_money(r['spent_today_cents'])} / {_money(r['daily_budget_cents'])}",
            f"{_money(r['spent_month_cents'])} / {_money(r['monthly_budget_cents'])}",
            "-" if last is None else f"#{last['id']} {last['state']}",
            ", ".join(f"#{i}" for i in r["awaiting_approval"]) or "-",
            r["blocked"] or r["last_error"] or ""])
    print_table(app, "restocking", ["pool", "supplier/product", "when", "buys", "stock",
                                    "cover (days)", "today", "this month", "last purchase",
                                    "awaiting approval", "problem"], table)


@restock_group.command("run")
@click.argument("pool")
@json_option
@click.pass_obj
def run_cmd(app: App, pool: str, as_json: bool) -> None:
    """Buy for POOL now, within its rule (budget, maximum cost, purchases in flight; the
    stock trigger and a failure backoff do not apply). With approval on, it waits for one."""
    rule = _rule(app, pool)
    pid = restock.request(app.engine, pool, rule, why="asked for by a person",
                          actor=actor(), zone=app.zone, manual=True)
    if not rule.approval:
        _advance(app, pid)
    [row] = [r for r in restock.history(app.engine, pool=pool, limit=20) if r["id"] == pid]
    if as_json:
        emit_json(with_yuan(row))
        return
    click.echo(_line(row))


def _advance(app: App, purchase_id: int) -> None:
    """Place the purchase now (and read its outcome once); the robot's worker carries on."""
    clients, broken = suppliers.build(app.config, app.engine, app.vault)
    worker = restocker.Restocker(
        app.engine, app.vault, clients, app.config.restock,
        SourcingPolicy(price_ttl=0, query_initial=app.config.sourcing.query_initial,
                       query_max=app.config.sourcing.query_max), worker=actor(), zone=app.zone)

    async def go() -> None:
        try:
            for job in worker.claim(utcnow(), 1, only=purchase_id):
                await worker.advance(job)
        finally:
            for client in clients.values():
                await client.aclose()

    asyncio.run(go())
    if broken:
        click.echo("suppliers that cannot start: " + "; ".join(
            f"{n}: {why}" for n, why in broken.items()), err=True)


@restock_group.command("approve")
@click.argument("purchase_id", type=int)
@click.pass_obj
def approve_cmd(app: App, purchase_id: int) -> None:
    """Approve a purchase waiting for a person: its budget is reserved and the robot buys."""
    pool = restock.approve(app.engine, purchase_id, app.config.restock, actor=actor(),
                           zone=app.zone)
    click.echo(f"restock purchase {purchase_id} for pool {pool} approved: the robot buys it")


@restock_group.command("reject")
@click.argument("purchase_id", type=int)
@click.pass_obj
def reject_cmd(app: App, purchase_id: int) -> None:
    """Turn down a purchase waiting for a person; nothing is bought."""
    restock.reject(app.engine, purchase_id, actor=actor())
    click.echo(f"restock purchase {purchase_id} rejected")


@restock_group.command("history")
@click.option("--pool", default=None, help="Only this pool's purchases.")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@click.pass_obj
def history_cmd(app: App, pool: str | None, limit: int, as_json: bool) -> None:
    """Restock purchases, newest first."""
    rows = restock.history(app.engine, pool=pool, limit=limit)
    if as_json:
        emit_json(with_yuan(rows))
        return
    print_table(app, "restock purchases", ["id", "pool", "state", "supplier", "codes",
                                           "cost", "asked", "by", "why / reason"],
                [[str(r["id"]), r["pool"], r["state"], r["supplier"],
                  "-" if r["codes"] is None else str(r["codes"]),
                  _money(r["cost_cents"]) or "-", app.time(r["created_at"]),
                  r["approved_by"] or r["requested_by"], r["reason"] or r["trigger"]]
                 for r in rows])


def _line(row: dict[str, Any]) -> str:
    extra = f": {row['reason']}" if row["reason"] else ""
    held = (f"up to {_money(row['reserved_cents'])}" if row["reserved_cents"]
            else "nothing reserved until it is approved")
    return (f"restock purchase #{row['id']} for pool {row['pool']}: {row['state']} "
            f"({row['quantity']} codes, {held})" + extra)


COMMANDS: list[click.Command] = [restock_group]
