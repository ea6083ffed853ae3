"""TOP request signing (PLATFORMS.md §1.3): one pure function, shared by connector and fake.

It must never log or return anything but the hex digest; the secret stays in this frame.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

SignMethod = Literal["md5", "hmac", "hmac-sha256"]
SIGN_METHODS: tuple[SignMethod, ...] = ("md5", "hmac", "hmac-sha256")


def top_sign(params: Mapping[str, str], secret: str, sign_method: str) -> str:
    """Return TOP's uppercase hex signature of ``params`` (``sign`` itself is excluded).

    Names are sorted in byte order and each non-empty ``name + value`` is concatenated
    unencoded. ``md5`` wraps that in the secret; ``hmac`` (HMAC-MD5) and ``hmac-sha256``
    key the HMAC with the secret. Pairs with an empty value are skipped, as the Java SDK
    does; the connector never sends them, so both SDK conventions agree on the wire.
    """
    body = "".join(
        name + value for name, value in sorted(params.items()) if name != "sign" and name and value
    ).encode("utf-8")
    key = secret.encode("utf-8")
    if sign_method == "md5":
        digest = hashlib.md5(key + body + key).hexdigest()  # noqa: S324 - TOP's protocol, not our choice
    elif sign_method == "hmac":
        digest = hmac.new(key, body, hashlib.md5).hexdigest()
    elif sign_method == "hmac-sha256":
        digest = hmac.new(key, body, hashlib.sha256).hexdigest()
    else:
        raise ValueError(f"unknown TOP sign_method {sign_method!r}")
    return digest.upper()
