"""``robot run`` with a Youzan shop file: the daemon polls the fake over loopback and ships."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import select

from connectors.youzan import YouzanConfig
from connectors.youzan.token import SECRET_NAME
from robot.config import effective_dict, load_config
from robot.daemon import Robot
from robot.db import make_engine
from robot.migrate import upgrade
from robot.schema import orders, shop_secrets
from robot.vault import init_key_file, open_vault
from tests.factories import seed_codes
from tests.youzan.helpers import CLIENT_ID, CLIENT_SECRET, KDT_ID, live_fake, make_real_time_fake


def _write_config(root: Path, base_url: str) -> Path:
    (root / "shops").mkdir(parents=True, exist_ok=True)
    init_key_file(root / "robot.key")
    (root / "robot.yaml").write_text(
        "database: sqlite:///robot.db\nkey_file: robot.key\nshops: shops/*.yaml\n"
        "defaults: {poll_interval: 0.2, backoff_initial: 0.01, backoff_max: 0.05}\n"
        "log: {level: warning}\n")
    (root / "shops" / "yz.yaml").write_text(
        "name: yz\nplatform: youzan\n"
        "items:\n  - sku_id: 36000001\n    pool: p1\n    quantity: 1\n"
        "platform_config:\n"
        f"  client_id: {CLIENT_ID}\n  client_secret: {CLIENT_SECRET}\n  grant_id: {KDT_ID}\n"
        f"  base_url: {base_url}\n  lag_seconds: 0\n  initial_lookback_minutes: 10\n")
    return root / "robot.yaml"


async def _wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Check a condition until it holds (the robot works in the background)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(predicate):
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def test_daemon_ships_youzan_orders_and_keeps_the_token_encrypted(tmp_path: Path) -> None:
    """Shop file validated by YouzanConfig (secret masked); paid trades shipped once; the token
    stored sealed in shop_secrets, never in plaintext."""
    fake = make_real_time_fake()  # the daemon polls with the wall clock
    tids = [fake.create_trade(items=[{"sku_id": 36000001, "price": "5.00"}]) for _ in range(3)]
    tids.append(fake.create_trade(items=[{"sku_id": 36000001}], virtual=True))
    with live_fake(fake) as base_url:
        config = load_config(_write_config(tmp_path, base_url))
        shop = config.shop("yz")
        assert isinstance(shop.platform_config, YouzanConfig)
        assert CLIENT_SECRET not in json.dumps(effective_dict(config), default=str)
        engine = make_engine(config.database)
        upgrade(engine)
        seed_codes(engine, open_vault(config.key_file), "p1", 10)

        def all_shipped() -> bool:
            with engine.connect() as conn:
                states = conn.execute(select(orders.c.state)).scalars().all()
            return len(states) == 4 and set(states) == {"shipped"}

        async def scenario() -> int:
            robot = Robot(config, drain_timeout=5)
            await asyncio.to_thread(robot.prepare)
            task = asyncio.create_task(robot.run(install_signals=False))
            try:
                await _wait_for(all_shipped)
            finally:
                robot.stop()  # also when the wait fails: no robot left holding files open
                code = await task
            return code

        assert asyncio.run(scenario()) == 0
    assert [fake.trades[t].shipments for t in tids] == [1, 1, 1, 0]
    with engine.connect() as conn:
        sealed = conn.execute(select(shop_secrets.c.ciphertext)
                              .where(shop_secrets.c.name == SECRET_NAME)).scalar_one()
    assert fake.current_token is not None
    assert fake.current_token.encode() not in bytes(sealed)
    assert fake.tokens_issued == 1
    engine.dispose()
