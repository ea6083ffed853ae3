"""``robot demo``: see the robot work, with nothing to set up."""

from __future__ import annotations

import asyncio
import sys

import click
from rich.console import Console

from robot.cli.common import json_option


@click.command("demo")
@click.option("--orders", "orders_wanted", default=120, show_default=True,
              type=click.IntRange(1, 100_000), help="How many paid orders to send.")
@click.option("--timeout", default=180.0, show_default=True,
              help="Give up after this many seconds.")
@click.option("--platform", "platforms", multiple=True,
              help="Only these platforms (default: every built-in platform with a fake).")
@click.option("--burst", type=click.IntRange(0, 100_000), default=None,
              help="Orders of each live-stream burst, for platforms that sell in bursts "
                   "(default: the platform's own, 300 on 抖店; 0: no burst).")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (database, config, key).")
@click.option("--seed", type=int, default=None, help="Random seed, for a repeatable run.")
@click.option("--serve/--no-serve", "serve", default=None,
              help="Keep the robot running after the run to open a pickup page "
                   "(default: when on a terminal).")
@json_option
def demo_cmd(orders_wanted: int, timeout: float, platforms: tuple[str, ...], burst: int | None,
             keep: bool, seed: int | None, serve: bool | None, as_json: bool) -> None:
    """Run the real robot against local fakes of every platform, with a live status table.

    Exit status 0 only if every order reached the state it should and no code was handed
    out twice.
    """
    from robot.demo import run_demo, summary_json
    from robot.log import configure_logging

    configure_logging("error", "json")
    console = None if as_json else Console()
    serve_after = sys.stdin.isatty() and sys.stdout.isatty() if serve is None else serve
    summary = asyncio.run(run_demo(orders_wanted=orders_wanted, timeout=timeout, console=console,
                                   only=list(platforms) or None, keep=keep, seed=seed,
                                   serve_after=serve_after and not as_json, burst=burst))
    if as_json:
        click.echo(summary_json(summary))
    else:
        click.echo(f"\n{summary.orders} orders: {summary.shipped} shipped, {summary.held} held "
                   f"(unknown SKU), {summary.cancelled} cancelled (refunded while waiting for "
                   f"stock), {summary.failed} failed; duplicate codes: {summary.duplicate_codes}; "
                   f"paid→shipped p50 {summary.p50_ms} ms, p99 {summary.p99_ms} ms")
        for platform, burst_done in summary.bursts.items():
            click.echo(f"{platform} live-stream burst: {burst_done['orders']:.0f} orders paid in "
                       f"{burst_done['pay_seconds']} s, {burst_done['shipped']:.0f} shipped, "
                       f"all within {burst_done['all_shipped_seconds']} s of the first payment")
        click.echo("result: " + ("OK — every order where it should be" if summary.ok else
                                 f"NOT OK — expected {summary.expected}"))
        if summary.directory:
            click.echo(f"kept: {summary.directory} "
                       f"(robot -c {summary.directory}/robot.yaml status)")
    sys.exit(0 if summary.ok else 1)


COMMANDS: list[click.Command] = [demo_cmd]
