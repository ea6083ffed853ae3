"""Youzan push authentication: ``Event-Sign`` = lowercase hex MD5(client_id + raw body + secret).

Computed over the raw request bytes exactly as received (never a re-serialized JSON). MD5 is
the platform's choice, not ours. This module must never log or return the secret.
"""

from __future__ import annotations

import hashlib
import hmac


def event_sign(client_id: str, body: bytes, client_secret: str) -> str:
    """The ``Event-Sign`` header value Youzan sends with ``body``."""
    # MD5 is Youzan's choice for push signatures, not ours.
    digest = hashlib.md5(
        client_id.encode("utf-8") + body + client_secret.encode("utf-8"), usedforsecurity=False
    )
    return digest.hexdigest()


def legacy_body_sign(client_id: str, encoded_msg: str, client_secret: str) -> str:
    """The body's legacy ``sign`` field: MD5(client_id + still-URL-encoded msg + secret)."""
    return event_sign(client_id, encoded_msg.encode("utf-8"), client_secret)


def verify_event_sign(client_id: str, body: bytes, client_secret: str, given: str) -> bool:
    """Constant-time check of a received ``Event-Sign`` (hex, any case)."""
    expected = event_sign(client_id, body, client_secret)
    return hmac.compare_digest(given.strip().lower().encode(), expected.encode())
