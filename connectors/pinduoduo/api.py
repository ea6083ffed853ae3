"""Signed calls to the POP router, with the merchant's token kept fresh.

:class:`PopApi` adds the common parameters (``type``, ``client_id``, ``access_token``,
``timestamp`` in seconds, ``data_type=JSON``, ``version=V1``), signs, posts a JSON object or
a form, unwraps the API's response object and turns every failure into a
:mod:`robot.errors` type (see :mod:`connectors.pinduoduo.errors`). Around that it:

* waits on the client-side :class:`~connectors.pinduoduo.limiter.RateLimiter`;
* retries 52101-52103 / 70031 and HTTP 5xx answers with exponential backoff, a few times;
* refreshes the access token before it expires, and on 10019 refreshes and retries once;
  a refresh POP refuses becomes :class:`robot.errors.AuthError` (the merchant re-authorizes).

It must never log or put in an exception the client secret, a token or the signature.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from connectors.base import ShopContext
from connectors.common.clock import Clock, PlatformClock, moved_since, probe_get, utc_now
from connectors.common.context import MemoryContext
from connectors.common.paging import fetch_backwards
from connectors.common.times import to_epoch
from connectors.common.values import as_int
from connectors.errors import (
    AuthError,
    BadPlatformData,
    Fatal,
    PermissionDenied,
    RobotError,
    Throttled,
    Unavailable,
)
from connectors.log import get_logger
from connectors.pinduoduo.config import PinduoduoConfig
from connectors.pinduoduo.errors import (
    RETRYABLE_CODES,
    AccessTokenExpired,
    AppRejected,
    PddRejected,
    map_http_failure,
    map_pdd_error,
)
from connectors.pinduoduo.limiter import SHARED, RateLimiter, Sleep
from connectors.pinduoduo.sign import pdd_sign
from connectors.pinduoduo.tokens import TokenSet, TokenStore

log = get_logger(__name__)

#: The object each API answers inside (POP does not derive it from the API name).
RESPONSE_KEYS = {
    "pdd.pop.auth.token.create": "pop_auth_token_create_response",
    "pdd.pop.auth.token.refresh": "pop_auth_token_refresh_response",
    "pdd.order.number.list.increment.get": "order_sn_increment_get_response",
    "pdd.order.information.get": "order_info_get_response",
    "pdd.refund.list.increment.get": "refund_increment_get_response",
    "pdd.logistics.online.send": "logistics_online_send_response",
    "pdd.order.note.update": "response",
    "pdd.logistics.companies.get": "logistics_companies_get_response",
}
TOKEN_APIS = frozenset({"pdd.pop.auth.token.create", "pdd.pop.auth.token.refresh"})


def encode_params(params: Mapping[str, object]) -> dict[str, str]:
    """Business parameters as POP strings; None and empty values are dropped (never sent)."""
    encoded: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, datetime):
            text = str(to_epoch(value))
        elif isinstance(value, list | tuple | dict):
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        else:
            text = str(value)
        if text != "":
            encoded[name] = text
    return encoded


class _Transient(Exception):
    """A throttled/unavailable answer worth another try; carries the mapped error."""

    def __init__(self, error: RobotError) -> None:
        super().__init__(error.message)
        self.error = error


class PopApi:
    """Signed calls to one POP gateway for one app and one merchant."""

    def __init__(
        self,
        config: PinduoduoConfig,
        *,
        context: ShopContext | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._config = config
        self._context = context or MemoryContext("pinduoduo")
        self._store = TokenStore(config, self._context)
        self._clock = clock or utc_now
        #: POP's clock as measured from its answers: windows and the signed ``timestamp``
        #: follow it (POP refuses a timestamp far off its own clock).
        self.clock = PlatformClock(
            self._clock, probe=lambda: probe_get(self._client, self._config.gateway))
        self._sleep = sleep or asyncio.sleep
        self._limiter = limiter or SHARED
        self._tokens: TokenSet | None = None
        self._locks: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self.refreshes = 0  # token refreshes done by this instance (tests, metrics)
        # No keep-alive: a pooled connection belongs to the event loop that opened it, and a
        # connector may be driven from several loops (CLI commands, tests). POP calls come
        # seconds apart, so reuse would rarely pay off anyway.
        self._client = httpx.AsyncClient(
            transport=transport, timeout=config.timeout_seconds,
            limits=httpx.Limits(max_keepalive_connections=0),
            event_hooks=self.clock.hooks(),
        )

    def __repr__(self) -> str:
        return f"PopApi(client_id={self._config.client_id!r}, gateway={self._config.gateway!r})"

    @property
    def _refresh_lock(self) -> asyncio.Lock:
        """One refresh at a time within the running event loop (a lock per loop)."""
        loop = asyncio.get_running_loop()
        if self._locks is None or self._locks[0] is not loop:
            self._locks = (loop, asyncio.Lock())
        return self._locks[1]

    @property
    def merchant(self) -> str:
        return self._context.shop

    async def aclose(self) -> None:
        await self._client.aclose()

    def now(self) -> datetime:
        """POP's time now, as measured (ours until measured)."""
        return self.clock.now()

    # -- the wire ------------------------------------------------------------------------

    def signed_params(self, api: str, params: Mapping[str, object],
                      access_token: str | None) -> dict[str, str]:
        """Common + business parameters with ``sign``; exposed for tests of the wire format."""
        sent = encode_params(params)
        sent.update(
            type=api,
            client_id=self._config.client_id,
            timestamp=str(to_epoch(self.clock.now())),
            data_type="JSON",
            version="V1",
        )
        if access_token is not None:
            sent["access_token"] = access_token
        sent["sign"] = pdd_sign(sent, self._config.client_secret.get_secret_value())
        return sent

    async def _post(self, api: str, params: Mapping[str, object],
                    access_token: str | None) -> dict[str, Any]:
        """One signed request; returns the API's response object or raises (``_Transient``
        for answers worth retrying)."""
        sent = self.signed_params(api, params, access_token)
        started = time.monotonic()
        try:
            if self._config.request_format == "json":
                response = await self._client.post(
                    self._config.gateway, content=json.dumps(sent, ensure_ascii=False).encode(),
                    headers={"Content-Type": "application/json;charset=utf-8"})
            else:
                response = await self._client.post(self._config.gateway, data=sent)
        except httpx.TimeoutException as exc:
            raise Unavailable(f"{api}: the POP gateway timed out") from exc
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            raise Unavailable(f"{api}: cannot reach the POP gateway ({reason})") from exc
        elapsed_ms = round((time.monotonic() - started) * 1000)
        payload = _decode(api, response)
        error = payload.get("error_response")
        if isinstance(error, dict):
            code = as_int(error.get("error_code"))
            log.debug("pdd_call_failed", api=api, code=code, ms=elapsed_ms,
                      request_id=error.get("request_id"))
            mapped = map_pdd_error(api, code, str(error.get("error_msg") or ""),
                                   str(error.get("sub_code") or ""),
                                   str(error.get("sub_msg") or ""))
            if code in RETRYABLE_CODES:
                raise _Transient(mapped)
            raise mapped
        key = RESPONSE_KEYS.get(api, api.removeprefix("pdd.").replace(".", "_") + "_response")
        body = payload.get(key)
        if not isinstance(body, dict):
            raise BadPlatformData(f"{api}: POP answer lacks {key}")
        log.debug("pdd_call", api=api, ms=elapsed_ms, request_id=payload.get("request_id"))
        return body

    async def _signed_post(self, api: str, params: Mapping[str, object],
                           access_token: str | None) -> dict[str, Any]:
        """:meth:`_post`, re-signed once in POP's time when a refusal's own answer moved the
        measured clock (POP refuses a timestamp far off its clock; the code it uses for
        that is not documented, so any refusal qualifies, and only then)."""
        used = self.clock.offset
        try:
            return await self._post(api, params, access_token)
        except (Fatal, AuthError, PddRejected) as exc:
            if not moved_since(self.clock, used):
                raise
            log.info("pdd_timestamp_resigned", api=api, error=exc.message,
                     offset_s=self.clock.offset.total_seconds())
        return await self._post(api, params, access_token)

    async def _with_retries(self, api: str, params: Mapping[str, object],
                            access_token: str | None) -> dict[str, Any]:
        attempt = 0
        while True:
            await self._limiter.acquire(api, client_id=self._config.client_id,
                                        merchant=self.merchant)
            try:
                return await self._signed_post(api, params, access_token)
            except _Transient as transient:
                if attempt >= self._config.max_retries:
                    raise transient.error from None
                delay = self._config.backoff_seconds * (2 ** attempt)
                if isinstance(transient.error, Throttled) and transient.error.retry_after:
                    delay = max(delay, min(transient.error.retry_after, 60.0))
                log.info("pdd_call_retry", api=api, attempt=attempt + 1, delay_s=delay,
                         error=transient.error.message)
                attempt += 1
                await self._sleep(delay)

    # -- tokens --------------------------------------------------------------------------

    async def _current_tokens(self) -> TokenSet:
        if self._tokens is None:
            self._tokens = await asyncio.to_thread(self._store.load)
        if self._tokens is None:
            await self._create_from_code()
        assert self._tokens is not None
        return self._tokens

    async def _create_from_code(self) -> None:
        async with self._refresh_lock:
            if self._tokens is not None:
                return
            code = self._config.code
            if code is None:
                raise AuthError("pinduoduo: no token and no authorization code; re-authorize")
            try:
                body = await self._with_retries(
                    "pdd.pop.auth.token.create", {"code": code.get_secret_value()}, None)
            except AppRejected:
                raise
            except (AuthError, PermissionDenied, PddRejected) as exc:
                raise AuthError(f"pinduoduo: exchanging the authorization code failed "
                                f"({exc.message}); authorize the app again") from exc
            tokens = TokenSet.from_response(body, self._clock(), self._store.seed)
            await asyncio.to_thread(self._store.save, tokens)
            self._tokens = tokens
            log.info("pdd_token_created", shop=self.merchant, expires_at=str(tokens.expires_at))

    async def access_token(self) -> str:
        """A valid access token, refreshed first when it is about to expire."""
        tokens = await self._current_tokens()
        margin = timedelta(seconds=self._config.refresh_margin_seconds)
        if tokens.expiring(self._clock(), margin) and tokens.refresh_token:
            try:
                await self.refresh(stale=tokens.access_token)
            except AuthError:
                if tokens.expired(self._clock()):
                    raise
                # Still valid for a while: use it, and try refreshing again next call.
                log.warning("pdd_token_refresh_failed_early", shop=self.merchant)
                return tokens.access_token
        assert self._tokens is not None
        return self._tokens.access_token

    async def refresh(self, *, stale: str) -> None:
        """Replace the access token ``stale`` (unless someone already did) via the refresh
        token; AuthError when POP refuses (the merchant must authorize the app again)."""
        async with self._refresh_lock:
            # Another connector or process sharing the store may have refreshed already.
            stored = await asyncio.to_thread(self._store.load)
            margin = timedelta(seconds=self._config.refresh_margin_seconds)
            if (stored is not None and stored.access_token != stale
                    and not stored.expiring(self._clock(), margin)):
                self._tokens = stored
                return
            current = stored or self._tokens
            if current is None or not current.refresh_token:
                raise AuthError("pinduoduo: the access token expired and there is no refresh "
                                "token; authorize the app again")
            refresh_until = current.refresh_expires_at
            if refresh_until is not None and self._clock() >= refresh_until:
                raise AuthError("pinduoduo: the refresh token expired; authorize the app again")
            try:
                body = await self._with_retries(
                    "pdd.pop.auth.token.refresh", {"refresh_token": current.refresh_token}, None)
            except AppRejected:
                raise
            except (AuthError, PermissionDenied, PddRejected) as exc:
                raise AuthError(f"pinduoduo: refreshing the access token failed ({exc.message}); "
                                "authorize the app again") from exc
            tokens = TokenSet.from_response(body, self._clock(), self._store.seed)
            if tokens.refresh_token is None:
                tokens = TokenSet(tokens.access_token, current.refresh_token, tokens.expires_at,
                                  current.refresh_expires_at, tokens.owner_id or current.owner_id,
                                  tokens.seed)
            await asyncio.to_thread(self._store.save, tokens)
            self._tokens = tokens
            self.refreshes += 1
            log.info("pdd_token_refreshed", shop=self.merchant, expires_at=str(tokens.expires_at))

    # -- the public call -----------------------------------------------------------------

    async def call(self, api: str, params: Mapping[str, object]) -> dict[str, Any]:
        """Call ``api`` and return the inside of its response object."""
        if api in TOKEN_APIS:
            return await self._with_retries(api, params, None)
        token = await self.access_token()
        try:
            return await self._with_retries(api, params, token)
        except AccessTokenExpired:
            await self.refresh(stale=token)
            assert self._tokens is not None
            try:
                return await self._with_retries(api, params, self._tokens.access_token)
            except AccessTokenExpired as exc:
                # The refresh itself worked, so the authorization is good: this is the
                # platform's tokens changing under us (another process refreshed, or POP
                # expired the new token at once). Retry later; never pause the shop for it.
                raise Unavailable(f"{exc.message}; a freshly refreshed token was refused "
                                  "too (will retry)") from exc


def _decode(api: str, response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 500 or response.status_code == 429:
        raise _Transient(map_http_failure(api, response.status_code, "server error"))
    try:
        payload = json.loads(response.content)
    except ValueError as exc:
        raise map_http_failure(api, response.status_code, "not JSON") from exc
    if not isinstance(payload, dict):
        raise map_http_failure(api, response.status_code, "unexpected JSON shape")
    if response.status_code != 200 and "error_response" not in payload:
        raise map_http_failure(api, response.status_code, "unexpected status")
    return payload


Fetch = Callable[[int], Awaitable[dict[str, Any]]]


async def fetch_window(fetch: Fetch, *, list_key: str, page_size: int) -> list[dict[str, Any]]:
    """Every row of an increment window, paging backwards (POP's doc: only backward paging
    avoids missed orders; see :mod:`connectors.common.paging`). ``total_count`` is used, not
    ``has_next``. Rows can repeat; callers de-duplicate."""
    return await fetch_backwards(fetch, rows=lambda body: _rows(body, list_key),
                                 total_key="total_count", page_size=page_size)


def _rows(body: Mapping[str, Any], list_key: str) -> list[dict[str, Any]]:
    items = body.get(list_key)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise BadPlatformData(f"POP list {list_key} is malformed")
    return items
