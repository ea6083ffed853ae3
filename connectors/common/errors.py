"""Error pieces every platform's mapping shares, on top of :mod:`robot.errors`.

Each platform still maps its own codes (``connectors/<platform>/errors.py``); this module
holds the exception bases that carry a platform code, and the reading of an HTTP answer that
is not the platform's JSON. Messages are built by the caller; they must never carry a
credential, a token, a signature or a URL.

::

    AuthError    └── TokenRefused      the platform refused our access token (``code``)
    Skippable    └── PlatformRefused   a business refusal (``code``, ``sub_code``)
"""

from __future__ import annotations

from connectors.errors import (
    AuthError,
    BadPlatformData,
    RobotError,
    Skippable,
    Throttled,
    Unavailable,
)


class PlatformRefused(Skippable):
    """The platform refused this call's arguments or business rule."""

    def __init__(self, message: str | None = None, *, code: int = 0, sub_code: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.sub_code = sub_code


class TokenRefused(AuthError):
    """The platform refused our access token (invalid, expired or not the latest)."""

    def __init__(self, message: str | None = None, *, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def http_failure(detail: str, status: int, *, retry_after: float,
                 unavailable: bool = False) -> RobotError:
    """An answer that is not the platform's JSON: 429 throttles; 5xx, a 2xx we cannot read
    (an HTML page from a proxy or WAF, JSON cut off) or ``unavailable`` (the platform's
    reading of an unreadable body) is unavailable; anything else is bad data.

    A whole unreadable answer is never Skippable: that would park (or skip) whatever it was
    about, when asking again later is what fixes it.
    """
    if status == 429:
        return Throttled(detail, retry_after=retry_after)
    if status >= 500 or 200 <= status < 300 or unavailable:
        return Unavailable(detail)
    return BadPlatformData(detail)
