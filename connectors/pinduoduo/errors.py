"""POP error answers mapped onto :mod:`robot.errors` by what the caller should do.

:func:`map_pdd_error` reads one ``error_response`` (gateway codes from the POP API pages'
"返回错误码说明" table, PLATFORMS.md §2.4); :func:`map_http_failure` covers transport-level
failures. Messages carry the API name, the code and POP's own words; they must never carry
the client secret, a token, the signature or a request parameter.

POP-specific subclasses, so callers can act on them without knowing POP::

    AuthError      ├── AccessTokenExpired   10019: refresh the token and retry once
                   └── AppRejected          20004 / 10016: client_id or client_secret is wrong
    Skippable      └── PddRejected          business refusals and malformed arguments
"""

from __future__ import annotations

from connectors.common.errors import PlatformRefused, http_failure
from connectors.errors import (
    AuthError,
    Fatal,
    PermissionDenied,
    RobotError,
    Throttled,
    Unavailable,
)

DEFAULT_RETRY_AFTER = 1.0

#: Codes worth retrying inside the connector (with backoff) before the core sees them.
RETRYABLE_CODES = frozenset({52101, 52102, 52103, 70031})
_THROTTLED = frozenset({52101, 70031, 70036})
_UNAVAILABLE = frozenset({50000, 52001, 52002, 52102, 52103, 70033})
_CREDENTIALS = frozenset({20032})
_PERMISSION = frozenset({20005, 20031, 30000, 30001, 70032, 70034, 70035})
# Malformed common parameters or a wrong gateway/API name: our request is wrong (a bug or a
# bad gateway setting), so the shop stops rather than retrying forever.
_MALFORMED = frozenset({10001, 10017, 10018, 20034, 20035})


class AccessTokenExpired(AuthError):
    """The merchant's access token has expired (POP 10019): refresh it."""


class AppRejected(AuthError):
    """POP refused the app itself: the signature (client_secret) or the client_id."""


class PddRejected(PlatformRefused):
    """POP refused this call's arguments or business rule."""


def map_pdd_error(
    api: str, code: int, msg: str = "", sub_code: str = "", sub_msg: str = ""
) -> RobotError:
    """Translate one ``error_response`` into the exception the caller should see."""
    detail = f"{api}: POP error {code} {msg}".rstrip()
    if sub_msg and sub_msg != msg:
        detail += f" ({sub_code}: {sub_msg})" if sub_code else f" ({sub_msg})"
    if code == 10019:
        return AccessTokenExpired(detail)
    if code == 20004:
        return AppRejected(f"{detail}: the signature was refused; is client_secret right?")
    if code == 10016:
        return AppRejected(f"{detail}: is client_id right?")
    if code in _CREDENTIALS:
        return AuthError(f"{detail}: the merchant's token is not valid; re-authorize")
    if code in _PERMISSION:
        return PermissionDenied(detail)
    if code in _THROTTLED:
        return Throttled(detail, retry_after=60.0 if code == 70036 else DEFAULT_RETRY_AFTER)
    if code in _UNAVAILABLE:
        return Unavailable(detail)
    if code in _MALFORMED:
        return Fatal(detail)
    return PddRejected(detail, code=code, sub_code=sub_code)


def map_http_failure(api: str, status: int, reason: str) -> RobotError:
    """Translate a non-POP answer (bad status, HTML page, unreadable body) into an exception."""
    detail = f"{api}: HTTP {status} from the POP gateway ({reason})"
    return http_failure(detail, status, retry_after=DEFAULT_RETRY_AFTER,
                        unavailable=reason in ("unreadable body", "not JSON"))
