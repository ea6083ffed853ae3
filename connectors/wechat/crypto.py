"""WeChat Pay API v3 notification crypto and the merchant backend's HMAC (PLATFORMS.md §4.1).

* :func:`verify_signature`: RSA PKCS#1 v1.5 / SHA-256 over ``timestamp\\nnonce\\nbody\\n``
  (the body exactly as received) with the key chosen by ``Wechatpay-Serial``;
* :func:`decrypt_resource`: AEAD_AES_256_GCM with the APIv3 key (ciphertext ‖ 16-byte tag,
  nonce and associated data as UTF-8);
* :func:`backend_signature`: HMAC-SHA256 of ``timestamp\\n`` + raw body for the merchant
  backend's order posts.

Pure functions with no side effects. They must never log or put into an exception a key,
a signature's secret input, or decrypted content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from connectors.errors import ConfigError, PushRejected

SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"


def load_public_key(pem: str, *, serial: str) -> rsa.RSAPublicKey:
    """An RSA public key from a PEM public key or an X.509 platform certificate."""
    data = pem.strip().encode("ascii", "replace")
    key: object
    try:
        if b"BEGIN CERTIFICATE" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"wechatpay_public_keys[{serial}] is not a PEM public key or "
                          f"certificate") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"wechatpay_public_keys[{serial}] is not an RSA key")
    return key


def signed_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    return timestamp.encode("utf-8") + b"\n" + nonce.encode("utf-8") + b"\n" + body + b"\n"


def verify_signature(key: rsa.RSAPublicKey, timestamp: str, nonce: str, body: bytes,
                     signature_b64: str) -> bool:
    """True when ``signature_b64`` is the platform's signature of this request."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        key.verify(signature, signed_message(timestamp, nonce, body), padding.PKCS1v15(),
                   hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def sign(private_key: rsa.RSAPrivateKey, timestamp: str, nonce: str, body: bytes) -> str:
    """The ``Wechatpay-Signature`` for a request (used by the fake sender)."""
    raw = private_key.sign(signed_message(timestamp, nonce, body), padding.PKCS1v15(),
                           hashes.SHA256())
    return base64.b64encode(raw).decode("ascii")


def decrypt_resource(apiv3_key: str, nonce: str, associated_data: str,
                     ciphertext_b64: str) -> bytes:
    """The plaintext of an ``encrypt-resource``; PushRejected when it does not authenticate."""
    key = apiv3_key.encode("utf-8")
    nonce_bytes = nonce.encode("utf-8")
    if len(key) != 32:
        raise PushRejected("wechat pay: the APIv3 key is not 32 bytes")
    if len(nonce_bytes) != 12:
        raise PushRejected("wechat pay resource: nonce is not 12 bytes")
    try:
        data = base64.b64decode(ciphertext_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PushRejected("wechat pay resource: ciphertext is not base64") from exc
    try:
        return AESGCM(key).decrypt(nonce_bytes, data, associated_data.encode("utf-8"))
    except (InvalidTag, ValueError) as exc:
        raise PushRejected("wechat pay resource: decryption failed (wrong APIv3 key or "
                           "altered ciphertext)") from exc


def encrypt_resource(apiv3_key: str, nonce: str, associated_data: str, plaintext: bytes) -> str:
    """Base64 of ciphertext ‖ tag (used by the fake sender)."""
    sealed = AESGCM(apiv3_key.encode("utf-8")).encrypt(
        nonce.encode("utf-8"), plaintext, associated_data.encode("utf-8"))
    return base64.b64encode(sealed).decode("ascii")


def backend_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with ``secret`` of ``timestamp\\n`` + the raw body."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("utf-8") + b"\n" + body,
                      hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def backend_signature_ok(secret: str, timestamp: str, body: bytes, given: str) -> bool:
    return hmac.compare_digest(backend_signature(secret, timestamp, body).encode("ascii"),
                               given.strip().lower().encode("ascii", "replace"))
