"""Douyin's answer codes, mapped onto the plugin error groups (PLATFORMS.md §5.2).

The envelope is ``{"code", "msg", "sub_code", "sub_msg", "data", "log_id"}`` with ``code``
10000 on success (the new codes, asked for with ``x-open-no-old-err-code: 1``). Classes:
20000 system error (retry), 30000s access token / authorization, 40000s parameters and
signature, 50002 a business refusal whose ``sub_code`` (``isv.business-failed:NNNNNN``)
names the rule, and a throttling answer.

⚠ Assumptions (not confirmed in the corpus): the token codes 30001/30002/30003, the
authorization codes 30005/30006, the throttling code 90000 and the signature / timestamp
sub-codes below; the fake answers with the same values.
"""

from __future__ import annotations

from connectors.common.errors import PlatformRefused, TokenRefused, http_failure
from connectors.errors import (
    AuthError,
    ConfigError,
    Fatal,
    PermissionDenied,
    RobotError,
    Throttled,
    Unavailable,
)

SUCCESS = 10000
SYSTEM_ERROR = 20000
TOKEN_MISSING = 30001  # ⚠ access_token 不存在 (or not the latest)
TOKEN_EXPIRED = 30002  # ⚠ access_token 已过期
TOKEN_MISMATCH = 30003  # ⚠ access_token does not belong to this app
AUTH_REVOKED = 30005  # ⚠ the shop cancelled the app's authorization
NO_PERMISSION = 30006  # ⚠ the app has no permission for this API
MISSING_PARAMETER = 40002
INVALID_PARAMETER = 40004
BUSINESS_FAILED = 50002
THROTTLED = 90000  # ⚠ 访问频率过快

TOKEN_CODES = frozenset({TOKEN_MISSING, TOKEN_EXPIRED, TOKEN_MISMATCH})
SUB_BAD_SIGN = "isv.signature-invalid"  # ⚠
SUB_BAD_TIMESTAMP = "isv.timestamp-invalid"  # ⚠
SUB_BAD_APP_KEY = "isv.app-key-invalid"  # ⚠

# Business sub-codes (``isv.business-failed:<n>``), from the generated SDK's error lists.
COUPON_ALREADY_SYNCED = "000008"  # already processed (the same certificates)
COUPON_PARAMS_DIFFER = "010004"  # differs from an earlier call for this sub-order
COUPON_TOO_LATE = "010012"  # more than 24 h after the order
ORDER_CANCELLED = "60021"
ALREADY_SHIPPED = "60110"
REFUNDED_BEFORE_SHIPMENT = "60068"
ORDER_NOT_FOUND = "60001"  # ⚠


class DouyinRejected(PlatformRefused):
    """Douyin refused this call's arguments or a business rule (``sub_code`` says which)."""

    @property
    def business_code(self) -> str:
        """The number after ``isv.business-failed:`` ("" when the sub-code has none)."""
        _, sep, number = self.sub_code.partition(":")
        return number if sep else ""


class TokenRejected(TokenRefused):
    """Douyin refused our access token (missing, expired or superseded)."""


def map_error(api: str, code: int, msg: str, sub_code: str, sub_msg: str) -> RobotError:
    """Translate a non-10000 envelope into the exception the caller should see."""
    detail = f"{api}: Douyin error {code} {msg} {sub_code} {sub_msg}".rstrip()
    if code in TOKEN_CODES:
        return TokenRejected(detail, code=code)
    if code == AUTH_REVOKED:
        return AuthError(f"{detail}: the shop's authorization was cancelled; authorize again")
    if code == NO_PERMISSION:
        return PermissionDenied(f"{detail}: the app has no permission for this API")
    if code == THROTTLED:
        return Throttled(detail, retry_after=1.0)
    if code == SYSTEM_ERROR or (code >= 20000 and code < 30000):
        return Unavailable(detail)
    if sub_code.startswith((SUB_BAD_SIGN, SUB_BAD_APP_KEY)):
        return AuthError(f"{detail}: check app_key and app_secret")
    if sub_code.startswith(SUB_BAD_TIMESTAMP):
        return Unavailable(f"{detail}: our clock differs from Douyin's; retrying")
    if code == BUSINESS_FAILED:
        return DouyinRejected(detail, code=code, sub_code=sub_code)
    if code in (MISSING_PARAMETER, INVALID_PARAMETER):
        return DouyinRejected(detail, code=code, sub_code=sub_code)
    return Fatal(detail)


def map_token_error(code: int, msg: str, sub_code: str, sub_msg: str) -> RobotError:
    """Translate a ``token.create`` / ``token.refresh`` refusal."""
    detail = f"douyin token: error {code} {msg} {sub_code} {sub_msg}".rstrip()
    if code in (SYSTEM_ERROR, THROTTLED):
        return Unavailable(detail)
    if sub_code.startswith((SUB_BAD_SIGN, SUB_BAD_APP_KEY)):
        return ConfigError(f"{detail}: check app_key and app_secret")
    return AuthError(f"{detail}: check app_key, app_secret and shop_id, and that the shop "
                     f"authorized the app")


def map_http_failure(api: str, status: int, reason: str) -> RobotError:
    """Translate an answer that is not Douyin JSON (bad status, HTML page, garbage)."""
    return http_failure(f"{api}: HTTP {status} from Douyin ({reason})", status,
                        retry_after=1.0, unavailable=reason == "not JSON")
