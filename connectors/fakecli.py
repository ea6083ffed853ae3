"""What every ``robot fake <platform>`` command shares: loopback-only listening, the common
options, the announcement of the fake's test credentials, and serving until interrupted.

A plugin's factory returns its fake's click command (``fake_command()``); the robot's generic
``robot fake`` group finds it through the entry point. A fake has no authentication of its
own, so it must only ever listen on a loopback address; the credentials it prints are the
fake's own test credentials, never real ones.

This module is part of the ground floor: it imports nothing from the robot.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import click

from connectors.fakekit import MAX_CLOCK_OFFSET

if TYPE_CHECKING:
    from starlette.types import ASGIApp

F = TypeVar("F", bound=Callable[..., Any])


def loopback_socket(host: str, port: int) -> socket.socket:
    """A listening socket on a loopback address (port 0 picks a free one); a host that is
    not loopback is a bad ``--host``, a port that cannot be bound a clear error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise click.BadParameter(f"cannot resolve host {host!r}", param_hint="--host") from exc
    family, _, _, _, address = infos[0]
    if not ipaddress.ip_address(address[0]).is_loopback:
        raise click.BadParameter(f"a fake serves loopback addresses only, not {host!r}",
                                 param_hint="--host")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    return sock


def loopback_options(command: F) -> F:
    """The ``--port`` and ``--host`` options every fake command takes."""
    command = click.option("--host", default="127.0.0.1", show_default=True,
                           help="A loopback address.")(command)
    return click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
                        help="TCP port (0 picks a free one).")(command)


def seed_orders_option(help_text: str) -> Callable[[F], F]:
    """The ``--seed-orders N`` option (0 to 10,000; default 0)."""
    return click.option("--seed-orders", type=click.IntRange(0, 10_000), default=0,
                        show_default=True, help=help_text)


def clock_offset_option(command: F) -> F:
    """The ``--clock-offset SECONDS`` option: the fake platform's clock runs this far ahead
    of this machine's (negative: behind); its order times, windows and ``Date`` follow it."""
    return click.option(
        "--clock-offset", type=click.FloatRange(-MAX_CLOCK_OFFSET, MAX_CLOCK_OFFSET),
        default=0.0, show_default=True, metavar="SECONDS",
        help="The platform's clock runs this many seconds ahead of ours (negative: behind); "
             "change it later with POST /__fake__/clock/offset.")(command)


#: ``--json``: print what the fake serves as one JSON document.
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def fake_options(seed_help: str) -> Callable[[F], F]:
    """The options every fake command takes: ``--port``, ``--host``, ``--seed-orders`` (with
    ``seed_help``), ``--clock-offset`` and ``--json``."""

    def apply(command: F) -> F:
        command = json_option(clock_offset_option(seed_orders_option(seed_help)(command)))
        return loopback_options(command)

    return apply


def listen_on_loopback(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening loopback socket (see :func:`loopback_socket`) and its base URL,
    ``http://HOST:PORT`` (an IPv6 host in brackets)."""
    sock = loopback_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    return sock, f"http://{shown_host}:{bound_port}"


def announce(info: Mapping[str, Any], *, title: str, shown: Iterable[str],
             more: Iterable[str] = (), as_json: bool) -> None:
    """Print what a fake serves and its test credentials: all of ``info`` as JSON, or
    ``title``, then the ``shown`` keys and the ``more`` lines, one a line."""
    if as_json:
        click.echo(json.dumps(dict(info), ensure_ascii=False, indent=2, default=str))
        return
    click.echo(title)
    for key in shown:
        click.echo(f"  {key}: {info[key]}")
    for line in more:
        click.echo(f"  {line}")


def serve_until_interrupted(app: ASGIApp, sock: socket.socket,
                            *cleanups: Callable[[], object]) -> None:
    """Serve ``app`` on ``sock`` until interrupted; then run ``cleanups`` in order and close
    the socket."""
    # Imported here so that a command's --help starts without loading a web server.
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none",
                            date_header=False)  # a fake dates its answers by its own clock
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for cleanup in cleanups:
            cleanup()
        sock.close()
