"""``robot fake <platform>``: serve a platform's local fake API for demos and manual tests;
``robot fake order``: create a paid order on any running fake.

One click group; each platform adds its sub-command here. A fake has no authentication of
its own, so it must only ever listen on a loopback address; the credentials it prints are
the fake's own test credentials, never real ones.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click

from connectors.fakekit import MAX_CLOCK_OFFSET
from robot.cli.common import emit_json, json_option
from robot.errors import UserError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

F = TypeVar("F", bound=Callable[..., Any])


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


def loopback_options(command: F) -> F:
    """The ``--port`` and ``--host`` options every ``robot fake`` command takes."""
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


def listen_on_loopback(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening loopback socket (see :func:`_loopback_socket`) and its base URL,
    ``http://HOST:PORT`` (an IPv6 host in brackets)."""
    sock = _loopback_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    return sock, f"http://{shown_host}:{bound_port}"


def announce(info: Mapping[str, Any], *, title: str, shown: Iterable[str],
             more: Iterable[str] = (), as_json: bool) -> None:
    """Print what a fake serves and its test credentials: all of ``info`` as JSON, or
    ``title``, then the ``shown`` keys and the ``more`` lines, one a line."""
    if as_json:
        emit_json(dict(info))
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
    # Imported here so every other ``robot`` command starts without loading a web server.
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none",
                            date_header=False)  # a fake dates its answers by its own clock
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for cleanup in cleanups:
            cleanup()
        sock.close()


@fake.command("taobao")
@loopback_options
@click.option("--app-key", default="12345678", show_default=True)
@click.option("--app-secret", default="testsecret", show_default=True)
@click.option("--session", default="test-session", show_default=True)
@seed_orders_option("Paid trades to create at start.")
@clock_offset_option
@json_option
def fake_taobao(
    port: int,
    host: str,
    app_key: str,
    app_secret: str,
    session: str,
    seed_orders: int,
    clock_offset: float,
    as_json: bool,
) -> None:
    """Serve a fake Taobao Open Platform (TOP) gateway until interrupted."""
    # Imported here so every other ``robot`` command starts without loading a web server.
    from connectors.taobao.fake import FakeTop, create_app

    state = FakeTop(app_key=app_key, app_secret=app_secret, session=session,
                    clock_offset=clock_offset)
    tids = state.seed(seed_orders)
    sock, base = listen_on_loopback(host, port)
    info = {
        "gateway": f"{base}/router/rest",
        "control": f"{base}/__fake__/state",
        "app_key": app_key,
        "app_secret": app_secret,
        "session": session,
        "seeded_tids": [str(tid) for tid in tids],
        "clock_offset_seconds": clock_offset,
    }
    info["skus"] = [item.to_json() for item in state.catalog()]
    announce(info, title="Fake TOP gateway (test credentials):",
             shown=("gateway", "control", "app_key", "app_secret", "session"),
             more=[f"seeded trades: {len(tids)}", *state.banner(base)],
             as_json=as_json)
    serve_until_interrupted(create_app(state), sock, state.release_hangs)


def _control_url(url: str) -> str:
    """``scheme://host:port`` of a running fake from any URL of it (base, gateway, state);
    UserError unless it is an http URL on a loopback host (fakes serve nothing else)."""
    parts = urlsplit(url.strip())
    if parts.scheme != "http" or not parts.hostname:
        raise UserError(f"--url: expected the fake's http://HOST:PORT, not {url!r}")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UserError(f"--url: cannot resolve {parts.hostname!r}") from exc
    if not all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos):
        raise UserError(f"--url: a fake runs on a loopback address, not {parts.hostname!r}")
    return f"http://{parts.netloc}"


def _paid_at(value: str | None) -> str | None:
    """``--paid-at`` as ISO 8601 with its offset, checked here so a typo is named at once."""
    if value is None:
        return None
    from connectors.fakebase import parse_paid_at

    try:
        moment = parse_paid_at(value)
    except ValueError as exc:
        raise UserError(f"--paid-at: {str(exc).removeprefix('paid_at: ')}") from None
    assert moment is not None
    return moment.isoformat()


@fake.command("order")
@click.option("--url", required=True, metavar="URL",
              help="The running fake, as its start banner shows it (http://127.0.0.1:PORT).")
@click.option("--sku", required=True, help="A SKU the fake sells (its banner lists them) "
              "or any other (an item no mapping names).")
@click.option("--quantity", type=click.IntRange(1, 999), default=1, show_default=True)
@click.option("--buyer", default=None, help="The buyer's platform id (where it has one).")
@click.option("--paid-at", default=None, metavar="TIME",
              help="When the buyer paid: ISO 8601 with its offset, e.g. "
                   "2024-01-02T11:04:05+08:00 (default: now).")
@json_option
def fake_order(url: str, sku: str, quantity: int, buyer: str | None, paid_at: str | None,
               as_json: bool) -> None:
    """Create a paid order on a running fake (any platform) through its control API."""
    import httpx

    body: dict[str, Any] = {"sku": sku, "quantity": quantity}
    if buyer is not None:
        body["buyer"] = buyer
    if (when := _paid_at(paid_at)) is not None:
        body["paid_at"] = when
    base = _control_url(url)
    try:
        response = httpx.post(f"{base}/__fake__/orders", json=body, timeout=10)
    except httpx.HTTPError as exc:
        raise UserError(f"no fake answers at {base} ({type(exc).__name__}); "
                        "start one with robot fake <platform>") from exc
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or (response.status_code != 200 and "error" not in answer):
        raise UserError(f"{base} is not a robot fake (HTTP {response.status_code})")
    if response.status_code != 200:
        raise UserError(f"the fake refused the order: {answer['error']}")
    if as_json:
        emit_json(answer)
        return
    note = "" if answer.get("in_catalog") else " (a SKU the fake does not sell: unmapped)"
    click.echo(f"{answer['platform']} order {answer['order_id']}: {answer['quantity']} x "
               f"{answer['sku']}, paid{note}")


COMMANDS: list[click.Command] = [fake]
