"""Fulu's signature and its card-code cipher: the two pieces both sides must get exactly right.

**Signature** (PLATFORMS.md §8.1, confirmed in public SDK code in PHP, Go and C#): serialize
the request object *without* ``sign`` as compact JSON with unescaped Unicode and slashes (PHP
``json_encode($p, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES)``), split that text into its
characters, sort them by code point, join them, append the app secret, MD5, lowercase hex. The
order of the keys does not matter; the escaping does. An answer's ``sign`` is the same function
over its ``result`` string. A callback's is assumed to be the same function over the callback
object without ``sign`` (⚠ not confirmed in public code).

**Card codes** (``card_number`` / ``card_pwd``): Base64 of AES-256-ECB with PKCS7 padding, the
key being the 32 bytes of the app secret (PHP ``openssl_decrypt(base64_decode(s),
'aes-256-ecb', $secret, OPENSSL_RAW_DATA)``). ECB is Fulu's choice, not ours; the plaintext
leaves this module only as a :class:`connectors.supplier.CardSecret`, and no error here ever
carries ciphertext or plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from connectors.supplier import CardSecret


def canonical_json(value: Any) -> str:
    """``value`` as PHP's ``json_encode(..., 320)`` writes it: compact, Unicode and slashes
    unescaped (Python never escapes ``/``)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def sign_text(text: str, secret: str) -> str:
    """Fulu's MD5 over the sorted characters of ``text`` followed by ``secret`` (lowercase hex)."""
    ordered = "".join(sorted(text))
    return hashlib.md5((ordered + secret).encode("utf-8"), usedforsecurity=False).hexdigest()


def sign_params(params: Mapping[str, Any], secret: str) -> str:
    """The ``sign`` of a request (or callback) object: over its JSON without ``sign``."""
    return sign_text(canonical_json({k: v for k, v in params.items() if k != "sign"}), secret)


class CardCipherError(ValueError):
    """A card field is not Fulu's cipher text under our secret (the value is never named)."""


def _cipher(secret: str) -> Cipher[modes.ECB]:
    key = secret.encode("utf-8")
    if len(key) != 32:
        raise CardCipherError("the app secret is not 32 bytes: it cannot be an AES-256 key")
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305 - Fulu's format, not our choice


def encrypt_card(plaintext: str, secret: str) -> str:
    """Base64 of AES-256-ECB/PKCS7 of ``plaintext`` under ``secret`` (the fake's side)."""
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext.encode("utf-8")) + padder.finalize()
    encryptor = _cipher(secret).encryptor()
    return base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode("ascii")


def decrypt_card(ciphertext: str, secret: str) -> CardSecret:
    """The card field ``ciphertext`` decrypted, as a :class:`CardSecret`; CardCipherError
    (naming no value) when it is not Base64 of a whole number of AES blocks with valid
    padding, or the plaintext is not UTF-8 text."""
    try:
        raw = base64.b64decode(ciphertext.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CardCipherError("a card field is not Base64") from None
    if not raw or len(raw) % 16:
        raise CardCipherError("a card field is not whole AES blocks")
    decryptor = _cipher(secret).decryptor()
    data = decryptor.update(raw) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        plain = (unpadder.update(data) + unpadder.finalize()).decode("utf-8")
        return CardSecret(plain)
    except (ValueError, UnicodeDecodeError):
        raise CardCipherError("a card field does not decrypt under our app secret") from None


_SIGN_MEMBER = re.compile(r'"sign"\s*:\s*"([^"\\]*)"')


def split_signed(raw: str) -> tuple[str, str] | None:
    """(the text that was signed, the ``sign`` value) of a signed JSON text as it came over
    the wire: the text with its one ``"sign":"..."`` member and one comma beside it removed.
    Characters are sorted before hashing, so where the member sat does not matter, but every
    other character does (escaping, spaces): what is verified is exactly what was sent.
    None when there is not exactly one ``sign`` member."""
    found = list(_SIGN_MEMBER.finditer(raw))
    if len(found) != 1:
        return None
    match = found[0]
    before, after = raw[: match.start()], raw[match.end():]
    if before.endswith(","):
        before = before[:-1]
    elif after.startswith(","):
        after = after[1:]
    return before + after, match.group(1)


def verify_signed(raw: str, secret: str) -> bool:
    """Whether the signed JSON text ``raw`` carries the right ``sign`` (constant time)."""
    parts = split_signed(raw)
    if parts is None:
        return False
    text, sent = parts
    return hmac.compare_digest(sent.lower().encode("ascii", "replace"),
                               sign_text(text, secret).encode("ascii"))
