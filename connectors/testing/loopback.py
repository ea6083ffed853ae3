"""Serve an ASGI app (a platform fake) with uvicorn on a free loopback port, in a thread.

For tests that need a real socket between the connector and a fake. It binds 127.0.0.1 only
(a fake has no authentication) and must never be used to serve anything beyond a test.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp


@contextmanager
def serve_in_thread(app: ASGIApp, *,
                    before_stop: Callable[[], None] | None = None) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a daemon thread; yields its base URL
    (``http://127.0.0.1:PORT``). ``before_stop`` runs first on the way out (e.g. a fake's
    ``release_hangs``, so that no request holds the server open); the server must then
    stop within ten seconds."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue from now on, so no readiness wait is needed
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none",
                            date_header=False,  # a fake dates its answers by its own clock
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if before_stop is not None:
            before_stop()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive()
