"""``robot run`` with a WeChat shop file and its HTTP listener: WeChat Pay notifications sent
by the fake to ``/hooks/wx`` become orders the daemon ships once, with the token sealed."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from sqlalchemy import select

from connectors.wechat import WechatConfig
from connectors.wechat.fake import FakeWechat, PaySender
from connectors.wechat.token import SECRET_NAME
from robot.config import effective_dict, load_config
from robot.daemon import Robot
from robot.db import make_engine
from robot.migrate import upgrade
from robot.schema import orders, shop_secrets
from robot.vault import init_key_file, open_vault
from tests.factories import seed_codes
from tests.test_daemon import wait_for
from tests.wechat.helpers import SKU, live_fake


def _write_config(root: Path, fake: FakeWechat, base_url: str) -> Path:
    (root / "shops").mkdir(parents=True, exist_ok=True)
    init_key_file(root / "robot.key")
    (root / "wechatpay.pem").write_text(fake.public_key_pem)
    (root / "robot.yaml").write_text(
        "database: sqlite:///robot.db\nkey_file: robot.key\nshops: shops/*.yaml\n"
        "defaults: {poll_interval: 0.2, backoff_initial: 0.01, backoff_max: 0.05}\n"
        "log: {level: warning}\n")
    (root / "shops" / "wx.yaml").write_text(
        "name: wx\nplatform: wechat\n"
        f"items:\n  - sku_id: {SKU}\n    pool: p1\n    quantity: 1\n"
        "platform_config:\n"
        f"  appid: {fake.appid}\n  app_secret: {fake.app_secret}\n  mchid: '{fake.mchid}'\n"
        f"  apiv3_key: {fake.apiv3_key}\n"
        f"  wechatpay_public_keys:\n    {fake.serial}: file:{root / 'wechatpay.pem'}\n"
        f"  base_url: {base_url}\n")
    return root / "robot.yaml"


def test_daemon_takes_wechat_pay_notifications_and_ships(tmp_path: Path) -> None:
    """Shop file validated by WechatConfig (PEM from file:, secrets masked); notified
    payments shipped once; the stable token stored sealed."""
    fake = FakeWechat()  # the webhook route checks timestamps with the wall clock
    oids = [fake.create_payment(total=990, attach=json.dumps({"sku": SKU})) for _ in range(3)]
    with live_fake(fake) as base_url:
        config = load_config(_write_config(tmp_path, fake, base_url))
        shop = config.shop("wx")
        assert isinstance(shop.platform_config, WechatConfig)
        shown = json.dumps(effective_dict(config), default=str)
        assert fake.app_secret not in shown and fake.apiv3_key not in shown
        engine = make_engine(config.database)
        upgrade(engine)
        seed_codes(engine, open_vault(config.key_file), "p1", 10)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        fake.notify_url = f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/wx"
        sender = PaySender(fake)

        def all_shipped() -> bool:
            with engine.connect() as conn:
                states = conn.execute(select(orders.c.state)).scalars().all()
            return len(states) == 3 and set(states) == {"shipped"}

        async def scenario() -> int:
            robot = Robot(config, drain_timeout=5)
            await asyncio.to_thread(robot.prepare)
            task = asyncio.create_task(robot.run(install_signals=False,
                                                 extra=[robot.http_task(sock)]))
            try:
                await wait_for(lambda: robot.http is not None and robot.http.started)
                assert await asyncio.to_thread(sender.deliver_due) == 3
                await wait_for(all_shipped)
            finally:
                robot.stop()
                code = await task
            return code

        try:
            assert asyncio.run(scenario()) == 0
        finally:
            sender.close()
    assert [fake.payments[o].shipments for o in oids] == [1, 1, 1]
    with engine.connect() as conn:
        sealed = conn.execute(select(shop_secrets.c.ciphertext)
                              .where(shop_secrets.c.name == SECRET_NAME)).scalar_one()
    assert fake.current_token is not None
    assert fake.current_token.encode() not in bytes(sealed)
    assert fake.token_grants == 1
    engine.dispose()
