"""Aliyun SMS (短信服务, ``dysmsapi`` 2017-05-25) ``SendSms``: request signing and answers.

The RPC signature (version 1.0), as Aliyun's own SDK computes it
(aliyun-openapi-python-sdk, ``aliyunsdkcore/auth/composer/rpc_signature_composer.py``)::

    canonical     = "&".join(pe(k) + "=" + pe(v) for k, v in sorted(params))  # Signature excluded
    string_to_sign = METHOD + "&" + pe("/") + "&" + pe(canonical)            # "GET&%2F&..."
    Signature     = base64(HMAC-SHA1(key = AccessKeySecret + "&", string_to_sign))

``pe`` is RFC 3986 percent-encoding of UTF-8 (unreserved ``A-Z a-z 0-9 - _ . ~`` kept; space
is ``%20``, ``*`` is ``%2A``). Common parameters: ``AccessKeyId``, ``Action``, ``Format``,
``RegionId``, ``SignatureMethod=HMAC-SHA1``, ``SignatureNonce`` (unique per request; a
repeat is refused ``SignatureNonceUsed``), ``SignatureVersion=1.0``, ``Timestamp`` (UTC,
``YYYY-MM-DDThh:mm:ssZ``; more than 15 minutes off is ``InvalidTimeStamp.Expired``),
``Version=2017-05-25``. ``SendSms`` adds ``PhoneNumbers``, ``SignName``, ``TemplateCode``,
``TemplateParam`` (a JSON object of the template's variables) and ``OutId`` (ours, echoed in
the delivery reports: the event's key).

Answers: HTTP 200 ``{"Code":"OK","Message":"OK","BizId":"...","RequestId":"..."}``; a
business refusal is HTTP 200 with ``Code`` ``isv.*`` / ``isp.*`` (help.aliyun.com
document 101346, "API错误码"); the gateway's refusals (signature, nonce, timestamp, key) are
HTTP 400/404 with ``{"RequestId","HostId","Code","Message","Recommend"}`` (document 48054).
Only ``OK`` means the message was taken.

``QuerySendDetails`` (``PhoneNumber``, ``SendDate`` ``yyyyMMdd``, ``PageSize`` ≤ 50,
``CurrentPage``) lists what was sent to a number on a day: ``TotalCount`` and
``SmsSendDetailDTOs.SmsSendDetailDTO[]`` with ``PhoneNum``, ``SendStatus`` (1 waiting for the
receipt, 2 failed, 3 delivered), ``ErrCode``, ``TemplateCode``, ``Content``, ``SendDate``,
``ReceiveDate`` and ``OutId`` (Aliyun's generated SDK models, e.g. alibabacloud-csharp-sdk
``dysmsapi-20170525/core/Models/QuerySendDetailsResponseBody.cs``).

This module is pure (no I/O) and never logs; the fake uses the same functions to verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from urllib.parse import quote

from connectors.errors import (
    AuthError,
    ConfigError,
    PermissionDenied,
    RobotError,
    Skippable,
    Throttled,
    Unavailable,
)

DEFAULT_ENDPOINT = "https://dysmsapi.aliyuncs.com"
API_VERSION = "2017-05-25"
ACTION = "SendSms"
QUERY_ACTION = "QuerySendDetails"
#: QuerySendDetails' largest page, and the most pages the robot reads for one check.
QUERY_PAGE_SIZE, QUERY_MAX_PAGES = 50, 20
#: The most days after the send a check looks at (Aliyun keeps 30 days of records).
QUERY_MAX_DAYS = 31
#: SendDate of QuerySendDetails is a day in China's time (UTC+8), ``yyyyMMdd``.
CHINA = timezone(timedelta(hours=8))
SIGNATURE_METHOD = "HMAC-SHA1"
SIGNATURE_VERSION = "1.0"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: How far a request's Timestamp may be from Aliyun's clock.
TIMESTAMP_WINDOW_SECONDS = 15 * 60
#: A mainland mobile number, optionally with the country code (what SendSms accepts here).
MAINLAND_MOBILE = re.compile(r"(?:\+?86)?1[3-9]\d{9}")
OK = "OK"

#: Codes that mean "slow down": not sent, try again later (seconds to wait).
THROTTLED = {"isv.BUSINESS_LIMIT_CONTROL": 600.0, "Throttling.User": 60.0,
             "Throttling.Api": 60.0, "isv.DAY_LIMIT_CONTROL": 3600.0,
             "isv.MONTH_LIMIT_CONTROL": 86400.0}
#: Codes that mean this one message can never go (the number, the text, the variables).
PERMANENT = frozenset({"isv.MOBILE_NUMBER_ILLEGAL", "isv.MOBILE_COUNT_OVER_LIMIT",
                       "isv.BLACK_KEY_CONTROL_LIMIT", "isv.DOMESTIC_NUMBER_NOT_SUPPORTED",
                       "isv.PARAM_LENGTH_LIMIT", "isv.SMS_CONTENT_ILLEGAL",
                       "isv.INVALID_JSON_PARAM", "isv.TEMPLATE_MISSING_PARAMETERS"})
#: Codes that need the merchant: credentials, signature name, template, account, balance.
AUTH = frozenset({"InvalidAccessKeyId.NotFound", "InvalidAccessKeyId.Inactive",
                  "SignatureDoesNotMatch", "isv.ACCOUNT_NOT_EXISTS"})
ACCOUNT = frozenset({"isv.SMS_SIGNATURE_ILLEGAL", "isv.SMS_TEMPLATE_ILLEGAL",
                     "isv.SMS_SIGN_ILLEGAL", "isv.OUT_OF_SERVICE", "isv.AMOUNT_NOT_ENOUGH",
                     "isv.PRODUCT_UN_SUBSCRIPT", "isv.PRODUCT_UNSUBSCRIBE",
                     "isv.ACCOUNT_ABNORMAL", "isv.SMS_SIGNATURE_SCENE_ILLEGAL",
                     "isv.SIGN_STATE_ILLEGAL"})
PERMISSION = frozenset({"isp.RAM_PERMISSION_DENY", "Forbidden.RAM"})
#: Refused by the gateway before anything was sent; a new request may pass.
REFUSED_RETRY = frozenset({"SignatureNonceUsed", "InvalidTimeStamp.Expired",
                           "isp.SYSTEM_ERROR", "ServiceUnavailable", "InternalError"})


def percent_encode(text: str) -> str:
    """RFC 3986 percent-encoding of UTF-8, as Aliyun signs (``~`` kept, space ``%20``)."""
    return quote(text, safe="~")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}"
                    for k, v in sorted(params.items()) if k != "Signature")


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    digest = hmac.new(f"{secret}&".encode(), string_to_sign(method, params).encode(),
                      hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def common_params(*, access_key_id: str, region: str, action: str, nonce: str,
                  now: datetime) -> dict[str, str]:
    """The parameters every RPC request carries (``Signature`` aside)."""
    return {
        "AccessKeyId": access_key_id, "Action": action, "Format": "JSON", "RegionId": region,
        "SignatureMethod": SIGNATURE_METHOD, "SignatureNonce": nonce,
        "SignatureVersion": SIGNATURE_VERSION, "Timestamp": timestamp(now),
        "Version": API_VERSION,
    }


def query_params(*, access_key_id: str, region: str, phone: str, day: date, page: int,
                 nonce: str, now: datetime) -> dict[str, str]:
    """One page of QuerySendDetails: what was sent to ``phone`` on ``day`` (China's date)."""
    return {**common_params(access_key_id=access_key_id, region=region, action=QUERY_ACTION,
                            nonce=nonce, now=now),
            "PhoneNumber": phone, "SendDate": day.strftime("%Y%m%d"),
            "PageSize": str(QUERY_PAGE_SIZE), "CurrentPage": str(page)}


def send_params(*, access_key_id: str, region: str, phone: str, sign_name: str,
                template_code: str, template_param: Mapping[str, str], out_id: str,
                nonce: str, now: datetime) -> dict[str, str]:
    """Every parameter of one SendSms request except ``Signature``."""
    return {
        **common_params(access_key_id=access_key_id, region=region, action=ACTION,
                        nonce=nonce, now=now),
        "PhoneNumbers": phone, "SignName": sign_name,
        "TemplateCode": template_code,
        "TemplateParam": json.dumps(dict(template_param), ensure_ascii=False,
                                    separators=(",", ":")),
        "OutId": out_id,
    }


def error_for(code: str, message: str) -> RobotError:
    """The plugin error a refusal (any ``Code`` but ``OK``) stands for: none of them sent.

    Only a business code's message (a fixed text such as 触发业务流控) is kept: the gateway's
    messages quote the string it signed, which holds the phone number and the variables.
    """
    business = code.startswith(("isv.", "isp."))
    text = (f"aliyun sms {code}: {' '.join(message.split())[:120]}" if business
            else f"aliyun sms {code}")
    if code in THROTTLED:
        return Throttled(text, retry_after=THROTTLED[code])
    if code in PERMANENT:
        return Skippable(text)
    if code in AUTH:
        return AuthError(text)
    if code in PERMISSION:
        return PermissionDenied(text)
    if code in ACCOUNT:
        return ConfigError(text)
    if code in REFUSED_RETRY:
        return Unavailable(text)
    return Skippable(text)  # a refusal we do not know: this message is not sent
