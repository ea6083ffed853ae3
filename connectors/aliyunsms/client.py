"""Sending one SMS through Aliyun's SendSms (see :mod:`connectors.aliyunsms.protocol`).

Which failures are "not sent" and which "may be sent": a connection that could not be
opened, or an answer carrying any ``Code`` but ``OK``, is not sent; a timeout or a dropped
connection after the request went out, or an answer we cannot read (a gateway's HTML page),
may be sent (:class:`connectors.notifier.SendUnknown`). SendSms has no idempotency key of its
own: ``OutId`` (our event key) only comes back in delivery reports, so the core never re-sends
an unknown message by itself.

Never logs or raises with the phone number, the template's values or the credentials.
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import httpx

from connectors.aliyunsms import protocol as p
from connectors.errors import Unavailable
from connectors.notifier import Channel, Message, SendUnknown, Sent


class AliyunSmsNotifier:
    """SMS through one Aliyun account, one approved signature and template per language."""

    channel: ClassVar[Channel] = Channel.SMS

    def __init__(self, *, access_key_id: str, access_key_secret: str, sign_name: str,
                 templates: dict[str, str], endpoint: str = p.DEFAULT_ENDPOINT,
                 region: str = "cn-hangzhou", timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._key_id = access_key_id
        self._secret = access_key_secret
        self.sign_name = sign_name
        self.templates = templates
        self.endpoint = endpoint.rstrip("/") + "/"
        self.region = region
        self.timeout = timeout
        self._transport = transport

    def template_for(self, language: str) -> str:
        return self.templates.get(language) or next(iter(self.templates.values()))

    async def send(self, message: Message) -> Sent:
        params = p.send_params(
            access_key_id=self._key_id, region=self.region, phone=message.to,
            sign_name=self.sign_name, template_code=self.template_for(message.language),
            template_param=message.params, out_id=message.key,
            nonce=secrets.token_hex(16), now=datetime.now(UTC))
        try:
            response = await self._post(params)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise Unavailable(f"aliyun sms: cannot connect ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise SendUnknown(f"aliyun sms: {type(exc).__name__} after the request was sent; "
                              "it may have been sent") from exc
        return _outcome(response)

    async def confirm(self, key: str, to: str, since: datetime) -> Sent | None:
        """Whether Aliyun holds a message sent under ``key`` (its OutId) to ``to`` on the
        days from ``since`` to today (QuerySendDetails, page by page)."""
        day = since.astimezone(p.CHINA).date()
        last = datetime.now(UTC).astimezone(p.CHINA).date()
        for _ in range(p.QUERY_MAX_DAYS):
            if day > last:
                break
            found = await self._find(key, to, day)
            if found is not None:
                return found
            day += timedelta(days=1)
        return None

    async def _find(self, key: str, to: str, day: date) -> Sent | None:
        for page in range(1, p.QUERY_MAX_PAGES + 1):
            params = p.query_params(access_key_id=self._key_id, region=self.region, phone=to,
                                    day=day, page=page, nonce=secrets.token_hex(16),
                                    now=datetime.now(UTC))
            try:
                document = _document(await self._post(params))
            except httpx.HTTPError as exc:
                raise Unavailable(f"aliyun sms: QuerySendDetails failed "
                                  f"({type(exc).__name__})") from exc
            rows = (document.get("SmsSendDetailDTOs") or {}).get("SmsSendDetailDTO") or []
            for row in rows:
                if isinstance(row, dict) and row.get("OutId") == key:
                    return Sent(f"OutId {key}, status {row.get('SendStatus')}")
            if len(rows) < p.QUERY_PAGE_SIZE:
                return None
        return None

    async def _post(self, params: dict[str, str]) -> httpx.Response:
        """POST with the parameters in the form body, signed "POST&%2F&...": the same RPC
        signature as GET, but the number and the variables stay out of the URL, which HTTP
        libraries and proxies log. One client per request: a notice is rare, and nothing is
        left bound to an event loop."""
        params["Signature"] = p.signature(self._secret, "POST", params)
        async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport) as http:
            return await http.post(self.endpoint, data=params)

    async def aclose(self) -> None:
        """Nothing is kept open between messages."""


def _document(response: httpx.Response) -> dict[str, Any]:
    """A QuerySendDetails answer that is OK, or the error it stands for."""
    try:
        document: Any = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("Code"), str):
        raise Unavailable(f"aliyun sms: HTTP {response.status_code} with no readable answer")
    if document["Code"] != p.OK:
        raise p.error_for(document["Code"], str(document.get("Message") or ""))
    return document


def _outcome(response: httpx.Response) -> Sent:
    try:
        document: Any = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("Code"), str):
        raise SendUnknown(f"aliyun sms: HTTP {response.status_code} with no readable answer; "
                          "it may have been sent")
    code = document["Code"]
    if code == p.OK and response.status_code == 200:
        return Sent(str(document.get("BizId") or ""))
    raise p.error_for(code, str(document.get("Message") or ""))
