"""``robot fake goofish`` (through the plugin's factory): it announces the documentation's
test credentials and, on demand, buys from a robot's gateway as 闲管家 does."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
from sqlalchemy import Engine

from connectors.fakeserve import serve_fake
from connectors.goofish import GoofishConnectorFactory
from connectors.goofish.fake import TEST_APP_ID, TEST_MCH_ID
from robot.http.app import build_app
from robot.http.context import HttpContext
from robot.vault import Vault
from tests.factories import seed_codes
from tests.goofish.conftest import goofish_shop

SERVE = ("from connectors.goofish import GoofishConnectorFactory as F; "
         "F().fake_command()()")


def test_the_factory_names_its_fake_command_and_demo() -> None:
    """The factory brings ``fake_command()`` named like the plugin, and a demo driver."""
    factory = GoofishConnectorFactory()
    command = factory.fake_command()
    assert command is not None and command.name == "goofish"
    driver = factory.demo_driver()
    assert driver is not None and driver.platform == "goofish"
    asyncio.run(driver.stop())


def test_the_fake_buys_from_a_running_gateway(engine: Engine, vault: Vault) -> None:
    """Started on a free loopback port with --gateway, it prints the credentials; asked to
    buy, it places a signed purchase the robot answers with its codes (状态 20)."""
    seed_codes(engine, vault, "p1", 2)
    shop = goofish_shop()

    async def go() -> dict[str, object]:
        ctx = HttpContext(engine=engine, vault=vault, shops={shop.name: shop},
                          connectors={shop.name: GoofishConnectorFactory().create(
                              shop.platform_config, None)})  # type: ignore[arg-type]
        robot = await serve_fake(build_app(ctx))
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, "--json", "--port", "0", "--gateway",
             f"{robot.base_url}/supply/{shop.name}"], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            lines = []
            for line in iter(proc.stdout.readline, ""):
                lines.append(line)
                if line.rstrip() == "}":
                    break
            info = json.loads("".join(lines))
            assert (info["app_id"], info["mch_id"]) == (TEST_APP_ID, TEST_MCH_ID)
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.post(f"{info['url']}/__fake__/purchase",
                                           json={"goods_no": "G1001", "copies": 2})
                state = (await client.get(f"{info['url']}/__fake__/state")).json()
            return {**answer.json(), "state": state}
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
            await robot.stop()

    result = asyncio.run(go())
    assert result["codes"] == [0, 0]
    assert result["order_status"] == [20, 20]
    assert result["state"] == {"callbacks": 0, "refused": [], "orders": 1}
