"""``robot run``: the daemon."""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from robot.cli.common import App
from robot.errors import Unavailable


@click.command("run")
@click.pass_obj
def run_cmd(app: App) -> None:
    """Run the robot: poll shops, allocate codes, write deliveries back (until SIGTERM)."""
    from robot.daemon import Robot
    from robot.log import configure_logging

    config = app.config
    configure_logging(config.log.level, config.log.format)
    robot = Robot(config)
    # SIGTERM while start-up waits for the database: stop waiting and exit 0 (a clean stop).
    previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: robot.stop_waiting())
    try:
        robot.prepare()
    except Unavailable:
        if not robot.gave_up_waiting:
            raise
        sys.exit(0)
    finally:
        signal.signal(signal.SIGTERM, previous)
    code = asyncio.run(robot.run(extra=[robot.http_task()]))
    sys.exit(code)


COMMANDS: list[click.Command] = [run_cmd]
