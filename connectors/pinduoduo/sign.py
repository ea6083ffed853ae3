"""Pinduoduo (POP) request signing (PLATFORMS.md §2.3): one pure function for connector and fake.

It must never log or return anything but the hex digest; the secret stays in this frame.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def pdd_sign(params: Mapping[str, str], client_secret: str) -> str:
    """POP's uppercase hex MD5 over ``secret + name1value1name2value2… + secret``.

    Every parameter actually sent is signed except ``sign`` itself, sorted by name (as the
    official Java ``TreeMap`` and PHP ``ksort`` do), values raw (not URL-encoded). The
    connector never sends empty values, so SDKs that skip them and SDKs that sign them agree.
    """
    body = "".join(name + params[name] for name in sorted(params) if name != "sign")
    text = client_secret + body + client_secret
    return hashlib.md5(text.encode("utf-8")).hexdigest().upper()  # noqa: S324 - POP's protocol, not our choice
