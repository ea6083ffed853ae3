"""TOP error answers mapped onto :mod:`robot.errors` by what the caller should do.

Two functions: :func:`map_top_error` for an ``error_response`` (HTTP 200) and
:func:`map_http_failure` for transport-level failures. Messages carry the API method, the
platform code and the platform's own words; they must never carry the app secret, the
session, the signature or any request parameter.

TOP-specific subclasses, so the core can act on them without knowing TOP::

    AuthError      └── SessionExpired   codes 26/27: the seller must re-authorize the app
    Fatal          └── ClockSkew        code 31: this host's clock is off by > 10 minutes
    Skippable      └── TopRejected      codes 40/41 and business (``isv.*``) refusals
"""

from __future__ import annotations

import re

from connectors.common.errors import PlatformRefused, http_failure
from connectors.errors import (
    AuthError,
    Fatal,
    PermissionDenied,
    RobotError,
    Throttled,
    Unavailable,
)

_BAN_SECONDS = re.compile(r"ban will last for (\d+) more seconds?", re.IGNORECASE)
DEFAULT_RETRY_AFTER = 1.0


class SessionExpired(AuthError):
    """The seller's Taobao authorization (session) is missing, invalid or expired: re-authorize."""


class ClockSkew(Fatal):
    """TOP rejected our timestamp: this host's clock is more than 10 minutes off."""


class TopRejected(PlatformRefused):
    """TOP refused this call's arguments or business rule."""


def map_top_error(
    method: str, code: int, msg: str = "", sub_code: str = "", sub_msg: str = ""
) -> RobotError:
    """Translate one ``error_response`` into the exception the caller should see."""
    detail = f"{method}: TOP error {code} {msg}".rstrip()
    if sub_code:
        detail += f" ({sub_code}: {sub_msg})" if sub_msg else f" ({sub_code})"
    if code in (7, 8) or sub_code.startswith("accesscontrol."):
        match = _BAN_SECONDS.search(sub_msg) or _BAN_SECONDS.search(msg)
        retry_after = float(match.group(1)) if match else DEFAULT_RETRY_AFTER
        return Throttled(detail, retry_after=retry_after)
    if code in (25, 28, 29):
        return AuthError(f"{detail}: the app key or app secret (or sign_method) is wrong")
    if code in (26, 27):
        return SessionExpired(f"{detail}: the seller must re-authorize the app")
    if code in (11, 12, 13):
        return PermissionDenied(detail)
    if code == 31:
        return ClockSkew(detail)
    if sub_code.startswith("isp.") or (code in (10, 15) and not sub_code.startswith("isv.")):
        return Unavailable(detail)
    if code in (40, 41) or sub_code.startswith("isv."):
        return TopRejected(detail, code=code, sub_code=sub_code)
    if 21 <= code <= 35:
        # Missing/invalid method, format, version...: our request is malformed (a bug).
        return Fatal(detail)
    return TopRejected(detail, code=code, sub_code=sub_code)


def map_http_failure(method: str, status: int, reason: str) -> RobotError:
    """Translate a non-TOP answer (bad status or unreadable body) into an exception."""
    detail = f"{method}: HTTP {status} from the TOP gateway ({reason})"
    return http_failure(detail, status, retry_after=DEFAULT_RETRY_AFTER)
