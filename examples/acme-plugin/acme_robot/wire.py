"""Acme's wire format, shared by the connector and the fake: push signatures and times."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

SIGNATURE_HEADER = "X-Acme-Signature"
TIMESTAMP_HEADER = "X-Acme-Timestamp"
#: Seconds a push stays acceptable after Acme signed it.
PUSH_MAX_AGE = 300


def push_signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 (hex) over ``timestamp.body``."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def format_time(when: datetime) -> str:
    """Acme's times: ISO 8601 in UTC, to the microsecond."""
    return when.astimezone(UTC).isoformat()


def parse_time(text: str) -> datetime:
    """An Acme time; ValueError if it is not one (or has no zone)."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("time without a zone")
    return parsed.astimezone(UTC)
