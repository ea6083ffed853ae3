"""uvicorn inside the robot's own event loop.

:func:`bind` opens the listening socket up front, so a busy or forbidden address is a
:class:`robot.errors.Fatal` at start-up rather than a ``sys.exit`` deep inside uvicorn.
:class:`HttpServer` runs uvicorn on that socket until the robot's stop event is set, then
lets requests in flight finish (a few seconds at most).

uvicorn's own signal handling is switched off (the robot owns SIGTERM/SIGINT), its loggers
propagate to the robot's (``log_config=None``), and its access log is off: request paths
carry pickup tokens. Its proxy-header handling is off: the client's address comes from
:mod:`robot.http.address`, which believes ``X-Forwarded-For`` only from
``http.trusted_proxies``. This module must never log a request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from robot.errors import Fatal

GRACEFUL_SHUTDOWN = 5  # seconds for requests in flight once the robot stops


def bind(listen: str) -> socket.socket:
    """A bound socket for ``host:port`` (``[::1]:8080`` for IPv6); Fatal if it cannot be."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise Fatal(f"http.listen: cannot listen on {listen}: "
                    f"{exc.strerror or type(exc).__name__}") from exc
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the robot's signal handlers stop everything, this server included

    async def main_loop(self) -> None:
        # uvicorn wakes ten times a second to refresh its Date header and look for a stop
        # request, which an idle robot pays for around the clock. Once a second does both
        # (tick 0 always refreshes the header); stopping waits at most a second longer.
        while not await self.on_tick(0):
            await asyncio.sleep(1.0)


class HttpServer:
    """One uvicorn server on one pre-bound socket."""

    def __init__(self, app: ASGIApp, sock: socket.socket) -> None:
        self.sock = sock
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", server_header=False,
            # X-Forwarded-For is read by robot.http.address, for http.trusted_proxies only;
            # uvicorn's own rewrite (forwarded_allow_ips) would hide the real peer from it.
            proxy_headers=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        )
        self._server = _Server(config)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; returns after the graceful shutdown."""
        serving = asyncio.create_task(self._server.serve(sockets=[self.sock]), name="uvicorn")
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._server.should_exit = True
            stopping.cancel()
        await serving
