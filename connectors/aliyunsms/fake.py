"""A faithful fake of Aliyun SMS ``SendSms`` and ``QuerySendDetails`` (test double;
loopback only).

It verifies each request as Aliyun's gateway does (:mod:`connectors.aliyunsms.protocol`):
the common parameters, the key, the HMAC-SHA1 signature over the request's own method, a
nonce never seen before (``SignatureNonceUsed``) and a Timestamp within 15 minutes of its
clock (``InvalidTimeStamp.Expired``), answering the gateway's refusals with HTTP 400/404 and
``{"RequestId","HostId","Code","Message","Recommend"}``. Then it checks the business rules
(the signature name and the template are approved, the number is a mainland mobile, the
template's variables are all given, at most ``daily_limit`` messages per number, signature
and template a day: ``isv.BUSINESS_LIMIT_CONTROL``) and answers HTTP 200 with ``Code`` ``OK``
and a ``BizId``, or the ``isv.*`` code.

Faults (``POST /__fake__/faults``), besides the common ones: ``limit_control`` (the next N
sends answer ``isv.BUSINESS_LIMIT_CONTROL``), ``lose_answer`` (the next N are sent, then
answered by a gateway's 504 page: the sender cannot know). The messages it sent are in
``/__fake__/state`` (``messages``). The test credentials are public on purpose; nothing here
may be pointed at Aliyun.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.aliyunsms import protocol as p
from connectors.fakebase import (
    CallLog,
    CallRecord,
    CatalogItem,
    FakeBase,
    Faults,
    OrderRequest,
    api_endpoint,
    control_routes,
    fake_middleware,
)
from connectors.fakekit import WriteBackLog, same_text, wall_now

TEST_KEY_ID = "LTAIfake0000000000000000"  # public on purpose: the fake's own
TEST_KEY_SECRET = "aliyun-sms-fake-secret-000000"  # noqa: S105 - the fake's public test secret
TEST_SIGN_NAME = "测试小店"
#: The fake's approved templates: code -> (variables, text). ``${name}`` as Aliyun writes them.
TEST_TEMPLATES: Mapping[str, tuple[tuple[str, ...], str]] = {
    "SMS_100000001": (("order", "link"), "您的订单${order}已发货，请在此领取：${link}"),
    "SMS_100000002": (("order", "link"), "Order ${order} is ready. Pick it up at ${link}"),
    "SMS_100000003": (("order", "link", "codes"),
                      "您的订单${order}卡密：${codes}，详情：${link}"),
}
HOST_ID = "dysmsapi.aliyuncs.com"
GATEWAY_TIMEOUT_PAGE = "<html><body><h1>504 Gateway Time-out</h1></body></html>"
_COMMON = ("AccessKeyId", "Action", "SignatureMethod", "SignatureNonce", "SignatureVersion",
           "Timestamp", "Version", "Signature")


@dataclass
class SmsFaults(Faults):
    limit_control: int = 0
    lose_answer: int = 0


@dataclass
class SentSms:
    biz_id: str
    phone: str
    sign_name: str
    template_code: str
    params: dict[str, str]
    out_id: str
    text: str
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "at": self.at.isoformat()}


class SmsCallLog(CallLog):
    """The call log, never keeping the secret's signature, the number or the variables."""

    def record(self, http_method: str, path: str, api: str, payload: Mapping[str, Any],
               status: int, outcome: str, *, received_at: float | None = None) -> CallRecord:
        hidden = ("signature", "phonenumbers", "templateparam", "accesskeyid")
        shown = {k: ("<redacted>" if k.lower() in hidden else v) for k, v in payload.items()}
        return super().record(http_method, path, api, shown, status, outcome,
                              received_at=received_at)


class Refusal(Exception):
    """An answer other than OK: HTTP status, Code and Message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status, self.code, self.text = status, code, message


@dataclass
class AliyunSmsFakeState(FakeBase):
    """Aliyun's side: one account's key, signature names, templates, the messages sent."""

    access_key_id: str = TEST_KEY_ID
    access_key_secret: str = TEST_KEY_SECRET
    sign_names: tuple[str, ...] = (TEST_SIGN_NAME,)
    templates: Mapping[str, tuple[tuple[str, ...], str]] = field(
        default_factory=lambda: dict(TEST_TEMPLATES))
    daily_limit: int = 50  # per number, signature and template (Aliyun's default for notices)
    clock: Callable[[], datetime] = wall_now
    clock_offset_seconds: float = 0.0
    sent: list[SentSms] = field(default_factory=list)
    nonces: dict[str, datetime] = field(default_factory=dict)
    faults: SmsFaults = field(default_factory=SmsFaults)

    platform = "aliyun-sms"

    def __post_init__(self) -> None:
        self._init_base(self.clock, self.clock_offset_seconds)
        self.call_log = SmsCallLog()
        self.writebacks = WriteBackLog()
        self._ids = itertools.count(1)

    # -- FakeBase -------------------------------------------------------------------------

    def catalog(self) -> Sequence[CatalogItem]:
        return []

    def create_paid_order(self, request: OrderRequest) -> str:
        raise ValueError("Aliyun SMS sends messages: it takes no buyer orders")

    def expire_tokens(self) -> None:
        """Aliyun keys do not expire (a person disables them in the console)."""

    def platform_snapshot(self) -> dict[str, Any]:
        return {"messages": [m.to_json() for m in self.sent], "nonces": len(self.nonces)}

    def call_outcome(self, status: int, document: Any) -> str:
        code = document.get("Code") if isinstance(document, dict) else None
        return "ok" if code == p.OK else f"error {code or status}"

    def banner(self, base_url: str) -> list[str]:
        lines = [f"signature name: {name}" for name in self.sign_names]
        lines += [f"template {code}: {text}" for code, (_v, text) in self.templates.items()]
        lines += [f"messages sent: curl {base_url}/__fake__/state",
                  f"faults: curl -X POST {base_url}/__fake__/faults -d "
                  "'{\"limit_control\": 1}'"]
        return lines

    # -- SendSms --------------------------------------------------------------------------

    def verify(self, method: str, params: Mapping[str, str]) -> None:
        """The gateway's checks, in its order; Refusal for the first that fails."""
        missing = [name for name in _COMMON if not params.get(name)]
        if missing:
            raise Refusal(400, f"Missing{missing[0]}",
                          f"{missing[0]} is mandatory for this action.")
        if params["AccessKeyId"] != self.access_key_id:
            raise Refusal(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if (params["SignatureMethod"] != p.SIGNATURE_METHOD
                or params["SignatureVersion"] != p.SIGNATURE_VERSION):
            raise Refusal(400, "InvalidSignatureMethod.Malformed",
                          "Specified signature method is not valid.")
        if params["Version"] != p.API_VERSION or params["Action"] not in (p.ACTION,
                                                                          p.QUERY_ACTION):
            raise Refusal(404, "InvalidAction.NotFound",
                          "Specified api is not found, please check your url and method.")
        self._check_time(params["Timestamp"])
        expected = p.signature(self.access_key_secret, method, params)
        if not same_text(params["Signature"], expected):
            raise Refusal(400, "SignatureDoesNotMatch",
                          "Specified signature is not matched with our calculation. server "
                          f"string to sign is:{p.string_to_sign(method, params)}")
        with self.lock:
            if params["SignatureNonce"] in self.nonces:
                raise Refusal(400, "SignatureNonceUsed", "Specified signature nonce was used "
                              "already.")
            self.nonces[params["SignatureNonce"]] = self.now()

    def _check_time(self, raw: str) -> None:
        try:
            sent_at = datetime.strptime(raw, p.TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise Refusal(400, "InvalidTimeStamp.Format",
                          "Specified time stamp or date value is not well formatted.") from None
        if abs((self.now() - sent_at).total_seconds()) > p.TIMESTAMP_WINDOW_SECONDS:
            raise Refusal(400, "InvalidTimeStamp.Expired",
                          "Specified time stamp or date value is expired.")

    def send(self, params: Mapping[str, str]) -> SentSms:
        """The business checks and the send; Refusal (HTTP 200, ``isv.*``) when refused."""
        phone = params.get("PhoneNumbers", "")
        if not p.MAINLAND_MOBILE.fullmatch(phone):
            raise Refusal(200, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if params.get("SignName") not in self.sign_names:
            raise Refusal(200, "isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        template = self.templates.get(params.get("TemplateCode", ""))
        if template is None:
            raise Refusal(200, "isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        values = _template_params(params.get("TemplateParam", "{}"))
        names, text = template
        if any(name not in values for name in names):
            raise Refusal(200, "isv.TEMPLATE_MISSING_PARAMETERS", "模板缺少变量")
        with self.lock:
            if self.take_fault("limit_control") or self._over_limit(params):
                raise Refusal(200, "isv.BUSINESS_LIMIT_CONTROL", "触发天级流控Permits:"
                              f"{self.daily_limit}")
            for name in names:
                text = text.replace("${" + name + "}", values[name])
            sms = SentSms(f"{next(self._ids):06d}{uuid.uuid4().int % 10**12:012d}^0", phone,
                          params["SignName"], params["TemplateCode"], values,
                          params.get("OutId", ""), text, self.now())
            self.sent.append(sms)
            return sms

    def query(self, params: Mapping[str, str]) -> dict[str, Any]:
        """QuerySendDetails: one page of what was sent to a number on a day (China's)."""
        phone, day = params.get("PhoneNumber", ""), params.get("SendDate", "")
        size, page = params.get("PageSize", ""), params.get("CurrentPage", "")
        if not phone or not day or not size.isdigit() or not page.isdigit():
            raise Refusal(200, "isv.INVALID_PARAMETERS", "参数异常")
        if not 1 <= int(size) <= p.QUERY_PAGE_SIZE:
            raise Refusal(200, "isv.INVALID_PARAMETERS", "PageSize 超出范围")
        with self.lock:
            rows = [m for m in self.sent if m.phone == phone
                    and m.at.astimezone(p.CHINA).strftime("%Y%m%d") == day]
        start = (int(page) - 1) * int(size)
        shown = [{"PhoneNum": m.phone, "SendStatus": 3, "ErrCode": "DELIVERED",
                  "TemplateCode": m.template_code, "Content": m.text,
                  "SendDate": m.at.astimezone(p.CHINA).strftime("%Y-%m-%d %H:%M:%S"),
                  "ReceiveDate": m.at.astimezone(p.CHINA).strftime("%Y-%m-%d %H:%M:%S"),
                  "OutId": m.out_id} for m in rows[start:start + int(size)]]
        return {"Code": p.OK, "Message": p.OK, "TotalCount": len(rows),
                "SmsSendDetailDTOs": {"SmsSendDetailDTO": shown}}

    def _over_limit(self, params: Mapping[str, str]) -> bool:
        since = self.now() - timedelta(days=1)
        same = [m for m in self.sent if m.phone == params["PhoneNumbers"] and m.at > since
                and m.sign_name == params["SignName"]
                and m.template_code == params["TemplateCode"]]
        return len(same) >= self.daily_limit


def _template_params(raw: str) -> dict[str, str]:
    try:
        values = json.loads(raw)
    except ValueError:
        raise Refusal(200, "isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值") from None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise Refusal(200, "isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
    return values


def _answer(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"RequestId": str(uuid.uuid4()).upper(), **body}, status_code=status)


def make_app(state: AliyunSmsFakeState) -> Starlette:
    """The fake's app: ``/`` (SendSms by GET or form POST) and the control API."""

    async def send_sms(request: Request) -> Response:
        params = dict(request.query_params)
        if request.method == "POST":
            form = (await request.body()).decode("utf-8", "replace")
            params.update(parse_qsl(form, keep_blank_values=True))
        try:
            state.verify(request.method, params)
            if params["Action"] == p.QUERY_ACTION:
                return _answer(200, state.query(params))
            sms = state.send(params)
        except Refusal as refusal:
            body: dict[str, Any] = {"Code": refusal.code, "Message": refusal.text}
            if refusal.status != 200:
                body |= {"HostId": HOST_ID,
                         "Recommend": f"https://api.aliyun.com/troubleshoot?q={refusal.code}"}
            return _answer(refusal.status, body)
        if state.take_fault("lose_answer"):
            return Response(GATEWAY_TIMEOUT_PAGE, status_code=504, media_type="text/html")
        return _answer(200, {"Code": p.OK, "Message": p.OK, "BizId": sms.biz_id})

    endpoint = api_endpoint(state, send_sms, error_page=GATEWAY_TIMEOUT_PAGE, error_status=502)
    return Starlette(routes=[Route("/", endpoint, methods=["GET", "POST"]),
                             *control_routes(state)],
                     middleware=fake_middleware(state))


__all__ = ["TEST_KEY_ID", "TEST_KEY_SECRET", "TEST_SIGN_NAME", "TEST_TEMPLATES",
           "AliyunSmsFakeState", "make_app"]
