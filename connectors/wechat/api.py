"""Calls to ``api.weixin.qq.com`` with the access token, renewed once on 40001/42001.

:meth:`WechatApi.call` returns the answer's JSON object when ``errcode`` is 0 (or absent) and
raises the mapped :mod:`robot.errors` exception otherwise. It must never log or raise with the
access token or the URL that carries it.
"""

from __future__ import annotations

import json
from typing import Any

from connectors.common.http import LoopClient, post_json
from connectors.errors import BadPlatformData, Unavailable
from connectors.wechat.config import WechatConfig
from connectors.wechat.errors import TokenRejected, map_errcode, map_http_failure
from connectors.wechat.token import TokenManager

UPLOAD_SHIPPING_INFO = "wxa/sec/order/upload_shipping_info"
GET_ORDER = "wxa/sec/order/get_order"
IS_TRADE_MANAGED = "wxa/sec/order/is_trade_managed"


class WechatApi:
    """One mini-program's authenticated API calls."""

    def __init__(self, config: WechatConfig, tokens: TokenManager, http: LoopClient) -> None:
        self._config = config
        self.tokens = tokens
        self._http = http

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        token = await self.tokens.token()
        try:
            return await self._once(path, body, token)
        except TokenRejected as first:
            token = await self.tokens.after_rejection(token)
            try:
                return await self._once(path, body, token)
            except TokenRejected as exc:
                # The renewal worked, so the secret is good: retry later, do not pause.
                raise Unavailable(f"{exc.message} (again after renewing the token; "
                                  "will retry)") from first

    async def _once(self, path: str, body: dict[str, Any], token: str) -> dict[str, Any]:
        url = self._config.base_url.rstrip("/") + "/" + path
        what = f"wechat {path}"
        response = await post_json(self._http, url, body, what=what,
                                   params={"access_token": token})
        if response.status_code != 200:
            raise map_http_failure(what, response.status_code, "bad status")
        try:
            payload = json.loads(response.content)
        except ValueError as exc:
            raise map_http_failure(what, response.status_code, "not JSON") from exc
        if not isinstance(payload, dict):
            raise BadPlatformData(f"{what}: unexpected JSON shape")
        code = payload.get("errcode", 0)
        if code not in (0, None):
            try:
                number = int(code)
            except (TypeError, ValueError) as exc:
                raise BadPlatformData(f"{what}: errcode is not a number") from exc
            raise map_errcode(what, number, str(payload.get("errmsg") or ""))
        return payload
