"""One signed call to the TOP router, and paging over a modified-time window.

:class:`TopApi` builds the system parameters, signs, POSTs the form, unwraps the
non-simplified ``<method>_response`` object and turns every failure into a
:mod:`robot.errors` type (see :mod:`connectors.taobao.errors`). It must never log or put in
an exception the app secret, the session or the signature; all parameters travel in the
form body so that none of them lands in a proxy's URL log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from connectors.common.clock import Clock, PlatformClock, moved_since, probe_get
from connectors.common.paging import fetch_backwards
from connectors.common.times import format_cst
from connectors.common.values import as_int
from connectors.errors import BadPlatformData, Unavailable
from connectors.log import get_logger
from connectors.taobao.config import TaobaoConfig
from connectors.taobao.errors import ClockSkew, map_http_failure, map_top_error
from connectors.taobao.sign import top_sign

log = get_logger(__name__)


def response_key(method: str) -> str:
    """``taobao.trade.fullinfo.get`` → ``trade_fullinfo_get_response``."""
    return method.removeprefix("taobao.").replace(".", "_") + "_response"


def encode_params(params: Mapping[str, object]) -> dict[str, str]:
    """API parameters as TOP strings; None and empty values are dropped (never signed/sent)."""
    encoded: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, datetime):
            text = format_cst(value)
        elif isinstance(value, list | tuple):
            text = ",".join(str(item) for item in value)
        elif isinstance(value, dict):
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        else:
            text = str(value)
        if text != "":
            encoded[name] = text
    return encoded


class TopApi:
    """Signed calls to one TOP gateway with one app and one seller session."""

    def __init__(
        self,
        config: TaobaoConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._config = config
        #: TOP's clock as measured from its answers: windows and the signed ``timestamp``
        #: follow it (TOP refuses a timestamp more than 10 minutes off its own clock).
        self.clock = PlatformClock(
            clock, probe=lambda: probe_get(self._client, self._config.gateway))
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=config.timeout_seconds,
            headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
            event_hooks=self.clock.hooks(),
        )

    def __repr__(self) -> str:
        return f"TopApi(app_key={self._config.app_key!r}, gateway={self._config.gateway!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    def now(self) -> datetime:
        """TOP's time now, as measured (ours until measured)."""
        return self.clock.now()

    def signed_form(
        self, method: str, params: Mapping[str, object], *, session: bool
    ) -> dict[str, str]:
        """System + API parameters with ``sign``; exposed for tests of the wire format."""
        form = encode_params(params)
        form.update(
            method=method,
            app_key=self._config.app_key,
            sign_method=self._config.sign_method,
            timestamp=format_cst(self.clock.now()),
            format="json",
            v="2.0",
            simplify="false",
        )
        if session:
            form["session"] = self._config.session.get_secret_value()
        form["sign"] = top_sign(
            form, self._config.app_secret.get_secret_value(), self._config.sign_method
        )
        return form

    async def call(
        self, method: str, params: Mapping[str, object], *, session: bool = True
    ) -> dict[str, Any]:
        """Call ``method`` and return the inside of its ``<method>_response`` object.

        A timestamp refusal (code 31) is retried once, signed in TOP's time, when the refusal
        itself moved the measured clock (the first call to a platform far off ours);
        otherwise it stands.
        """
        used = self.clock.offset
        try:
            return await self._call_once(method, params, session=session)
        except ClockSkew:
            if not moved_since(self.clock, used):
                raise
            log.info("top_timestamp_resigned", method=method,
                     offset_s=self.clock.offset.total_seconds())
        return await self._call_once(method, params, session=session)

    async def _call_once(
        self, method: str, params: Mapping[str, object], *, session: bool
    ) -> dict[str, Any]:
        form = self.signed_form(method, params, session=session)
        started = time.monotonic()
        try:
            response = await self._client.post(self._config.gateway, data=form)
        except httpx.TimeoutException as exc:
            raise Unavailable(f"{method}: the TOP gateway timed out") from exc
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            raise Unavailable(f"{method}: cannot reach the TOP gateway ({reason})") from exc
        elapsed_ms = round((time.monotonic() - started) * 1000)
        payload = _decode(method, response)
        error = payload.get("error_response")
        if isinstance(error, dict):
            log.debug("top_call_failed", method=method, code=error.get("code"), ms=elapsed_ms)
            raise map_top_error(
                method,
                as_int(error.get("code")),
                str(error.get("msg") or ""),
                str(error.get("sub_code") or ""),
                str(error.get("sub_msg") or ""),
            )
        body = payload.get(response_key(method))
        if not isinstance(body, dict):
            raise BadPlatformData(f"{method}: TOP answer lacks {response_key(method)}")
        log.debug("top_call", method=method, request_id=body.get("request_id"), ms=elapsed_ms)
        return body


def _decode(method: str, response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 500:
        raise map_http_failure(method, response.status_code, "server error")
    try:
        payload = json.loads(response.content)
    except ValueError as exc:
        raise map_http_failure(method, response.status_code, "unreadable body") from exc
    if not isinstance(payload, dict):
        raise map_http_failure(method, response.status_code, "unexpected JSON shape")
    if response.status_code != 200 and "error_response" not in payload:
        raise map_http_failure(method, response.status_code, "unexpected status")
    return payload


def list_items(body: Mapping[str, Any], list_key: str, item_key: str) -> list[dict[str, Any]]:
    """``{"trades": {"trade": [...]}}`` → the list; an absent wrapper means none."""
    wrapper = body.get(list_key)
    if wrapper in (None, ""):
        return []
    items = wrapper.get(item_key) if isinstance(wrapper, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise BadPlatformData(f"TOP list {list_key}.{item_key} is malformed")
    return items


async def fetch_window(
    api: TopApi,
    method: str,
    params: Mapping[str, object],
    *,
    list_key: str,
    item_key: str,
    page_size: int,
) -> list[dict[str, Any]]:
    """Every row of a modified-window query, paging backwards (see
    :mod:`connectors.common.paging`); ``total_results`` is requested, not ``use_has_next``."""

    async def page(page_no: int) -> dict[str, Any]:
        return await api.call(method, {**params, "page_no": page_no, "page_size": page_size})

    return await fetch_backwards(page, rows=lambda body: list_items(body, list_key, item_key),
                                 total_key="total_results", page_size=page_size)


def unique_ids(rows: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    """Distinct ``key`` values as exact strings, first occurrence first."""
    seen: dict[str, None] = {}
    for row in rows:
        value = row.get(key)
        if value not in (None, "") and not isinstance(value, bool):
            seen.setdefault(str(value), None)
    return list(seen)
