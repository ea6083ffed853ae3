"""``robot suppliers …``: the supplier accounts, their health, catalogue and credentials."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import click

from connectors.supplier import Supplier
from robot import suppliers
from robot.cli.common import App, emit_json, json_option, print_table
from robot.clock import utcnow
from robot.display import with_yuan
from robot.display import yuan as _money
from robot.errors import RobotError, UserError

_T = TypeVar("_T")


@click.group("suppliers")
def suppliers_group() -> None:
    """The supplier accounts (the robot file's suppliers:): list, status, products, test."""


def _client(app: App, name: str) -> Supplier:
    app.config.supplier(name)  # a clear error for an unknown name
    clients, broken = suppliers.build(app.config, app.engine, app.vault)
    if name not in clients:
        raise UserError(f"supplier {name!r} cannot start: {broken.get(name, 'disabled')}")
    return clients[name]


def _call(client: Supplier, fn: Callable[[Supplier], Awaitable[_T]]) -> _T:
    async def go() -> _T:
        try:
            return await fn(client)
        finally:
            await client.aclose()
    return asyncio.run(go())


@suppliers_group.command("list")
@json_option
@click.pass_obj
def list_cmd(app: App, as_json: bool) -> None:
    """Every supplier account in the configuration, and which shop items buy from it."""
    rows: list[dict[str, Any]] = []
    for entry in app.config.suppliers:
        used = [f"{shop.name}:{'/'.join(m.key)}" for shop in app.config.shops
                for m in shop.items if any(r.supplier == entry.name for r in m.suppliers)]
        rows.append({"supplier": entry.name, "plugin": entry.plugin, "enabled": entry.enabled,
                     "low_balance_cents": entry.low_balance_cents, "items": used})
    if as_json:
        emit_json(with_yuan(rows))
        return
    print_table(app, "suppliers", ["supplier", "plugin", "enabled", "low balance", "items"],
                [[r["supplier"], r["plugin"], "yes" if r["enabled"] else "no",
                  _money(r["low_balance_cents"]) or "-", ", ".join(r["items"]) or "-"]
                 for r in rows])


@suppliers_group.command("status")
@click.option("--days", type=int, default=7, show_default=True,
              help="The period for success rate and cost.")
@click.option("--no-balance", is_flag=True, help="Do not ask the suppliers for balances.")
@json_option
@click.pass_obj
def status_cmd(app: App, days: int, no_balance: bool, as_json: bool) -> None:
    """Balance, purchases open, success rate, cost and last error per supplier."""
    names = [s.name for s in app.config.suppliers]
    found = suppliers.stats(app.engine, since=utcnow() - timedelta(days=days), names=names)
    balances: dict[str, int | str] = {}
    if not no_balance and names:
        clients, broken = suppliers.build(app.config, app.engine, app.vault)
        balances.update(broken)
        for name, client in clients.items():
            try:
                balances[name] = _call(client, lambda c: c.balance()).available_cents
            except RobotError as exc:
                balances[name] = f"{type(exc).__name__}: {exc.message}"
    rows = [{**s.as_dict(), "balance_cents": b if isinstance(b := balances.get(s.supplier), int)
             else None, "balance_error": b if isinstance(b, str) else None} for s in found]
    if as_json:
        emit_json(with_yuan(rows), app.zone)
        return
    print_table(app, f"suppliers (last {days} days)",
                ["supplier", "balance", "open", "ok", "failed", "success", "cost",
                 "oldest open", "last error"],
                [[r["supplier"], _money(r["balance_cents"]) or (r["balance_error"] or "-"),
                  r["open"], r["succeeded"], r["failed"],
                  f"{r['success_rate']:.0%}" if r["success_rate"] is not None else "-",
                  _money(r["cost_cents"]), app.time(r["oldest_open_at"], empty="-"),
                  r["last_error"] or ""] for r in rows])


@suppliers_group.command("products")
@click.argument("name")
@click.option("--search", default=None, help="Only products whose name or id holds this text.")
@json_option
@click.pass_obj
def products_cmd(app: App, name: str, search: str | None, as_json: bool) -> None:
    """A supplier's catalogue with the current price (what max_cost is compared with)."""
    products = _call(_client(app, name), lambda c: c.catalogue())
    if search:
        products = [p for p in products if search.lower() in p.name.lower()
                    or search in p.product_id]
    rows: list[dict[str, Any]] = [{"product": p.product_id, "name": p.name, "kind": p.kind.value,
             "price_cents": p.price_cents, "face_value_cents": p.face_value_cents,
             "available": p.available} for p in products]
    if as_json:
        emit_json(with_yuan(rows))
        return
    print_table(app, f"{name} products", ["product", "name", "kind", "price", "face value",
                                          "on sale"],
                [[r["product"], r["name"], r["kind"], _money(r["price_cents"]),
                  _money(r["face_value_cents"]) or "-", "yes" if r["available"] else "no"]
                 for r in rows])


@suppliers_group.command("test")
@click.argument("name")
@json_option
@click.pass_obj
def test_cmd(app: App, name: str, as_json: bool) -> None:
    """Check a supplier account's credentials (asks its balance; buys nothing)."""
    try:
        balance = _call(_client(app, name), lambda c: c.balance())
        ok, detail = True, f"balance {_money(balance.available_cents)} {balance.currency}"
    except RobotError as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc.message}"
    if as_json:
        emit_json({"supplier": name, "ok": ok, "detail": detail})
    else:
        click.echo(f"  [{'ok' if ok else 'FAIL'}] credentials: {detail}")
        click.echo(f"supplier {name}: {'OK' if ok else 'NOT OK'}")
    if not ok:
        raise click.exceptions.Exit(1)


COMMANDS: list[click.Command] = [suppliers_group]
