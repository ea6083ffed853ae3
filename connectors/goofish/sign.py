"""闲管家's two signatures (both MD5, lowercase hex, over comma-joined parts).

* The virtual-supply standard (虚拟货源标准接口), both directions — 闲管家 calling our gateway
  and our callbacks to 闲管家::

      sign = md5("{app_id},{app_secret},{md5(body)},{timestamp},{mch_id},{mch_secret}")

  ``body`` is the raw POST text exactly as sent; a request without a body signs ``md5("{}")``
  or ``md5("")`` and sends the same text. Query: ``mch_id``, ``timestamp`` (seconds, valid for
  five minutes), ``sign``.
* The open platform (闲管家开放平台, used when a merchant's own system calls 闲管家)::

      sign = md5("{appKey},{md5(body)},{timestamp}[,{seller_id}],{appSecret}")

Both official examples are golden tests (tests/goofish/test_sign.py). This module never logs
and never puts a secret into a message.
"""

from __future__ import annotations

import hashlib
import hmac

#: Seconds a request's ``timestamp`` may differ from our clock (the standard: 5 minutes).
TIMESTAMP_WINDOW = 300


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def supply_sign(*, app_id: str, app_secret: str, body: bytes, timestamp: int | str,
                mch_id: str, mch_secret: str) -> str:
    """The virtual-supply standard's signature of one request or callback."""
    text = ",".join((app_id, app_secret, md5_hex(body), str(timestamp), mch_id, mch_secret))
    return md5_hex(text.encode("utf-8"))


def open_sign(*, app_key: str, app_secret: str, body: bytes, timestamp: int | str,
              seller_id: str | None = None) -> str:
    """The open platform's signature (``seller_id`` for service-provider calls only)."""
    parts = [app_key, md5_hex(body), str(timestamp)]
    if seller_id is not None:
        parts.append(seller_id)
    parts.append(app_secret)
    return md5_hex(",".join(parts).encode("utf-8"))


def same(given: str, expected: str) -> bool:
    """Constant-time comparison of a received signature (case-insensitive hex)."""
    return hmac.compare_digest(given.strip().lower().encode("ascii", "replace"),
                               expected.encode("ascii"))


def same_id(given: str, expected: str) -> bool:
    """Constant-time, exact comparison of an id sent in the query (``mch_id``)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                               expected.encode("utf-8", "surrogatepass"))


def fresh(timestamp: str, now: float, window: int = TIMESTAMP_WINDOW) -> bool:
    """Whether a ``timestamp`` query value (whole seconds) is within ``window`` of ``now``."""
    text = timestamp.strip()
    if not text.isdigit() or len(text) > 12:
        return False
    return abs(int(text) - now) <= window
