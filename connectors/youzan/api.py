"""One call to the Youzan Cloud gateway, with token renewal and every answer shape parsed.

``POST {base}/api/{name}/{version}?access_token=…`` with a JSON body (PLATFORMS.md §3.2).
:meth:`YouzanApi.call` returns the useful part of the answer — ``data`` of a v4 envelope or
``response`` of an old v3 one — and raises a :mod:`robot.errors` type for everything else.
A token the gateway rejects (4201/4202/4203) is renewed and the call retried once; a second
rejection is :class:`robot.errors.Unavailable` (retried later: the renewal worked, so the
authorization is good); a refused renewal is an AuthError (the core pauses the shop).
Throttling answers become :class:`robot.errors.Throttled` with Youzan's documented
back-off (3/6/12/24/48 s), growing while the throttling lasts.

This module must never log or raise with the access token or the URL (which carries it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from connectors.common.http import LoopClient, post_json
from connectors.common.values import as_int
from connectors.errors import BadPlatformData, Throttled, Unavailable
from connectors.log import get_logger
from connectors.youzan.config import YouzanConfig
from connectors.youzan.errors import (
    THROTTLE_CODES,
    TokenRejected,
    map_business_error,
    map_gateway_error,
    map_http_failure,
)
from connectors.youzan.token import TokenManager

log = get_logger(__name__)


class YouzanApi:
    """Authenticated calls for one shop."""

    def __init__(self, config: YouzanConfig, tokens: TokenManager, http: LoopClient) -> None:
        self._config = config
        self._tokens = tokens
        self._http = http
        self._throttled_in_a_row = 0

    @property
    def tokens(self) -> TokenManager:
        return self._tokens

    async def call(self, name: str, version: str, params: Mapping[str, Any]) -> Any:
        """Call API ``name``/``version`` with JSON ``params``; return ``data``/``response``."""
        token = await self._tokens.token()
        try:
            return await self._call_once(name, version, params, token)
        except TokenRejected as first:
            log.info("youzan_token_rejected", api=name, error_code=first.code)
            token = await self._tokens.after_rejection(token)
        try:
            return await self._call_once(name, version, params, token)
        except TokenRejected as exc:
            # The renewal itself worked, so the authorization is good: tokens changed under
            # us (another process, or a token expired at once). Retry later, do not pause.
            raise Unavailable(f"{exc.message} (again after renewing the token; will retry)"
                              ) from exc

    async def _call_once(self, name: str, version: str, params: Mapping[str, Any],
                         token: str) -> Any:
        url = f"{self._config.base_url.rstrip('/')}/api/{name}/{version}"
        started = time.monotonic()
        try:
            response = await post_json(
                self._http, str(httpx.URL(url, params={"access_token": token})), dict(params),
                what=name,
            )
            result = self._parse(name, response)
        except Throttled:
            self._throttled_in_a_row += 1
            raise
        self._throttled_in_a_row = 0
        log.debug("youzan_call", api=name, ms=round((time.monotonic() - started) * 1000))
        return result

    def _parse(self, name: str, response: httpx.Response) -> Any:
        if response.status_code >= 500:
            raise map_http_failure(name, response.status_code, "server error")
        try:
            payload = json.loads(response.content)
        except ValueError as exc:
            raise map_http_failure(name, response.status_code, "not JSON") from exc
        if not isinstance(payload, dict):
            raise BadPlatformData(f"{name}: unexpected JSON shape from Youzan")
        streak = self._throttled_in_a_row + 1
        gateway = payload.get("gw_err_resp")
        if isinstance(gateway, dict):
            raise map_gateway_error(name, as_int(gateway.get("err_code")),
                                    str(gateway.get("err_msg") or ""), throttled_in_a_row=streak)
        error = payload.get("error_response")
        if isinstance(error, dict):  # old v3 envelope
            raise map_business_error(name, as_int(error.get("code")),
                                     str(error.get("msg") or error.get("message") or ""),
                                     throttled_in_a_row=streak)
        if "response" in payload and "success" not in payload:  # old v3 success
            return payload["response"]
        if "success" not in payload:
            code = as_int(payload.get("code"))
            if code in THROTTLE_CODES:  # bare {"msg":"请求被限流","code":500100004}
                raise map_business_error(name, code, str(payload.get("msg") or ""),
                                         throttled_in_a_row=streak)
            raise BadPlatformData(f"{name}: Youzan answer has no known envelope")
        if payload.get("success") is not True:
            raise map_business_error(name, as_int(payload.get("code")),
                                     str(payload.get("message") or payload.get("msg") or ""),
                                     throttled_in_a_row=streak)
        if response.status_code != 200:
            raise map_http_failure(name, response.status_code, "unexpected status")
        return payload.get("data")
