"""The shop's Douyin access token: ``token.create`` (a self-use app: ``authorization_self``;
a tool app: ``authorization_code`` with the one-time code of the shop's authorization),
renewed with ``token.refresh`` before it expires, kept durably in the shop's encrypted store.

The record (access token, absolute expiry in Unix seconds, refresh token) lives in the core's
per-shop secret store (:class:`connectors.base.ShopContext`) through
:class:`connectors.common.token.DurableToken`, so a restart or a second process reuses it.
It is renewed ``token_refresh_margin_seconds`` before expiry: with the refresh token when one
is known (falling back to a fresh ``token.create`` if Douyin refuses it), and replaced with a
new one when the gateway refuses it.

This module must never log, or put into an exception, a token, a refresh token or the secret.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from connectors.base import ShopContext
from connectors.common.times import to_epoch
from connectors.common.token import Clock, DurableToken
from connectors.common.values import as_int
from connectors.douyin.api import Gateway
from connectors.douyin.config import DouyinConfig
from connectors.douyin.errors import map_token_error
from connectors.errors import AuthError, BadPlatformData, ConfigError
from connectors.log import get_logger

log = get_logger(__name__)

SECRET_NAME = "douyin_token"  # noqa: S105 - the store entry's name, not a secret
TOKEN_CREATE = "token.create"  # noqa: S105 - an API name
TOKEN_REFRESH = "token.refresh"  # noqa: S105 - an API name


@dataclass(frozen=True, slots=True)
class TokenRecord:
    access_token: str
    expires_at: int  # absolute expiry, Unix seconds
    refresh_token: str | None = None

    def fresh(self, now: datetime, margin: timedelta) -> bool:
        return to_epoch(now + margin) < self.expires_at

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> TokenRecord | None:
        try:
            data = json.loads(text)
            return cls(access_token=str(data["access_token"]),
                       expires_at=int(data["expires_at"]),
                       refresh_token=data.get("refresh_token") or None)
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: behave as if nothing was stored


class TokenManager(DurableToken[TokenRecord]):
    """Hands out a valid access token for one shop, renewing it when needed."""

    def __init__(self, config: DouyinConfig, context: ShopContext, gateway: Gateway,
                 clock: Clock) -> None:
        super().__init__(context, clock, secret_name=SECRET_NAME,
                         margin=timedelta(seconds=config.token_refresh_margin_seconds))
        self._config = config
        self._gateway = gateway

    def parse(self, text: str) -> TokenRecord | None:
        return TokenRecord.loads(text)

    async def renew(self, previous: TokenRecord | None) -> TokenRecord:
        if previous is not None and previous.refresh_token:
            try:
                return await self._obtain(TOKEN_REFRESH, {
                    "grant_type": "refresh_token", "refresh_token": previous.refresh_token})
            except (AuthError, BadPlatformData) as exc:
                if isinstance(exc, ConfigError):
                    raise
                # A refresh token expires too (14 days ⚠): a self-use app can start afresh.
                log.info("douyin_token_refresh_refused", shop=self._context.shop,
                         error=exc.message)
        return await self._create()

    async def replace(self, rejected: str, previous: TokenRecord | None) -> TokenRecord:
        return await self._create()

    async def _create(self) -> TokenRecord:
        config = self._config
        if config.app_type == "tool" and config.auth_code is not None:
            # The code is single-use: once traded, only the refresh token keeps the shop; a
            # refusal here asks the merchant to authorize again (a new auth_code).
            return await self._obtain(TOKEN_CREATE, {
                "code": config.auth_code.get_secret_value(),
                "grant_type": "authorization_code"})
        return await self._obtain(TOKEN_CREATE, {
            "code": "", "grant_type": "authorization_self", "shop_id": config.shop_id})

    async def _obtain(self, method: str, params: dict[str, Any]) -> TokenRecord:
        answer = await self._gateway.post(method, params, None)
        if not answer.ok:
            raise map_token_error(answer.code, answer.msg, answer.sub_code, answer.sub_msg)
        record = _record_from(answer.data, to_epoch(self._clock()))
        await self.save(record)
        log.info("douyin_token_renewed", shop=self._context.shop, grant=method)
        return record


def _record_from(data: Any, now: int) -> TokenRecord:
    if not isinstance(data, dict):
        raise BadPlatformData("douyin token: success without data")
    token = data.get("access_token")
    expires_in = data.get("expires_in")
    if not isinstance(token, str) or not token or isinstance(expires_in, bool):
        raise BadPlatformData("douyin token: no access_token/expires_in in the answer")
    seconds = as_int(expires_in)
    if seconds <= 0:
        raise BadPlatformData("douyin token: expires_in is not a positive number")
    refresh = data.get("refresh_token")
    return TokenRecord(access_token=token, expires_at=now + seconds,
                       refresh_token=str(refresh) if refresh else None)
