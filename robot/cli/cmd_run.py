"""``robot run``: the daemon; ``robot reload``: make it read its shop files again."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

import click

from robot.cli.common import App
from robot.errors import Unavailable


@click.command("run")
@click.pass_obj
def run_cmd(app: App) -> None:
    """Run the robot: poll shops, allocate codes, write deliveries back (until SIGTERM).

    SIGHUP (or `robot reload`) reads the shop files again without a restart.
    """
    from robot.daemon import Robot
    from robot.log import configure_logging, get_logger
    from robot.pidfile import PidFile, pid_path

    config = app.config
    configure_logging(config.log.level, config.log.format)
    robot = Robot(config)

    def note_reload(_sig: int, _frame: object) -> None:
        robot.reload_requested = True  # the loop is not running yet: reload once it runs

    # SIGTERM while start-up waits for the database: stop waiting and exit 0 (a clean stop).
    previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: robot.stop_waiting())
    previous_hup = signal.signal(signal.SIGHUP, note_reload)
    pid_file = PidFile(pid_path(config.key_file))
    try:
        if not pid_file.acquire():
            get_logger(__name__).warning(
                "pid_file_taken", pid_file=str(pid_file.path),
                detail="another robot on this host holds it; `robot reload` reaches that one, "
                       "send SIGHUP to this one yourself")
    except OSError as exc:
        get_logger(__name__).warning("pid_file_unwritable", pid_file=str(pid_file.path),
                                     error=exc.strerror or type(exc).__name__)
    try:
        try:
            robot.prepare()
        except Unavailable:
            if not robot.gave_up_waiting:
                raise
            sys.exit(0)
        finally:
            signal.signal(signal.SIGTERM, previous)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            code = runner.run(robot.run(extra=[robot.http_task()]))
    finally:
        signal.signal(signal.SIGHUP, previous_hup)
        pid_file.release()
    sys.exit(code)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (Linux and macOS): the daemon's loop runs
    the HTTP listener and every job's hand-offs, and uvloop's costs ~230 us less CPU per
    order at a sale's rate (BENCHMARKS.md, issue 23); asyncio's own loop elsewhere."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


@click.command("reload")
@click.pass_obj
def reload_cmd(app: App) -> None:
    """Make the running robot read its shop files again: added shops start, removed or
    disabled ones stop after their in-flight work. Refused (nothing sent) when the files
    have errors."""
    from robot.pidfile import pid_path, send_reload

    config = app.config  # a file with errors stops here, with every problem listed
    pid = send_reload(pid_path(config.key_file))
    click.echo(f"sent SIGHUP to the robot (pid {pid}); its log says `shops_reloaded` with the "
               "shops started and stopped, or `reload_refused` with the problems")


COMMANDS: list[click.Command] = [run_cmd, reload_cmd]
