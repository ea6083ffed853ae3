"""Fixtures for the Pinduoduo tests: a fake POP on an injectable clock, reached in-process
(httpx ASGI transport) or over a real loopback socket (uvicorn in a thread)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.pinduoduo.fake import FakeClock, FakePdd, create_app
from connectors.testing.loopback import serve_in_thread


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pdd(clock: FakeClock) -> FakePdd:
    return FakePdd(clock=clock.now)


@pytest.fixture
def live_gateway(pdd: FakePdd) -> Iterator[str]:
    """The fake served by uvicorn on a free loopback port; yields the gateway URL."""
    with serve_in_thread(create_app(pdd), before_stop=pdd.release_hangs) as base_url:
        yield f"{base_url}/api/router"
