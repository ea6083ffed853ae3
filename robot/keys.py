"""Key rotation and the start-up key check.

Rotation (``robot keys rotate``) runs in three resumable steps:

1. **switch** — a new key is added to the key file and becomes current (atomic rewrite; the
   old keys stay). From then on every new code or secret is encrypted under it; running
   robots follow the file (see :class:`robot.vault.Vault`).
2. **re-encrypt** — codes and shop secrets still under another key are decrypted and
   encrypted again under the current key, a batch at a time; each batch is one short
   transaction whose updates are guarded by ``key_id = <old>`` (and the row's pool and
   binding version), so a row someone else changed meanwhile is left alone (never
   overwritten with a stale copy). The same batches **re-bind** codes written before the
   associated data bound the code's id (``aad_version`` NULL, see :mod:`robot.vault`):
   :func:`rebind_codes` runs them at start, and ``rotate`` finishes them too.
3. **retire** — once no code and no secret uses an old key (and no import is running, which
   could still be writing under it), the old key is removed from the key file.

Running ``rotate`` again after an interruption finishes an unfinished rotation (rows under a
non-current key, or a non-current key still in the file) instead of adding yet another key;
only ``new_key=True`` forces one.

:func:`check_keys` is the start-up check: every key id the database uses must be in the key
file and must decrypt a sample row (and the fingerprint key must match it); otherwise a
:class:`VaultError` names the ids, before anything is written. ``robot run``,
``robot config check`` and ``robot keys status`` all run it. :func:`refuse_new_key_file`
keeps ``robot keys init`` from writing a fresh key over a database whose rows need the old
one, and :func:`lost_key_file` says the same when the key file is missing.

This module must never log, print or put into an exception a plaintext code, secret or key.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, or_, select, update

from robot import audit
from robot.db import transaction
from robot.errors import CodeRejected, UserError, VaultError
from robot.log import get_logger
from robot.schema import audit_head, audit_log, batches, codes, shop_secrets
from robot.states import BatchState
from robot.vault import AAD_CURRENT, KEY_BYTES, KeyRing, Vault, load_key_ring, write_key_ring

DEFAULT_BATCH = 500
log = get_logger(__name__)
_KEY_ID = re.compile(r"k(\d+)")


def secret_context(shop: str, name: str) -> str:
    """The associated data of a shop secret (as :class:`robot.shops.DbShopContext` seals it)."""
    return f"shop:{shop}:{name}"


@dataclass(frozen=True)
class KeyUsage:
    """How many codes and shop secrets each key id encrypts, and how many codes are still
    on an old binding (associated data without the code's id)."""

    codes: dict[str, int]
    secrets: dict[str, int]
    old_binding: int = 0

    def ids(self) -> set[str]:
        return set(self.codes) | set(self.secrets)

    def of(self, key_id: str) -> int:
        return self.codes.get(key_id, 0) + self.secrets.get(key_id, 0)


def key_usage(conn: Connection) -> KeyUsage:
    """Codes and secrets per key id, in two grouped queries."""
    def counts(table: Any) -> dict[str, int]:
        rows = conn.execute(select(table.c.key_id, func.count()).group_by(table.c.key_id))
        return {str(kid): int(n) for kid, n in rows}

    return KeyUsage(counts(codes), counts(shop_secrets), old_binding(conn))


def _on_old_binding() -> Any:
    return or_(codes.c.aad_version.is_(None), codes.c.aad_version != AAD_CURRENT)


def old_binding(conn: Connection) -> int:
    """Codes whose ciphertext does not bind their own id yet (re-bound by
    :func:`rebind_codes` / ``robot keys rotate``): until none is left, such a ciphertext
    copied to another row of its pool would still decrypt there."""
    return int(conn.execute(select(func.count()).select_from(codes)
                            .where(_on_old_binding())).scalar_one())


@dataclass(frozen=True)
class Stored:
    """What the database holds that only its own key file can read or verify."""

    usage: KeyUsage
    audit_entries: int  # entries of keyed audit chains (sealed with the fingerprint key)

    def __bool__(self) -> bool:
        return bool(self.usage.ids() or self.audit_entries)

    def describe(self) -> str:
        parts = [f"{n} code(s) under key {kid}" for kid, n in sorted(self.usage.codes.items())]
        parts += [f"{n} shop secret(s) under key {kid}"
                  for kid, n in sorted(self.usage.secrets.items())]
        if self.audit_entries:
            parts.append(f"{self.audit_entries} audit log entries sealed with its key file")
        return ", ".join(parts)


def stored(engine: Engine) -> Stored:
    """Codes and secrets per key id, and the entries of keyed audit chains."""
    with engine.connect() as conn:
        sealed = conn.execute(
            select(func.count()).select_from(audit_log.join(
                audit_head, audit_log.c.chain == audit_head.c.id))
            .where(audit_head.c.keyed.is_(True))).scalar_one()
        return Stored(key_usage(conn), int(sealed))


def lost_key_file(engine: Engine, path: Path) -> VaultError | None:
    """The error for a missing key file when the database holds rows that need it."""
    found = stored(engine)
    if not found:
        return None
    return VaultError(
        f"key file {path} not found, and the database holds {found.describe()}: restore the "
        "key file from its backup; a new one (`robot keys init`) cannot read them")


def refuse_new_key_file(engine: Engine, path: Path) -> None:
    """``robot keys init``: refuse while the database holds anything a new key cannot read."""
    found = stored(engine)
    if found:
        raise VaultError(
            f"refusing to create a new key file {path}: the database holds "
            f"{found.describe()}, which a new key could never read or verify; restore the key "
            "file from its backup instead (nothing was written)")


def check_keys(engine: Engine, vault: Vault) -> None:
    """Refuse to go on with a key file that does not fit the database.

    Raises :class:`VaultError` naming the key ids the database uses that the file lacks, or
    the key ids whose key in the file does not decrypt the stored rows (a wrong key file),
    or when the file's fingerprint key does not match the stored fingerprints.
    """
    with engine.connect() as conn:
        code_samples = {str(r.key_id): int(r.id) for r in conn.execute(
            select(codes.c.key_id, func.min(codes.c.id).label("id")).group_by(codes.c.key_id))}
        secret_ids = {str(k) for k in conn.execute(select(shop_secrets.c.key_id).distinct())
                      .scalars()}
        missing = sorted((set(code_samples) | secret_ids) - set(vault.key_ids))
        if missing:
            raise VaultError(
                "the database holds codes or shop secrets under key id(s) "
                f"{', '.join(missing)}, which the key file lacks; this is the wrong key file, "
                "or an old copy: restore the right one from its backup (nothing was written)")
        rows = conn.execute(
            select(codes.c.id, codes.c.key_id, codes.c.pool_id, codes.c.fingerprint,
                   codes.c.ciphertext, codes.c.aad_version)
            .where(codes.c.id.in_(list(code_samples.values())))).all() if code_samples else []
        secret_rows = [conn.execute(
            select(shop_secrets.c.key_id, shop_secrets.c.shop, shop_secrets.c.name,
                   shop_secrets.c.ciphertext).where(shop_secrets.c.key_id == kid).limit(1)).one()
            for kid in sorted(secret_ids)]
    wrong: set[str] = set()
    for r in rows:
        try:
            plain = vault.decrypt(r.key_id, r.ciphertext, code_id=r.id, pool_id=r.pool_id,
                                  fingerprint=r.fingerprint, aad_version=r.aad_version)
        except VaultError:
            wrong.add(str(r.key_id))
            continue
        if vault.fingerprint(plain) != bytes(r.fingerprint):
            raise VaultError("the key file's fingerprint key does not match the stored codes: "
                             "wrong key file; restore the right one (nothing was written)")
    for s in secret_rows:
        try:
            vault.unseal(s.key_id, s.ciphertext, context=secret_context(s.shop, s.name))
        except VaultError:
            wrong.add(str(s.key_id))
    if wrong:
        raise VaultError(
            f"key id(s) {', '.join(sorted(wrong))} in the key file do not decrypt the stored "
            "rows: wrong key file; restore the right one (nothing was written)")


# ---------------------------------------------------------------------------- rotation


@dataclass
class RotationReport:
    """What one run of :func:`rotate` did."""

    current: str
    new_key: str | None = None  # the key this run created (None: it finished an earlier one)
    codes: int = 0  # re-encrypted
    secrets: int = 0
    retired: list[str] = field(default_factory=list)
    left: dict[str, int] = field(default_factory=dict)  # old key id -> rows still under it
    blocked: str | None = None  # why old keys were not retired

    def as_dict(self) -> dict[str, Any]:
        return {"current": self.current, "new_key": self.new_key, "codes": self.codes,
                "secrets": self.secrets, "retired": self.retired, "left": self.left,
                "blocked": self.blocked}


def _next_key_id(ring: KeyRing, used: set[str]) -> str:
    numbers = [int(m.group(1)) for kid in (*ring.keys, *used) if (m := _KEY_ID.fullmatch(kid))]
    return f"k{max(numbers, default=0) + 1}"


def unfinished(ring: KeyRing, usage: KeyUsage) -> bool:
    """A rotation is under way: rows under a non-current key, or a non-current key kept, or
    codes still on the old binding."""
    return (any(kid != ring.current for kid in usage.ids()) or len(ring.keys) > 1
            or usage.old_binding > 0)


def switch_key(path: Path, engine: Engine, *, force: bool = False,
               actor: str) -> tuple[KeyRing, str | None]:
    """Step 1: make a new key current, unless a rotation is unfinished (and not ``force``).

    Returns the ring now in the file and the new key id (None when none was created).
    """
    ring = load_key_ring(path)
    check_keys(engine, Vault(ring))
    with engine.connect() as conn:
        usage = key_usage(conn)
    if unfinished(ring, usage) and not force:
        return ring, None
    kid = _next_key_id(ring, usage.ids())
    ring = KeyRing(kid, {**ring.keys, kid: secrets.token_bytes(KEY_BYTES)}, ring.fingerprint_key)
    write_key_ring(path, ring)
    with transaction(engine) as conn:
        audit.append(conn, actor=actor, action="key_rotate", subject=f"key:{kid}",
                     details={"previous": sorted(k for k in ring.keys if k != kid)})
    return ring, kid


def reencrypt_codes(engine: Engine, vault: Vault, *, batch: int = DEFAULT_BATCH,
                    on_batch: Callable[[int], None] | None = None) -> int:
    """Step 2 for codes: re-encrypt every code not under the current key or not on the
    current binding (:data:`robot.vault.AAD_CURRENT`); returns how many were written.

    Walks the ids in order (so it ends even if rows are skipped); each batch is decrypted
    outside the transaction and written in one short one, each row guarded by its old key
    id, pool and binding version. A code that fails authentication is left as it is and
    logged (it is never handed out: the hand-over refuses it too). ``on_batch`` gets the
    running total after each committed batch.
    """
    if batch < 1:
        raise ValueError("batch must be positive")
    current = vault.current_key_id
    stmt = (update(codes)
            .where(codes.c.id == bindparam("b_id"), codes.c.key_id == bindparam("b_old"),
                   codes.c.pool_id == bindparam("b_pool"),
                   func.coalesce(codes.c.aad_version, 1) == bindparam("b_version"))
            .values(key_id=bindparam("b_kid"), ciphertext=bindparam("b_ct"),
                    aad_version=AAD_CURRENT))
    done, last = 0, 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(codes.c.id, codes.c.pool_id, codes.c.fingerprint, codes.c.key_id,
                       codes.c.ciphertext, codes.c.aad_version)
                .where(or_(codes.c.key_id != current, _on_old_binding()), codes.c.id > last)
                .order_by(codes.c.id).limit(batch)).all()
        if not rows:
            return done
        params = []
        for r in rows:
            fp = bytes(r.fingerprint)
            try:
                plain = vault.decrypt(r.key_id, r.ciphertext, code_id=r.id, pool_id=r.pool_id,
                                      fingerprint=fp, aad_version=r.aad_version)
            except CodeRejected as exc:
                log.error("code_rejected", code_id=int(r.id), error=exc.message)
                continue
            kid, blob = vault.encrypt(plain, code_id=r.id, pool_id=r.pool_id, fingerprint=fp)
            if kid != current:
                raise VaultError("the key file's current key changed during the rotation; "
                                 "run `robot keys rotate` again")
            params.append({"b_id": r.id, "b_old": r.key_id, "b_pool": r.pool_id,
                           "b_version": 1 if r.aad_version is None else int(r.aad_version),
                           "b_kid": kid, "b_ct": blob})
        if params:
            with transaction(engine) as conn:
                conn.execute(stmt, params)
        done += len(params)
        last = int(rows[-1].id)
        if on_batch is not None:
            on_batch(done)


def rebind_codes(engine: Engine, vault: Vault, *, batch: int = DEFAULT_BATCH) -> int:
    """Bring every code to the current binding (its id in the associated data) at start:
    the re-encryption batches of a rotation, without switching keys. Resumable: a stopped
    run leaves the rest on the old binding, where they still decrypt, for the next start.
    Logs what it did and what is left; returns how many codes were re-bound."""
    with engine.connect() as conn:
        before = old_binding(conn)
    if not before:
        return 0
    log.info("codes_rebind_started", old_binding=before)
    done = reencrypt_codes(engine, vault, batch=batch)
    with engine.connect() as conn:
        left = old_binding(conn)
    (log.warning if left else log.info)("codes_rebind_finished", rebound=done,
                                        old_binding_left=left)
    return done


def reencrypt_secrets(engine: Engine, vault: Vault) -> int:
    """Step 2 for shop secrets (a handful of rows), each guarded by its old key id."""
    current = vault.current_key_id
    with engine.connect() as conn:
        rows = conn.execute(select(shop_secrets.c.shop, shop_secrets.c.name,
                                   shop_secrets.c.key_id, shop_secrets.c.ciphertext)
                            .where(shop_secrets.c.key_id != current)).all()
    done = 0
    for r in rows:
        context = secret_context(r.shop, r.name)
        kid, blob = vault.seal(vault.unseal(r.key_id, r.ciphertext, context=context),
                               context=context)
        with transaction(engine) as conn:
            done += int(conn.execute(
                update(shop_secrets)
                .where(shop_secrets.c.shop == r.shop, shop_secrets.c.name == r.name,
                       shop_secrets.c.key_id == r.key_id)
                .values(key_id=kid, ciphertext=blob)).rowcount)
    return done


def _import_running(conn: Connection) -> bool:
    # An import encrypts a chunk before inserting it: it may still write under an old key.
    return conn.execute(select(func.count()).select_from(batches)
                        .where(batches.c.state == BatchState.IMPORTING)).scalar_one() > 0


def retire(path: Path, engine: Engine, key_id: str, *, actor: str) -> None:
    """Step 3: remove ``key_id`` from the key file; refuses while anything still uses it."""
    ring = load_key_ring(path)
    if key_id not in ring.keys:
        raise UserError(f"key {key_id!r} is not in the key file")
    if key_id == ring.current:
        raise UserError(f"key {key_id!r} is the current key; rotate first")
    with engine.connect() as conn:
        used = key_usage(conn).of(key_id)
        importing = _import_running(conn)
    if used:
        raise UserError(f"key {key_id!r} still encrypts {used} code(s) or secret(s); "
                        "run `robot keys rotate` to re-encrypt them first")
    if importing:
        raise UserError("an import is running and may still write under the old key; "
                        "retire the key when it has finished")
    write_key_ring(path, KeyRing(ring.current, {k: v for k, v in ring.keys.items()
                                                if k != key_id}, ring.fingerprint_key))
    with transaction(engine) as conn:
        audit.append(conn, actor=actor, action="key_retire", subject=f"key:{key_id}",
                     details={"current": ring.current})


def rotate(path: Path, engine: Engine, *, actor: str, new_key: bool = False,
           batch: int = DEFAULT_BATCH, retire_old: bool = True,
           on_batch: Callable[[int], None] | None = None) -> RotationReport:
    """Rotate (or finish an unfinished rotation): switch, re-encrypt, retire unused old keys.

    Old keys are retired automatically at the end when nothing uses them any more (unless
    ``retire_old`` is false: then ``robot keys retire`` does it later).
    """
    ring, created = switch_key(path, engine, force=new_key, actor=actor)
    vault = Vault(ring, path=path)
    report = RotationReport(current=ring.current, new_key=created)
    report.codes = reencrypt_codes(engine, vault, batch=batch, on_batch=on_batch)
    report.secrets = reencrypt_secrets(engine, vault)
    with engine.connect() as conn:
        usage = key_usage(conn)
        importing = _import_running(conn)
    old = sorted(k for k in load_key_ring(path).keys if k != ring.current)
    report.left = {k: usage.of(k) for k in old if usage.of(k)}
    if not retire_old:
        report.blocked = "not asked to retire old keys"
    elif report.left:
        report.blocked = "rows were written under an old key meanwhile; run rotate again"
    elif importing and old:
        report.blocked = "an import is running; run rotate again when it has finished"
    else:
        for kid in old:
            retire(path, engine, kid, actor=actor)
            report.retired.append(kid)
    return report
