"""Fixtures for the Fulu plugin's tests: the fake on loopback with a settable clock, and a
callback receiver standing in for the robot's supplier gateway."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from connectors.fakekit import FakeClock
from connectors.fulu.fake_state import FakeFulu
from connectors.fulu.harness import FuluHarness, make_harness
from connectors.testing.loopback import serve_in_thread


@dataclass
class Receiver:
    """Records every callback body; answers the queued replies, then ``success``."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.bodies.append(await request.body())
            return PlainTextResponse(self.replies.pop(0) if self.replies else "success")

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, 4, 0, 0, tzinfo=UTC))


@pytest.fixture
def fulu(clock: FakeClock) -> Iterator[FuluHarness]:
    with make_harness(FakeFulu(clock=clock.now)) as harness:
        yield harness


@pytest.fixture
def receiver(fulu: FuluHarness) -> Iterator[Receiver]:
    rec = Receiver()
    with serve_in_thread(rec.app()) as base:
        rec.url = f"{base}/hook"
        fulu.fake.callback_url = rec.url
        yield rec
