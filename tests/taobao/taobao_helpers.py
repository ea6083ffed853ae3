"""Helpers for the Taobao tests (a uniquely named module: importable from any test file)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from connectors.common.times import format_cst
from connectors.taobao import TaobaoConfig
from connectors.taobao.fake import FakeTop, create_app
from connectors.taobao.sign import top_sign
from connectors.testing.loopback import serve_in_thread

GATEWAY = "http://top.fake/router/rest"


def make_config(**overrides: Any) -> TaobaoConfig:
    values: dict[str, Any] = {
        "app_key": "12345678",
        "app_secret": "testsecret",
        "session": "test-session",
        "gateway": GATEWAY,
    }
    values.update(overrides)
    return TaobaoConfig(**values)


def signed_params(
    method: str,
    *,
    secret: str = "testsecret",
    sign_method: str = "hmac-sha256",
    timestamp: str | None = None,
    now: Any = None,
    **params: str,
) -> dict[str, str]:
    """A hand-built TOP request (independent of the connector's own request builder)."""
    form = {
        "method": method,
        "app_key": "12345678",
        "sign_method": sign_method,
        "timestamp": timestamp if timestamp is not None else format_cst(now),
        "format": "json",
        "v": "2.0",
        "session": "test-session",
    }
    form.update(params)
    form = {key: value for key, value in form.items() if value != ""}
    form["sign"] = top_sign(form, secret, sign_method)
    return form


def post_raw(
    top: FakeTop, form: dict[str, str], *, query: dict[str, str] | None = None
) -> httpx.Response:
    """POST ``form`` to the in-process fake and return the raw response."""

    async def main() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(top))
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.post(GATEWAY, data=form, params=query or {})

    return asyncio.run(main())


@contextmanager
def serve(top: FakeTop) -> Iterator[str]:
    """Serve the fake with uvicorn on a free loopback port; yields the gateway URL."""
    with serve_in_thread(create_app(top), before_stop=top.release_hangs) as base_url:
        yield f"{base_url}/router/rest"
