"""The shop's Youzan access token: obtained from ``POST /auth/token``, cached durably, renewed.

The token record (access token, its absolute ``expires`` in epoch milliseconds, and for tool
apps the rotating refresh token) is kept in the core's encrypted per-shop store
(:class:`connectors.base.ShopContext`), so a restart or a second process reuses it instead of
asking again. It is renewed ``token_refresh_margin_seconds`` before ``expires`` and whenever
the gateway rejects it (4201/4202/4203): first by re-reading the store (another process may
have renewed it already: a forced silent refresh invalidates the previous token at once), else
by asking Youzan for a new one.

This module must never log, or put into an exception, a token, a refresh token, an
authorization code or the client secret.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from connectors.base import ShopContext
from connectors.common.http import LoopClient, post_json
from connectors.common.times import epoch_ms
from connectors.common.token import Clock, DurableToken
from connectors.common.values import as_int
from connectors.errors import AuthError, BadPlatformData
from connectors.log import get_logger
from connectors.youzan.config import YouzanConfig
from connectors.youzan.errors import map_http_failure, map_token_error

log = get_logger(__name__)

SECRET_NAME = "youzan_token"  # noqa: S105 - the store entry's name, not a secret


@dataclass(frozen=True, slots=True)
class TokenRecord:
    access_token: str
    expires_ms: int  # absolute expiry, epoch milliseconds (Youzan's ``expires``)
    refresh_token: str | None = None
    code_used: bool = False  # a tool app's one-time authorization code has been spent

    def fresh(self, now: datetime, margin: timedelta) -> bool:
        return epoch_ms(now + margin) < self.expires_ms

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def loads(cls, text: str) -> TokenRecord | None:
        try:
            data = json.loads(text)
            return cls(access_token=str(data["access_token"]),
                       expires_ms=int(data["expires_ms"]),
                       refresh_token=data.get("refresh_token"),
                       code_used=bool(data.get("code_used", False)))
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: behave as if nothing was stored


class TokenManager(DurableToken[TokenRecord]):
    """Hands out a valid access token for one shop, renewing it when needed."""

    def __init__(self, config: YouzanConfig, context: ShopContext, http: LoopClient,
                 clock: Clock) -> None:
        super().__init__(context, clock, secret_name=SECRET_NAME,
                         margin=timedelta(seconds=config.token_refresh_margin_seconds))
        self._config = config
        self._http = http

    def parse(self, text: str) -> TokenRecord | None:
        return TokenRecord.loads(text)

    async def renew(self, previous: TokenRecord | None) -> TokenRecord:
        # A stored token close to expiry is replaced (refresh=true): asking without it would
        # hand back the same soon-expiring token.
        return await self._obtain(previous, force=previous is not None)

    async def replace(self, rejected: str, previous: TokenRecord | None) -> TokenRecord:
        return await self._obtain(previous, force=True)

    async def _obtain(self, previous: TokenRecord | None, *, force: bool) -> TokenRecord:
        config = self._config
        body: dict[str, Any] = {
            "client_id": config.client_id,
            "client_secret": config.client_secret.get_secret_value(),
        }
        code_used = previous.code_used if previous else False
        if config.authorize_type == "silent":
            body.update(authorize_type="silent", grant_id=config.grant_id, refresh=force)
        else:
            refresh = (previous.refresh_token if previous and previous.refresh_token
                       else config.refresh_token.get_secret_value()
                       if config.refresh_token else None)
            if refresh:
                body.update(authorize_type="refresh_token", refresh_token=refresh)
            elif config.auth_code is not None and not code_used:
                body.update(authorize_type="authorization_code",
                            code=config.auth_code.get_secret_value())
                code_used = True
            else:
                raise AuthError("youzan: no refresh token and the authorization code was used; "
                                "the merchant must authorize the app again")
        data = await self._request(body)
        record = _record_from(data, code_used=code_used,
                              keep_refresh=previous.refresh_token if previous else None)
        if record.expires_ms <= epoch_ms(self._clock()):
            raise BadPlatformData("youzan /auth/token: the new token's expires is in the past")
        await self.save(record)
        log.info("youzan_token_renewed", shop=self._context.shop,
                 grant=body["authorize_type"], forced=force)
        return record

    async def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        url = self._config.base_url.rstrip("/") + "/auth/token"
        response = await post_json(self._http, url, body, what="youzan /auth/token")
        if response.status_code >= 500:
            raise map_http_failure("youzan /auth/token", response.status_code, "server error")
        try:
            payload = json.loads(response.content)
        except ValueError as exc:
            raise map_http_failure("youzan /auth/token", response.status_code, "not JSON") from exc
        if not isinstance(payload, dict):
            raise BadPlatformData("youzan /auth/token: unexpected JSON shape")
        if payload.get("success") is not True:
            raise map_token_error(as_int(payload.get("code")), str(payload.get("message") or ""))
        data = payload.get("data")
        if not isinstance(data, dict):
            raise BadPlatformData("youzan /auth/token: success without data")
        return data


def _record_from(data: dict[str, Any], *, code_used: bool, keep_refresh: str | None
                 ) -> TokenRecord:
    token = data.get("access_token")
    expires = data.get("expires")
    if not isinstance(token, str) or not token or isinstance(expires, bool):
        raise BadPlatformData("youzan /auth/token: no access_token/expires in the answer")
    try:
        expires_ms = int(expires) if isinstance(expires, int | float) else int(str(expires))
    except (TypeError, ValueError) as exc:
        raise BadPlatformData("youzan /auth/token: expires is not a number") from exc
    refresh = data.get("refresh_token")
    return TokenRecord(access_token=token, expires_ms=expires_ms,
                       refresh_token=str(refresh) if refresh else keep_refresh,
                       code_used=code_used)
