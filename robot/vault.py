"""The vault: encryption, fingerprints and masking of card codes.

* AES-256-GCM with a random 96-bit nonce per encryption; the associated data binds a
  ciphertext to its row (code id, pool id, fingerprint, key id: binding version 2), so a
  ciphertext copied or moved to another row, even with its fingerprint and key id, fails to
  decrypt, naming the code. Rows written before version 2 (``codes.aad_version`` NULL) bound
  pool, fingerprint and key id only; they still decrypt until the re-binding step
  (:func:`robot.keys.reencrypt_codes`) has brought them to version 2.
* Fingerprints are HMAC-SHA256 of the code alone (no pool) under a separate key that never
  rotates, so de-duplication across every pool (``UNIQUE(fingerprint, dup)``) keeps working
  across key rotations and pool moves.
* The key file lives outside the database (JSON, mode 0600)::

      {"version": 1, "current": "k1",
       "keys": {"k1": "<base64 32 bytes>"}, "fingerprint_key": "<base64 32 bytes>"}

This module must never log, print or put into an exception message a plaintext code or key.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from robot.errors import CodeRejected, VaultError

NONCE_BYTES = 12
FOLLOW_INTERVAL = 1.0  # seconds between checks that the key file was replaced
TAG_BYTES = 16
KEY_BYTES = 32
KEY_FILE_VERSION = 1


def mask(secret: str) -> str:
    """Mask a code for display: ``12****89``; short codes are fully masked.

    A ``card_no``/``password`` pair (joined by :data:`PAIR_SEP`) masks each half.
    """
    if PAIR_SEP in secret:
        return " / ".join(mask(part) for part in secret.split(PAIR_SEP, 1))
    if len(secret) <= 6:
        return "*" * max(len(secret), 4)
    return f"{secret[:2]}****{secret[-2:]}"


# Separator between card number and password in a stored secret (a control character that
# cannot appear in an imported line).
PAIR_SEP = "\x1f"


def join_pair(card_no: str, password: str | None) -> str:
    return card_no if not password else f"{card_no}{PAIR_SEP}{password}"


def split_pair(secret: str) -> tuple[str, str | None]:
    card_no, _, password = secret.partition(PAIR_SEP)
    return card_no, (password or None)


@dataclass(frozen=True)
class KeyRing:
    current: str
    keys: dict[str, bytes]
    fingerprint_key: bytes


# Versions of a code's associated data (``codes.aad_version``; NULL in the table is 1).
AAD_V1 = 1  # pool, fingerprint, key id: a ciphertext could move to another row of the pool
AAD_V2 = 2  # + the code's own id
AAD_CURRENT = AAD_V2


def _aad(code_id: int, pool_id: int, fingerprint: bytes, key_id: str,
         version: int = AAD_CURRENT) -> bytes:
    if version == AAD_V1:
        return b"|".join((b"robot-code-v1", str(pool_id).encode(), fingerprint.hex().encode(),
                          key_id.encode()))
    if version == AAD_V2:
        return b"|".join((b"robot-code-v2", str(code_id).encode(), str(pool_id).encode(),
                          fingerprint.hex().encode(), key_id.encode()))
    raise VaultError(f"code {code_id}: unknown associated-data version {version!r}: "
                     "the row was altered")


class Vault:
    """Encrypts and decrypts codes with a :class:`KeyRing`.

    Opened from a key file (``path``), it follows that file while the process runs, so a
    long-running robot keeps working through ``robot keys rotate``: it encrypts under the
    file's current key, and a key id it does not know yet is looked up in the file again.
    Keys it once had stay usable in memory even after the file retires them.
    """

    def __init__(self, ring: KeyRing, *, path: Path | None = None,
                 check_mode: bool = True) -> None:
        if ring.current not in ring.keys:
            raise VaultError("key file: the current key id is not among the keys")
        self._ring = ring
        self._aead = {kid: AESGCM(key) for kid, key in ring.keys.items()}
        self._path = path
        self._check_mode = check_mode
        self._seen = _file_id(path) if path is not None else None
        self._checked_at = time.monotonic()

    def _follow(self, *, force: bool = False) -> None:
        """Re-read the key file if it was replaced (rotation writes it by rename).

        Checked at most every FOLLOW_INTERVAL seconds (a ``stat`` per code made imports 6 %
        slower); an unknown key id forces the check. Codes written under the old key in that
        second are re-encrypted by the rotation, which retires a key only once nothing uses it.
        """
        if self._path is None:
            return
        now = time.monotonic()
        if not force and now - self._checked_at < FOLLOW_INTERVAL:
            return
        self._checked_at = now
        seen = _file_id(self._path)
        if seen == self._seen:
            return
        ring = load_key_ring(self._path, check_mode=self._check_mode)
        if ring.fingerprint_key != self._ring.fingerprint_key:
            raise VaultError(f"key file {self._path} was replaced by one with another "
                             "fingerprint key; restart the robot after checking it")
        for kid, key in ring.keys.items():
            self._aead[kid] = AESGCM(key)
        self._ring = KeyRing(ring.current, {**self._ring.keys, **ring.keys}, ring.fingerprint_key)
        self._seen = seen

    @property
    def current_key_id(self) -> str:
        return self._ring.current

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ring.keys)

    def fingerprint(self, secret: str) -> bytes:
        """Keyed fingerprint (32 bytes) for de-duplication and lookups."""
        return hmac.digest(self._ring.fingerprint_key, secret.encode("utf-8"), "sha256")

    def encrypt(self, secret: str, *, code_id: int, pool_id: int,
                fingerprint: bytes) -> tuple[str, bytes]:
        """Return ``(key_id, nonce || ciphertext)`` under the current key, bound (version
        :data:`AAD_CURRENT`) to the row ``code_id`` of pool ``pool_id``."""
        return self.encrypt_many([(code_id, secret, fingerprint)], pool_id=pool_id)[0]

    def encrypt_many(self, items: Sequence[tuple[int, str, bytes]], *,
                     pool_id: int) -> list[tuple[str, bytes]]:
        """:meth:`encrypt` for many ``(code_id, secret, fingerprint)`` of one pool: the same
        result, with the nonces drawn from the OS in one call instead of one call each."""
        self._follow()
        kid = self._ring.current
        aead = self._aead[kid]
        nonces = os.urandom(NONCE_BYTES * len(items))
        out = []
        for i, (code_id, secret, fp) in enumerate(items):
            nonce = nonces[i * NONCE_BYTES:(i + 1) * NONCE_BYTES]
            ct = aead.encrypt(nonce, secret.encode("utf-8"), _aad(code_id, pool_id, fp, kid))
            out.append((kid, nonce + ct))
        return out

    def decrypt(self, key_id: str, blob: bytes, *, code_id: int, pool_id: int,
                fingerprint: bytes, aad_version: int | None) -> str:
        """The plaintext of the code in row ``code_id`` (``aad_version`` as stored: None is
        version 1). Raises :class:`CodeRejected` naming the code when the ciphertext does
        not belong to that row (altered, copied or moved) or the key does not open it."""
        if key_id not in self._aead:
            self._follow(force=True)
        aead = self._aead.get(key_id)
        if aead is None:
            raise VaultError(f"code {code_id} is encrypted under key {key_id!r}, "
                             "which the key file lacks")
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise CodeRejected(f"code {code_id}: the stored ciphertext is truncated: "
                               "the row was altered")
        version = AAD_V1 if aad_version is None else int(aad_version)
        try:
            aad = _aad(code_id, pool_id, fingerprint, key_id, version)
            plain = aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except VaultError as exc:
            raise CodeRejected(exc.message) from exc
        except InvalidTag as exc:
            raise CodeRejected(
                f"code {code_id} failed authentication: the row was altered or moved (its "
                "ciphertext belongs to another code or pool), or the key file is wrong; "
                "it is not handed out"
            ) from exc
        return plain.decode("utf-8")

    # Shop secrets (tokens) use the same keys with their own associated data.
    def seal(self, value: str, *, context: str) -> tuple[str, bytes]:
        self._follow()
        kid = self._ring.current
        nonce = os.urandom(NONCE_BYTES)
        aad = b"robot-secret-v1|" + context.encode() + b"|" + kid.encode()
        return kid, nonce + self._aead[kid].encrypt(nonce, value.encode("utf-8"), aad)

    def unseal(self, key_id: str, blob: bytes, *, context: str) -> str:
        if key_id not in self._aead:
            self._follow(force=True)
        aead = self._aead.get(key_id)
        if aead is None:
            raise VaultError(f"secret sealed under key {key_id!r}, which the key file lacks")
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise VaultError("a stored secret is truncated: the row was altered")
        aad = b"robot-secret-v1|" + context.encode() + b"|" + key_id.encode()
        try:
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad).decode("utf-8")
        except InvalidTag as exc:
            raise VaultError("a stored secret failed authentication") from exc


def _file_id(path: Path) -> tuple[int, int, int] | None:
    """What changes when the key file is replaced: inode, mtime and size."""
    try:
        st = path.stat()
    except OSError:
        return None  # a missing file is reported by load_key_ring when it is read
    return st.st_ino, st.st_mtime_ns, st.st_size


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _fsync_dir(directory: Path) -> None:
    """Make a file's creation or rename in ``directory`` survive a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def init_key_file(path: Path) -> None:
    """Write a new key file with mode 0600; refuse to overwrite an existing one."""
    payload = {
        "version": KEY_FILE_VERSION,
        "current": "k1",
        "keys": {"k1": _b64(secrets.token_bytes(KEY_BYTES))},
        "fingerprint_key": _b64(secrets.token_bytes(KEY_BYTES)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise VaultError(f"key file {path} already exists; refusing to overwrite it") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(path.parent)


def write_key_ring(path: Path, ring: KeyRing) -> None:
    """Atomically replace the key file (used by rotation)."""
    payload = {
        "version": KEY_FILE_VERSION,
        "current": ring.current,
        "keys": {kid: _b64(key) for kid, key in ring.keys.items()},
        "fingerprint_key": _b64(ring.fingerprint_key),
    }
    # Codes get encrypted under the new key right after this: the rename must be durable.
    write_private_json(path, payload, indent=2)


def write_private_json(path: Path, payload: Any, *, indent: int,
                       opened: Callable[[int], None] | None = None) -> None:
    """Replace ``path`` with ``payload`` as JSON, atomically and durably, readable by its
    owner only (mode 0600): a temp file beside it, fsync, rename, fsync the directory.
    ``opened`` is called with the temp file's descriptor before anything is written."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # A stale temp file keeps its old mode through O_CREAT: force 0600 before writing.
    os.fchmod(fd, 0o600)
    if opened is not None:
        opened(fd)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=indent)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def load_key_ring(path: Path, *, check_mode: bool = True) -> KeyRing:
    """Read and validate a key file. Never falls back to a new key."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise VaultError(
            f"key file {path} not found; create one with `robot keys init` "
            "(or restore it from backup: codes cannot be read without it)"
        ) from exc
    if check_mode and stat.S_IMODE(st.st_mode) & 0o077:
        raise VaultError(
            f"key file {path} is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )
    euid = os.geteuid()
    # The service user must own its key (root may read any, e.g. for a backup or `reveal`).
    if check_mode and euid not in (0, st.st_uid):
        raise VaultError(
            f"key file {path} belongs to uid {st.st_uid}, not to the user running the robot "
            f"(uid {euid}); run: chown $(id -un) {path}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VaultError(f"key file {path} cannot be read: {exc.strerror or exc}") from exc
    try:
        raw = json.loads(text)
        if raw.get("version") != KEY_FILE_VERSION:
            raise VaultError(f"key file {path}: unsupported version {raw.get('version')!r}")
        keys = {str(k): base64.b64decode(v, validate=True) for k, v in raw["keys"].items()}
        fp_key = base64.b64decode(raw["fingerprint_key"], validate=True)
        current = str(raw["current"])
    except VaultError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VaultError(f"key file {path} is malformed") from exc
    if any(len(k) != KEY_BYTES for k in keys.values()) or len(fp_key) != KEY_BYTES:
        raise VaultError(f"key file {path}: every key must be {KEY_BYTES} bytes")
    if current not in keys:
        raise VaultError(f"key file {path}: current key {current!r} is missing")
    return KeyRing(current=current, keys=keys, fingerprint_key=fp_key)


def open_vault(path: Path, *, check_mode: bool = True) -> Vault:
    """A vault that follows ``path`` (see :class:`Vault`)."""
    return Vault(load_key_ring(path, check_mode=check_mode), path=path, check_mode=check_mode)
