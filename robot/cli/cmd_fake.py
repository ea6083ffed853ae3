"""``robot fake <platform>``: serve a platform's local fake API for demos and manual tests.

One click group; each platform adds its sub-command here. A fake has no authentication of
its own, so it must only ever listen on a loopback address; the credentials it prints are
the fake's own test credentials, never real ones.
"""

from __future__ import annotations

import ipaddress
import socket

import click

from robot.cli.common import emit_json, json_option
from robot.errors import UserError


@click.group("fake")
def fake() -> None:
    """Serve a local fake of a platform's open API (loopback only)."""


def _loopback_socket(host: str, port: int) -> socket.socket:
    """A listening socket on a loopback address (port 0 picks a free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UserError(f"cannot resolve host {host!r}") from exc
    family, _, _, _, address = infos[0]
    if not ipaddress.ip_address(address[0]).is_loopback:
        raise UserError(f"a fake serves loopback addresses only, not {host!r}")
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    return sock


@fake.command("taobao")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="TCP port (0 picks a free one).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="A loopback address.")
@click.option("--app-key", default="12345678", show_default=True)
@click.option("--app-secret", default="testsecret", show_default=True)
@click.option("--session", default="test-session", show_default=True)
@click.option(
    "--seed-orders",
    type=click.IntRange(0, 10_000),
    default=0,
    show_default=True,
    help="Paid trades to create at start.",
)
@json_option
def fake_taobao(
    port: int,
    host: str,
    app_key: str,
    app_secret: str,
    session: str,
    seed_orders: int,
    as_json: bool,
) -> None:
    """Serve a fake Taobao Open Platform (TOP) gateway until interrupted."""
    # Imported here so every other ``robot`` command starts without loading a web server.
    import uvicorn

    from connectors.taobao.fake import FakeTop, create_app

    state = FakeTop(app_key=app_key, app_secret=app_secret, session=session)
    tids = state.seed(seed_orders)
    sock = _loopback_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    info = {
        "gateway": f"http://{shown_host}:{bound_port}/router/rest",
        "control": f"http://{shown_host}:{bound_port}/__fake__/state",
        "app_key": app_key,
        "app_secret": app_secret,
        "session": session,
        "seeded_tids": [str(tid) for tid in tids],
    }
    if as_json:
        emit_json(info)
    else:
        click.echo("Fake TOP gateway (test credentials):")
        for key in ("gateway", "control", "app_key", "app_secret", "session"):
            click.echo(f"  {key}: {info[key]}")
        click.echo(f"  seeded trades: {len(tids)}")
    config = uvicorn.Config(create_app(state), log_level="warning", lifespan="off", ws="none")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        state.release_hangs()
        sock.close()


COMMANDS: list[click.Command] = [fake]
