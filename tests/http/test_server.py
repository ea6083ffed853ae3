"""The daemon serves HTTP from its own loop: webhooks feed the pipeline, the memo carries a
working pickup link, and stop() closes the listener."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from connectors.memory import TEST_PUSH_SECRET, MemoryPlatform, sign_push
from robot.config import load_config
from robot.daemon import Robot
from robot.db import make_engine
from robot.errors import Fatal
from robot.http.server import bind
from robot.migrate import upgrade
from robot.schema import orders
from robot.vault import open_vault
from tests.factories import paid_order, seed_codes
from tests.http.test_hooks import message
from tests.test_daemon import wait_for, write_config


def test_robot_serves_webhooks_health_and_pickup_links(tmp_path: Path) -> None:
    """A pushed order is shipped with a pickup link in the memo that opens its page."""
    name = f"http-daemon-{uuid.uuid4().hex}"
    config = load_config(write_config(tmp_path, name))
    engine = make_engine(config.database)
    upgrade(engine)
    seed_codes(engine, open_vault(config.key_file), "p1", 3)
    platform = MemoryPlatform.named(name)
    platform.put_order(paid_order("W1", ("s1", 1)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    def shipped() -> bool:
        with engine.connect() as conn:
            return conn.execute(select(orders.c.state)).scalars().all() == ["shipped"]

    async def scenario() -> tuple[int, str, int, str]:
        robot = Robot(config, drain_timeout=10)
        await asyncio.to_thread(robot.prepare)
        task = asyncio.create_task(robot.run(install_signals=False,
                                             extra=[robot.http_task(sock)]))
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as client:
            await wait_for(lambda: robot.http is not None and robot.http.started)
            body = message("W1", "w-1")
            pushed = await client.post("/hooks/mem", content=body,
                                       headers={"X-Memory-Sign": sign_push(TEST_PUSH_SECRET, body)})
            await wait_for(shipped)
            await wait_for(lambda: platform.memo("W1") is not None)
            memo = platform.memo("W1") or ""
            path = memo.split("http://127.0.0.1:8080", 1)[1]
            page = await client.get(path)
            health = await client.get("/healthz")
        robot.stop()
        code = await task
        return pushed.status_code, page.text, health.status_code, str(code)

    pushed, page, health, code = asyncio.run(scenario())
    assert pushed == 200
    assert "显示完整卡密" in page
    assert health == 200
    assert code == "0"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")
    engine.dispose()


def test_busy_listen_address_is_fatal() -> None:
    """A port that is taken fails at start-up with a clear message."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    with pytest.raises(Fatal, match=f"cannot listen on 127.0.0.1:{port}"):
        bind(f"127.0.0.1:{port}")
    taken.close()
