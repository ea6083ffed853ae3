"""Fixtures for the Taobao connector tests: a fake TOP on an injectable clock, reached either
in-process (httpx ASGI transport) or over a real loopback socket (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from connectors.taobao import TaobaoConnector
from connectors.taobao.fake import FakeClock, FakeTop, create_app
from tests.taobao.taobao_helpers import make_config, serve

T = TypeVar("T")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def top(clock: FakeClock) -> FakeTop:
    return FakeTop(clock=clock.now)


Drive = Callable[..., Any]


@pytest.fixture
def drive(top: FakeTop, clock: FakeClock) -> Drive:
    """``drive(scenario, **config)`` runs ``await scenario(connector)`` against the in-process
    fake and closes the connector; returns the scenario's result."""

    def run(scenario: Callable[[TaobaoConnector], Awaitable[T]], **overrides: Any) -> T:
        async def main() -> T:
            connector = TaobaoConnector(
                make_config(**overrides),
                shop="test-shop",
                transport=httpx.ASGITransport(app=create_app(top)),
                clock=clock.now,
            )
            try:
                return await scenario(connector)
            finally:
                await connector.aclose()

        return asyncio.run(main())

    return run


@pytest.fixture
def live_gateway(top: FakeTop) -> Iterator[str]:
    """The fake served by uvicorn on a free loopback port; yields the gateway URL."""
    with serve(top) as url:
        yield url
