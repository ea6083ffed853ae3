"""``robot fake acme``: the fake Acme API on loopback, built on the ground floor's fake CLI."""

from __future__ import annotations

import click

from connectors.fakecli import (
    announce,
    json_option,
    listen_on_loopback,
    loopback_options,
    seed_orders_option,
    serve_until_interrupted,
)


@click.command("acme")
@loopback_options
@click.option("--api-key", default="acme-test-key", show_default=True)
@seed_orders_option("Paid orders to create at start.")
@json_option
def fake_acme(port: int, host: str, api_key: str, seed_orders: int, as_json: bool) -> None:
    """Serve a fake Acme shop API until interrupted."""
    from acme_robot.fake import FakeAcme, create_app

    fake = FakeAcme(api_key=api_key)
    seeded = [fake.create_order("ACME-SKU") for _ in range(seed_orders)]
    sock, base = listen_on_loopback(host, port)
    info = {"base_url": base, "control": f"{base}/__fake__/state", "api_key": api_key,
            "push_secret": fake.push_secret, "seeded_orders": seeded}
    announce(info, title="Fake Acme (test credentials):",
             shown=("base_url", "control", "api_key", "push_secret"),
             more=[f"seeded orders: {len(seeded)}"], as_json=as_json)
    serve_until_interrupted(create_app(fake), sock)
