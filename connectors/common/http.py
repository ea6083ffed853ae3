"""One ``httpx.AsyncClient`` per event loop for a connector, and JSON POSTs that fail cleanly.

The core drives a connector from one long-lived loop, but tools and tests may call it from
successive ``asyncio.run`` calls; a client (and its pooled connections) must not outlive the
loop it was made on, so a new loop gets a new client (idle connections of an ended loop are
abandoned: such callers should pass a transport without keep-alive). Every transport failure
becomes :class:`robot.errors.Unavailable` naming only the exception type: httpx messages can
contain the URL, and some platforms (Youzan, WeChat) carry the access token in its query
string.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.common.clock import PlatformClock
from connectors.errors import Unavailable


class LoopClient:
    """Lazily creates the ``AsyncClient`` for the running loop.

    ``platform`` names the far side in error messages ("Youzan", "WeChat"); ``headers`` are
    sent with every request; ``clock`` (when given) takes a sample from every answer.
    """

    def __init__(self, *, platform: str, timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None,
                 headers: Mapping[str, str] | None = None,
                 clock: PlatformClock | None = None) -> None:
        self.platform = platform
        self._timeout = timeout
        self._transport = transport
        self._headers = dict(headers) if headers else None
        self.clock = clock
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(
                transport=self._transport, timeout=self._timeout, headers=self._headers,
                event_hooks=self.clock.hooks() if self.clock is not None else None)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


async def post_json(client: LoopClient, url: str, body: Any, *, what: str,
                    params: dict[str, str] | None = None) -> httpx.Response:
    """POST ``body`` as JSON; transport failures become Unavailable (no URL in the message)."""
    try:
        return await client.get().post(url, json=body, params=params)
    except httpx.TimeoutException as exc:
        raise Unavailable(f"{what}: {client.platform} timed out") from exc
    except httpx.HTTPError as exc:
        raise Unavailable(f"{what}: cannot reach {client.platform} "
                          f"({type(exc).__name__})") from exc
