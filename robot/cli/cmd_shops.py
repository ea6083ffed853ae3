"""``robot shops …``: the configured shops, their health, and a live credentials check."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from sqlalchemy import select

from robot.cli.common import App, actor, emit_json, json_option, print_table
from robot.errors import RobotError, UserError
from robot.outbox import resume_shop
from robot.registry import discover
from robot.schema import shop_state
from robot.shops import DbShopContext


@click.group("shops")
def shops_group() -> None:
    """The configured shops: list them, test their credentials, resume a paused one."""


@shops_group.command("list")
@json_option
@click.pass_obj
def list_cmd(app: App, as_json: bool) -> None:
    """Every shop in the configuration with its platform and polling state."""
    with app.engine.connect() as conn:
        states = {r.shop: r for r in conn.execute(select(shop_state))}
    rows: list[dict[str, Any]] = []
    for shop in app.config.shops:
        st = states.get(shop.name)
        rows.append({
            "shop": shop.name, "platform": shop.platform, "enabled": shop.enabled,
            "poll_interval_s": shop.poll_interval_seconds, "items": len(shop.items),
            "paused": bool(st.paused) if st else False,
            "paused_reason": st.paused_reason if st else None,
            "last_poll_ok_at": st.last_poll_ok_at if st else None,
            "last_error": st.last_error if st else None,
        })
    if as_json:
        emit_json(rows, app.zone)
        return
    print_table(app, "shops", ["shop", "platform", "enabled", "poll every", "mapped items",
                               "last poll ok", "paused / last error"],
                [[r["shop"], r["platform"], "yes" if r["enabled"] else "no",
                  f"{r['poll_interval_s']:g}s", r["items"],
                  app.time(r["last_poll_ok_at"], empty="never"),
                  r["paused_reason"] or r["last_error"] or ""] for r in rows])


@shops_group.command("test")
@click.argument("shop")
@json_option
@click.pass_obj
def test_cmd(app: App, shop: str, as_json: bool) -> None:
    """Check a shop's credentials and permissions against its platform."""
    config = app.config.shop(shop)
    found = discover()
    factory = found.factories.get(config.platform)
    if factory is None:
        problem = found.problem_for(config.platform)
        raise UserError(str(problem) if problem else f"no connector for {config.platform!r}")
    connector = factory.create(config.platform_config, DbShopContext(app.engine, app.vault, shop))

    async def check() -> tuple[bool, list[tuple[str, bool, str]]]:
        try:
            report = await connector.check()
            return report.ok, list(report.checks)
        except RobotError as exc:
            return False, [(type(exc).__name__, False, exc.message)]
        finally:
            await connector.aclose()

    ok, checks = asyncio.run(check())
    if as_json:
        emit_json({"shop": shop, "ok": ok,
                   "checks": [{"check": c, "passed": p, "detail": d} for c, p, d in checks]})
    else:
        for name, passed, detail in checks:
            click.echo(f"  [{'ok' if passed else 'FAIL'}] {name}: {detail}")
        click.echo(f"shop {shop}: {'OK' if ok else 'NOT OK'}")
    if not ok:
        raise click.exceptions.Exit(1)


@shops_group.command("resume")
@click.argument("shop")
@click.pass_obj
def resume_cmd(app: App, shop: str) -> None:
    """Resume a shop the robot paused (after re-authorizing it on the platform)."""
    app.config.shop(shop)
    resume_shop(app.engine, shop, actor=actor())
    click.echo(f"shop {shop} resumed; pending write-backs are due now")


COMMANDS: list[click.Command] = [shops_group]
