"""One signed call to the Douyin shop gateway, with token renewal and the envelope parsed.

``POST {base}/{method with "." → "/"}?app_key&method&access_token&timestamp&v=2&sign
&sign_method=hmac-sha256`` with the canonical ``param_json`` as the JSON body (PLATFORMS.md
§5.1). The ``timestamp`` (Unix seconds) follows Douyin's clock as measured from its answers.
:meth:`DouyinApi.call` returns ``data`` of a ``code`` 10000 answer and raises a plugin error
for everything else. A token Douyin refuses is renewed and the call retried once; a second
refusal is Unavailable (the renewal worked, so the authorization is good).

This module must never log or raise with the access token, the secret or the URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.common.clock import PlatformClock, moved_since
from connectors.common.http import LoopClient
from connectors.common.times import to_epoch
from connectors.common.values import as_int
from connectors.douyin import sign as signing
from connectors.douyin.config import DouyinConfig
from connectors.douyin.errors import (
    SUB_BAD_TIMESTAMP,
    SUCCESS,
    TokenRejected,
    map_error,
    map_http_failure,
)
from connectors.errors import BadPlatformData, Unavailable
from connectors.log import get_logger

log = get_logger(__name__)

#: Ask for the new error codes (PLATFORMS.md §10: ``x-open-no-old-err-code``).
HEADERS = {"Content-Type": "application/json", "x-open-no-old-err-code": "1"}


class Envelope:
    """A parsed Douyin answer: its code fields and ``data``."""

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.code = as_int(payload.get("code"))
        self.msg = str(payload.get("msg") or "")
        self.sub_code = str(payload.get("sub_code") or "")
        self.sub_msg = str(payload.get("sub_msg") or "")
        self.data = payload.get("data")

    @property
    def ok(self) -> bool:
        return self.code == SUCCESS


class Gateway:
    """Signs and posts one call; parses the envelope (no token handling)."""

    def __init__(self, config: DouyinConfig, http: LoopClient, clock: PlatformClock) -> None:
        self._config = config
        self._http = http
        self._clock = clock

    async def post(self, method: str, params: Mapping[str, Any],
                   access_token: str | None) -> Envelope:
        """One call; signed again once if Douyin refused our timestamp and the measured clock
        offset moved since it was signed (the refusal's own answer measured it)."""
        used = self._clock.offset
        answer = await self._post_once(method, params, access_token)
        if answer.sub_code.startswith(SUB_BAD_TIMESTAMP) and moved_since(self._clock, used):
            log.info("douyin_timestamp_resigned", api=method,
                     offset_s=self._clock.offset.total_seconds())
            answer = await self._post_once(method, params, access_token)
        return answer

    async def _post_once(self, method: str, params: Mapping[str, Any],
                         access_token: str | None) -> Envelope:
        config = self._config
        body = signing.param_json(params)
        timestamp = str(to_epoch(self._clock.now()))
        query = {
            "app_key": config.app_key,
            "method": method,
            "timestamp": timestamp,
            "v": signing.VERSION,
            "sign": signing.sign(config.app_key, config.app_secret.get_secret_value(),
                                 method, body, timestamp),
            "sign_method": signing.SIGN_METHOD,
        }
        if access_token is not None:
            query["access_token"] = access_token
        url = config.base_url.rstrip("/") + signing.method_path(method)
        try:
            response = await self._http.get().post(url, params=query,
                                                   content=body.encode("utf-8"))
        except httpx.TimeoutException as exc:
            raise Unavailable(f"{method}: Douyin timed out") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"{method}: cannot reach Douyin ({type(exc).__name__})") from exc
        return _parse(method, response)


def _parse(method: str, response: httpx.Response) -> Envelope:
    if response.status_code >= 500 or response.status_code == 429:
        raise map_http_failure(method, response.status_code, "server error")
    try:
        payload = json.loads(response.content)
    except ValueError as exc:
        raise map_http_failure(method, response.status_code, "not JSON") from exc
    if not isinstance(payload, dict) or "code" not in payload:
        raise BadPlatformData(f"{method}: Douyin answer has no known envelope")
    if response.status_code != 200:
        raise map_http_failure(method, response.status_code, "unexpected status")
    return Envelope(payload)


class DouyinApi:
    """Authenticated calls for one shop."""

    def __init__(self, gateway: Gateway, tokens: Any) -> None:
        self._gateway = gateway
        self._tokens = tokens

    @property
    def tokens(self) -> Any:
        return self._tokens

    async def call(self, method: str, params: Mapping[str, Any]) -> Any:
        """Call ``method`` with business ``params``; return the answer's ``data``."""
        token: str = await self._tokens.token()
        try:
            return await self._call_once(method, params, token)
        except TokenRejected as first:
            log.info("douyin_token_rejected", api=method, error_code=first.code)
            token = await self._tokens.after_rejection(token)
        try:
            return await self._call_once(method, params, token)
        except TokenRejected as exc:
            raise Unavailable(f"{exc.message} (again after renewing the token; will retry)"
                              ) from exc

    async def _call_once(self, method: str, params: Mapping[str, Any], token: str) -> Any:
        started = time.monotonic()
        answer = await self._gateway.post(method, params, token)
        log.debug("douyin_call", api=method, ms=round((time.monotonic() - started) * 1000),
                  code=answer.code)
        if not answer.ok:
            raise map_error(method, answer.code, answer.msg, answer.sub_code, answer.sub_msg)
        return answer.data
