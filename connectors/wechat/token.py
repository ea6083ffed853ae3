"""The mini-program's access token: ``POST cgi-bin/stable_token``, cached durably, renewed.

The token record (token and absolute expiry) lives in the core's encrypted per-shop store
(:class:`connectors.base.ShopContext`), so a restart or a second process reuses it. It is
renewed ``token_refresh_margin_seconds`` before expiry, and once when WeChat rejects it
(40001 "not latest" / 42001 expired): first by re-reading the store (another process may
hold a newer one), then by asking ``stable_token`` normally, and only if that hands back the
rejected token again with ``force_refresh`` (limited to 20 a day by WeChat).

This module must never log, or put into an exception, a token or the app secret.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from connectors.base import ShopContext
from connectors.common.http import LoopClient, post_json
from connectors.common.token import Clock, DurableToken
from connectors.common.values import as_int
from connectors.errors import BadPlatformData
from connectors.log import get_logger
from connectors.wechat.config import WechatConfig
from connectors.wechat.errors import map_errcode, map_http_failure

log = get_logger(__name__)

SECRET_NAME = "wechat_stable_token"  # noqa: S105 - the store entry's name, not a secret
STABLE_TOKEN = "cgi-bin/stable_token"  # noqa: S105 - an API path, not a secret


@dataclass(frozen=True, slots=True)
class TokenRecord:
    access_token: str
    expires_at: float  # epoch seconds

    def fresh(self, now: datetime, margin: timedelta) -> bool:
        return (now + margin).timestamp() < self.expires_at

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> TokenRecord | None:
        try:
            data = json.loads(text)
            return cls(access_token=str(data["access_token"]),
                       expires_at=float(data["expires_at"]))
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: behave as if nothing was stored


class TokenManager(DurableToken[TokenRecord]):
    """Hands out a valid access token for one mini-program."""

    def __init__(self, config: WechatConfig, context: ShopContext, http: LoopClient,
                 clock: Clock) -> None:
        super().__init__(context, clock, secret_name=SECRET_NAME,
                         margin=timedelta(seconds=config.token_refresh_margin_seconds))
        self._config = config
        self._http = http

    def parse(self, text: str) -> TokenRecord | None:
        return TokenRecord.loads(text)

    async def renew(self, previous: TokenRecord | None) -> TokenRecord:
        return await self._obtain(force=False)

    async def replace(self, rejected: str, previous: TokenRecord | None) -> TokenRecord:
        # stable_token hands back the current token unless forced; force_refresh is limited
        # (20 a day), so it is used only when the normal answer is the rejected token again.
        record = await self._obtain(force=False)
        if record.access_token == rejected:
            record = await self._obtain(force=True)
        return record

    async def _obtain(self, *, force: bool) -> TokenRecord:
        config = self._config
        body = {"grant_type": "client_credential", "appid": config.appid,
                "secret": config.app_secret.get_secret_value(), "force_refresh": force}
        data = await self._request(body)
        token = data.get("access_token")
        expires_in = data.get("expires_in")
        if not isinstance(token, str) or not token or isinstance(expires_in, bool) \
                or not isinstance(expires_in, int | float) or expires_in <= 0:
            raise BadPlatformData(f"wechat {STABLE_TOKEN}: no access_token/expires_in")
        record = TokenRecord(token, self._clock().timestamp() + float(expires_in))
        await self.save(record)
        log.info("wechat_token_renewed", shop=self._context.shop, forced=force)
        return record

    async def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        url = self._config.base_url.rstrip("/") + "/" + STABLE_TOKEN
        what = f"wechat {STABLE_TOKEN}"
        response = await post_json(self._http, url, body, what=what)
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
            error = map_errcode(what, as_int(code), str(payload.get("errmsg") or ""))
            raise error
        return payload
