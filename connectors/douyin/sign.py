"""Douyin shop (抖店) request signing and push verification (PLATFORMS.md §5.2, §10).

Request: ``sign = hex(HMAC-SHA256(key=app_secret, msg=app_secret + "app_key" + app_key +
"method" + method + "param_json" + param_json + "timestamp" + timestamp + "v" + "2" +
app_secret))``, where ``param_json`` is the business parameters as JSON with keys sorted
recursively, no whitespace, unicode and ``/`` unescaped (``{}`` when empty). ``access_token``
and ``sign_method`` are not signed. This is the official SDKs' algorithm (the Go SDK's
``utils/sign_util.go`` ``Sign``/``Marshal``, the Python ``doudian`` package's ``_sign``).

Push: header ``event-sign`` = lowercase hex MD5(app_key + raw body + app_secret), computed on
the raw bytes as received. MD5 is the platform's choice, not ours.

This module must never log or return a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

SIGN_METHOD = "hmac-sha256"
VERSION = "2"


def param_json(params: Mapping[str, Any] | None, *, escaped: bool = False) -> str:
    """The canonical ``param_json`` of ``params``: keys sorted at every depth, no spaces,
    non-ASCII and ``/`` left as they are (``escaped``: non-ASCII as ``\\uXXXX``, as
    Python's JSON writes it by default — the same JSON, another text)."""
    return json.dumps(dict(params or {}), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=escaped)


def sign(app_key: str, app_secret: str, method: str, body: str, timestamp: str, *,
         sign_method: str = SIGN_METHOD) -> str:
    """The ``sign`` query parameter for one request whose body is ``body`` (a param_json):
    HMAC-SHA256, or the legacy ``md5`` of the same string."""
    text = (f"{app_secret}app_key{app_key}method{method}param_json{body}"
            f"timestamp{timestamp}v{VERSION}{app_secret}").encode()
    if sign_method == "md5":
        return hashlib.md5(text, usedforsecurity=False).hexdigest()
    return hmac.new(app_secret.encode("utf-8"), text, hashlib.sha256).hexdigest()


def verify_sign(app_key: str, app_secret: str, method: str, body: str, timestamp: str,
                given: str, *, sign_method: str = SIGN_METHOD) -> bool:
    """Constant-time check of a received ``sign`` (hex, any case)."""
    expected = sign(app_key, app_secret, method, body, timestamp, sign_method=sign_method)
    return hmac.compare_digest(given.strip().lower().encode(), expected.encode())


def event_sign(app_key: str, body: bytes, app_secret: str) -> str:
    """The ``event-sign`` header Douyin sends with a push whose raw body is ``body``."""
    digest = hashlib.md5(app_key.encode("utf-8") + body + app_secret.encode("utf-8"),
                         usedforsecurity=False)
    return digest.hexdigest()


def verify_event_sign(app_key: str, body: bytes, app_secret: str, given: str) -> bool:
    """Constant-time check of a received ``event-sign``."""
    expected = event_sign(app_key, body, app_secret)
    return hmac.compare_digest(given.strip().lower().encode(), expected.encode())


def method_path(method: str) -> str:
    """The gateway path of an API: ``order.searchList`` → ``/order/searchList``."""
    return "/" + method.replace(".", "/")
