"""Youzan answers mapped onto :mod:`robot.errors` by what the caller should do.

Youzan answers HTTP 200 for everything it understood, in one of four shapes (PLATFORMS.md
§3.2): a v4 envelope (``success``/``code``/``message``/``data``), a gateway error
(``gw_err_resp.err_code``), an old v3 envelope (``response`` / ``error_response``) and bare
throttle shapes. :func:`map_gateway_error`, :func:`map_business_error` and
:func:`map_http_failure` turn each into an exception. Messages carry the API name, the
platform code and the platform's words; never the access token, the client secret, or a URL
(the token travels in the query string).

Youzan-specific subclasses, so the core can act without knowing Youzan::

    AuthError    └── TokenRejected    gateway 4201/4202/4203 (refresh once, then AuthError)
    Skippable    └── YouzanRejected   a business refusal; ``code`` says which
"""

from __future__ import annotations

from connectors.common.errors import PlatformRefused, TokenRefused, http_failure
from connectors.errors import (
    AuthError,
    Fatal,
    PermissionDenied,
    RobotError,
    Throttled,
    Unavailable,
)

#: Youzan's documented back-off for throttled calls, in seconds (3/6/12/24/48).
THROTTLE_BACKOFF = (3.0, 6.0, 12.0, 24.0, 48.0)
#: Gateway codes meaning "this access token is no good": refresh once, then AuthError.
TOKEN_CODES = frozenset({4201, 4202, 4203})
GW_THROTTLED = 4101
#: Business codes that are throttling in disguise.
THROTTLE_CODES = frozenset({500100004, 123000042})
ALREADY_SHIPPED = 102570007
CONCURRENT_SHIP = 102510001
NOTHING_SHIPPABLE = 102570020
ORDER_NOT_FOUND = 105000016
DISTRIBUTION_ORDER = 102570038
TRADE_NOT_FOUND = 5000  # also what another shop's token gets for a trade
#: /auth/token codes: 1000 bad secret or content type, 1004 authorization expired, 1005 bad
#: code, 1103 client or authorization not found, 1105 wrong app type.
TOKEN_ENDPOINT_CODES = frozenset({1000, 1004, 1005, 1103, 1105})


class TokenRejected(TokenRefused):
    """The gateway rejected our access token (invalid, expired or unknown)."""


class YouzanRejected(PlatformRefused):
    """Youzan refused this call's arguments or business rule."""


def throttle_delay(consecutive: int) -> float:
    """The documented back-off for the ``consecutive``-th throttled answer in a row (1-based)."""
    index = min(max(consecutive, 1), len(THROTTLE_BACKOFF)) - 1
    return THROTTLE_BACKOFF[index]


def map_gateway_error(api: str, code: int, msg: str, *, throttled_in_a_row: int = 1) -> RobotError:
    """Translate a ``gw_err_resp`` into the exception the caller should see."""
    detail = f"{api}: Youzan gateway error {code} {msg}".rstrip()
    if code == GW_THROTTLED:
        return Throttled(detail, retry_after=throttle_delay(throttled_in_a_row))
    if code in TOKEN_CODES:
        return TokenRejected(detail, code=code)
    if code == 4204:
        return PermissionDenied(f"{detail}: the app has no permission for this API")
    if code == 4007:
        # Wrong method/content type (our bug) or this host's IP is not on the app's whitelist.
        return PermissionDenied(f"{detail}: check the app's IP whitelist")
    if code in (4001, 4005):
        return Fatal(f"{detail}: unknown API path or version")
    if code >= 5000:
        return Unavailable(detail)
    return Fatal(detail)


def map_business_error(api: str, code: int, msg: str, *, throttled_in_a_row: int = 1
                       ) -> RobotError:
    """Translate a v4 ``success:false`` or v3 ``error_response`` answer."""
    detail = f"{api}: Youzan error {code} {msg}".rstrip()
    if code in THROTTLE_CODES:
        return Throttled(detail, retry_after=throttle_delay(throttled_in_a_row))
    if code == CONCURRENT_SHIP:
        # Another shipping request for this trade is in flight: try again shortly, the
        # retry answers "already shipped" (resolved by re-reading) or ships.
        return Unavailable(detail, retry_after=throttle_delay(1))
    if code in (500, 5001) or 50000 <= code < 60000:
        return Unavailable(detail)
    return YouzanRejected(detail, code=code)


def map_token_error(code: int, msg: str) -> RobotError:
    """Translate an ``/auth/token`` refusal."""
    detail = f"youzan /auth/token: error {code} {msg}".rstrip()
    if code == 1004:
        return AuthError(f"{detail}: the shop's authorization expired; re-authorize the app")
    if code == 1005:
        return AuthError(f"{detail}: the authorization code is invalid or used; authorize again")
    if code == 1105:
        return AuthError(f"{detail}: authorize_type does not match this app's type")
    if code in TOKEN_ENDPOINT_CODES:
        return AuthError(f"{detail}: check client_id, client_secret and grant_id")
    if code >= 500:
        return Unavailable(detail)
    return AuthError(detail)


def map_http_failure(api: str, status: int, reason: str) -> RobotError:
    """Translate an answer that is not Youzan JSON (bad status, HTML page, garbage)."""
    detail = f"{api}: HTTP {status} from Youzan ({reason})"
    return http_failure(detail, status, retry_after=throttle_delay(1),
                        unavailable=reason == "not JSON")
