"""The fake's command (``robot fake fulu`` through the plugin's factory): it serves the gateway
on loopback at Fulu's path and announces its products and test credentials."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
from click.testing import CliRunner
from pydantic import SecretStr

from connectors.fulu import FuluSupplierFactory
from connectors.fulu.client import FuluSupplier
from connectors.fulu.config import FuluConfig
from connectors.supplier import Outcome, PurchaseRequest

SERVE = "from connectors.fulu import FuluSupplierFactory as F; F().fake_command()()"


def test_the_factory_names_its_fake_command_and_harness() -> None:
    """The factory brings ``fake_command()`` (named like the plugin) and a harness."""
    factory = FuluSupplierFactory()
    assert factory.fake_command().name == "fulu"
    with factory.contract_harness() as harness:
        assert harness.card_product and harness.topup_product


def test_a_secret_that_cannot_be_the_card_key_is_refused() -> None:
    """--app-secret must be 32 characters (the card codes' AES-256 key)."""
    result = CliRunner().invoke(FuluSupplierFactory().fake_command(),
                                ["--app-secret", "short"])
    assert result.exit_code != 0
    assert "32 characters" in result.output


def test_the_fake_serves_fulus_gateway_with_the_announced_credentials() -> None:
    """Started on a free loopback port, it prints its gateway (``/api/getway``), credentials
    and products; a client with those credentials buys from it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, "--json", "--app-key", "k-test", "--port", "0"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.rstrip() == "}":
                break
        info = json.loads("".join(lines))
        assert info["gateway"].startswith("http://127.0.0.1:")
        assert info["gateway"].endswith("/api/getway")
        assert info["app_key"] == "k-test"
        assert info["products"]
        config = FuluConfig(app_key="k-test", app_secret=SecretStr(info["app_secret"]),
                            gateway=info["gateway"])
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        client = FuluSupplier(config, transport=transport)
        product = info["products"][0]["sku"]
        placed = asyncio.run(client.place(PurchaseRequest("CLI1", product)))
        assert placed.outcome is Outcome.ACCEPTED
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
