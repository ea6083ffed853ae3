"""WeChat ``errcode`` answers mapped onto :mod:`robot.errors` by what the caller should do.

``api.weixin.qq.com`` answers HTTP 200 with ``{"errcode": N, "errmsg": "..."}`` (PLATFORMS.md
§4.2/§4.3). Messages carry the API path, the code and WeChat's words; never the access token,
the app secret, or a URL (the token travels in the query string).

WeChat-specific subclasses, so callers can act on the code::

    AuthError    └── TokenRejected    40001 / 42001 / 40014 (refresh once, then AuthError)
    Skippable    └── WechatRejected   a business refusal; ``code`` says which
"""

from __future__ import annotations

from connectors.common.errors import PlatformRefused, TokenRefused, http_failure
from connectors.errors import (
    AuthError,
    PermissionDenied,
    RobotError,
    Throttled,
    Unavailable,
)

TOKEN_CODES = frozenset({40001, 42001, 40014})
BAD_CREDENTIALS = frozenset({40013, 40125, 40164, 41002, 41004, 40002})
THROTTLE_CODES = frozenset({45009, 45011, 45033})
SYSTEM_BUSY = -1
NOT_INDEXED = 10060001  # payment not found (commonly: not indexed yet)
RESHIPPED = 10060003  # the single re-shipment was used: it is shipped
NOT_SHIPPABLE_STATE = 10060004  # refunded / completed / handled: re-read the order
UNCHANGED = 10060023  # same shipping info again: idempotent success
UNAUTHORIZED_API = 48001
THROTTLE_DELAY = 60.0


class TokenRejected(TokenRefused):
    """WeChat rejected our access token (invalid, not the latest, or expired)."""


class WechatRejected(PlatformRefused):
    """WeChat refused this call's arguments or business rule."""


def map_errcode(api: str, code: int, msg: str) -> RobotError:
    """Translate a non-zero ``errcode`` into the exception the caller should see."""
    detail = f"{api}: WeChat errcode {code} {msg}".rstrip()
    if code in TOKEN_CODES:
        return TokenRejected(detail, code=code)
    if code in BAD_CREDENTIALS:
        return AuthError(f"{detail}: check appid, app_secret and the IP whitelist")
    if code == UNAUTHORIZED_API:
        return PermissionDenied(f"{detail}: the mini-program has no access to this API "
                                f"(is shipping-info management enabled?)")
    if code in THROTTLE_CODES:
        return Throttled(detail, retry_after=THROTTLE_DELAY)
    if code == SYSTEM_BUSY:
        return Unavailable(detail)
    return WechatRejected(detail, code=code)


def map_http_failure(api: str, status: int, reason: str) -> RobotError:
    """Translate an answer that is not WeChat JSON (bad status, HTML page, garbage)."""
    detail = f"{api}: HTTP {status} from WeChat ({reason})"
    return http_failure(detail, status, retry_after=THROTTLE_DELAY,
                        unavailable=reason == "not JSON")
