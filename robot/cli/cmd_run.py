"""``robot run``: the daemon."""

from __future__ import annotations

import asyncio
import sys

import click

from robot.cli.common import App


@click.command("run")
@click.pass_obj
def run_cmd(app: App) -> None:
    """Run the robot: poll shops, allocate codes, write deliveries back (until SIGTERM)."""
    from robot.daemon import Robot
    from robot.log import configure_logging

    config = app.config
    configure_logging(config.log.level, config.log.format)
    robot = Robot(config)
    robot.prepare()
    code = asyncio.run(robot.run(extra=[robot.http_task()]))
    sys.exit(code)


COMMANDS: list[click.Command] = [run_cmd]
