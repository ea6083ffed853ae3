"""``robot fake <platform>``: serve an installed plugin's local fake for demos and manual tests;
``robot fake order``: create a paid order on any running fake (the control API every fake
shares).

One click group. Its platform sub-commands are not written here: every plugin whose factory
(entry points ``robot.connectors``, ``robot.suppliers``, ``robot.notifiers``) has
``fake_command()`` contributes its own command, listed under the factory's name, so
``robot fake --help`` shows every installed fake and a third-party plugin brings its fake
without a line changed here. A plugin that fails to load,
or whose fake command does, still appears, as a command that says why.

A fake has no authentication of its own, so it only ever listens on a loopback address
(:mod:`connectors.fakecli`); the credentials it prints are the fake's own test credentials.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import click

from connectors.plugin import HasFake
from robot.cli.common import emit_json, json_option
from robot.errors import UserError


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _broken(name: str, why: str) -> click.Command:
    """A stand-in for a plugin's fake that could not be loaded: running it says why."""

    def refuse() -> None:
        raise UserError(f"the fake of {name!r} cannot be served: {why}")

    return click.Command(name, callback=refuse, help=f"(broken: {why})",
                         context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True})


@functools.cache
def plugin_fakes() -> dict[str, click.Command]:
    """Every installed plugin's fake command, by platform name."""
    # Imported here so that the rest of the CLI starts without loading any plugin.
    from robot.registry import discover, discover_notifiers, discover_suppliers

    found = discover()
    commands: dict[str, click.Command] = {}
    for platform, factory in sorted(found.factories.items()):
        if isinstance(factory, HasFake):
            _add_fake(commands, platform, factory)
    for problem in found.problems:
        commands.setdefault(problem.name, _broken(problem.name, problem.error))
    suppliers, broken = discover_suppliers()
    for name, factory in sorted(suppliers.items()):
        if isinstance(factory, HasFake) and name not in commands:
            _add_fake(commands, name, factory)
    for problem in broken:
        commands.setdefault(problem.name, _broken(problem.name, problem.error))
    notifiers, broken = discover_notifiers()
    for name, notifier in sorted(notifiers.items()):  # aliyun_sms -> robot fake aliyun-sms
        if isinstance(notifier, HasFake) and name.replace("_", "-") not in commands:
            _add_fake(commands, name.replace("_", "-"), notifier)
    for problem in broken:
        commands.setdefault(problem.name, _broken(problem.name, problem.error))
    return commands


def _add_fake(commands: dict[str, click.Command], name: str, factory: HasFake) -> None:
    """``factory``'s fake command under ``name``, or a stand-in that says why there is none."""
    try:
        command = factory.fake_command()
    except Exception as exc:  # noqa: BLE001 - a plugin's bug is shown, never fatal to the rest
        commands[name] = _broken(name, _describe(exc))
        return
    if command is None:
        return
    if not isinstance(command, click.Command):
        commands[name] = _broken(name, "fake_command() did not return a click command")
        return
    commands[name] = command


class _FakeGroup(click.Group):
    """The ``fake`` group: its own sub-commands, then every installed plugin's fake."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *plugin_fakes()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or plugin_fakes().get(cmd_name)


@click.group("fake", cls=_FakeGroup)
def fake() -> None:
    """Serve a local fake of a platform's open API (loopback only)."""


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


def _properties(given: tuple[str, ...]) -> dict[str, str]:
    """``--property NAME=VALUE`` options as the control API's object."""
    out: dict[str, str] = {}
    for item in given:
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value.strip():
            raise UserError(f"--property {item!r}: expected NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


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
@click.option("--message", default=None, metavar="TEXT",
              help="The buyer's message to the seller (留言), in the platform's own field.")
@click.option("--property", "properties", multiple=True, metavar="NAME=VALUE",
              help="A SKU property the buyer chose or typed (repeatable), e.g. "
                   "充值号码=13800000000.")
@json_option
def fake_order(url: str, sku: str, quantity: int, buyer: str | None, paid_at: str | None,
               message: str | None, properties: tuple[str, ...], as_json: bool) -> None:
    """Create a paid order on a running fake (any platform) through its control API."""
    import httpx

    body: dict[str, Any] = {"sku": sku, "quantity": quantity}
    if buyer is not None:
        body["buyer"] = buyer
    if message is not None:
        body["message"] = message
    if properties:
        body["properties"] = _properties(properties)
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
