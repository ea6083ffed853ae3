"""Helpers for the Pinduoduo tests (a uniquely named module: importable from any test file)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from connectors.base import ShopContext
from connectors.common.context import MemoryContext
from connectors.common.times import to_epoch
from connectors.pinduoduo import PinduoduoConfig, PinduoduoConnector
from connectors.pinduoduo.fake import FakeClock, FakePdd, create_app
from connectors.pinduoduo.limiter import RateLimiter
from connectors.pinduoduo.sign import pdd_sign

GATEWAY = "http://pdd.fake/api/router"


def make_config(**overrides: Any) -> PinduoduoConfig:
    values: dict[str, Any] = {
        "client_id": "test-client",
        "client_secret": "testsecret",
        "access_token": "test-access-token",
        "refresh_token": "test-refresh-token",
        "gateway": GATEWAY,
        "logistics_id": 3,
        "backoff_seconds": 0.5,
    }
    values.update(overrides)
    return PinduoduoConfig(**values)


class FakeSleep:
    """An ``asyncio.sleep`` stand-in that moves the fake clock instead of waiting."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)


def make_connector(pdd: FakePdd, clock: FakeClock, *, context: ShopContext | None = None,
                   sleep: FakeSleep | None = None, gateway: str | None = None,
                   **overrides: Any) -> PinduoduoConnector:
    """A connector on the fake: in-process (ASGI) unless ``gateway`` is a real URL."""
    config = make_config(**({"gateway": gateway} if gateway else {}), **overrides)
    transport = None if gateway else httpx.ASGITransport(app=create_app(pdd))
    sleeper = sleep or FakeSleep(clock)
    return PinduoduoConnector(
        config, context=context or MemoryContext("test-shop"), transport=transport,
        clock=clock.now, sleep=sleeper,
        limiter=RateLimiter(clock=lambda: clock.now().timestamp(), sleep=sleeper),
    )


def signed_params(api: str, *, secret: str = "testsecret", now: Any = None,
                  timestamp: str | None = None, access_token: str | None = "test-access-token",
                  **params: str) -> dict[str, str]:
    """A hand-built POP request (independent of the connector's own request builder)."""
    sent = {
        "type": api,
        "client_id": "test-client",
        "timestamp": timestamp if timestamp is not None else str(to_epoch(now)),
        "data_type": "JSON",
        "version": "V1",
    }
    if access_token is not None:
        sent["access_token"] = access_token
    sent.update(params)
    sent["sign"] = pdd_sign(sent, secret)
    return sent


def post_raw(pdd: FakePdd, params: dict[str, str], *, as_json: bool = True) -> dict[str, Any]:
    """POST ``params`` to the in-process fake; returns the decoded JSON answer."""

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(pdd))
        async with httpx.AsyncClient(transport=transport) as client:
            if as_json:
                return await client.post(GATEWAY, content=json.dumps(params),
                                         headers={"Content-Type": "application/json"})
            return await client.post(GATEWAY, data=params)

    response = asyncio.run(main())
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document
