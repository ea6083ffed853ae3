"""Serve a platform fake on a free loopback port inside the running event loop (demo, tests).

A fake has no authentication of its own, so this only ever binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the process that runs the fake owns its signals


@dataclass
class ServedFake:
    base_url: str
    server: uvicorn.Server
    task: asyncio.Task[None]
    sock: socket.socket

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, timeout=10)
        self.sock.close()


async def serve_fake(app: Starlette) -> ServedFake:
    """Start ``app`` on 127.0.0.1 (a free port); returns once it accepts connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="error", lifespan="off", ws="none",
                            date_header=False,  # a fake dates its answers by its own clock
                            access_log=False)
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="fake-server")
    while not server.started:
        if task.done():
            await task  # raises the start-up error
        await asyncio.sleep(0.01)
    return ServedFake(f"http://127.0.0.1:{port}", server, task, sock)


T = TypeVar("T")


class FakeHost:
    """An event loop in a thread of this process that serves the platform fakes, so they
    outlive the robot processes a driver (chaos run, benchmark) starts and kills."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fakes", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the fakes' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
