"""Fixtures for the Pinduoduo tests: a fake POP on an injectable clock, reached in-process
(httpx ASGI transport) or over a real loopback socket (uvicorn in a thread)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn

from connectors.pinduoduo.fake import FakeClock, FakePdd, create_app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pdd(clock: FakeClock) -> FakePdd:
    return FakePdd(clock=clock.now)


@pytest.fixture
def live_gateway(pdd: FakePdd) -> Iterator[str]:
    """The fake served by uvicorn on a free loopback port; yields the gateway URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue from now on, so no readiness wait is needed
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(pdd), log_level="warning", lifespan="off", ws="none",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/api/router"
    finally:
        pdd.release_hangs()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive()
