"""The vault (encryption, fingerprints, masking, key file) and the ``robot keys`` commands."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, select, update
from structlog.testing import capture_logs

import robot.cli
from connectors.memory import MemoryConnector, MemoryPlatform
from robot import keys, orders, pipeline
from robot.cli.common import EXIT_FATAL, App, run_guarded
from robot.clock import utcnow
from robot.errors import CodeRejected, VaultError
from robot.http import handover
from robot.outbox import Dispatcher, RetryPolicy
from robot.schema import audit_log, codes, deliveries
from robot.schema import orders as orders_t
from robot.vault import (
    AAD_V1,
    AAD_V2,
    KEY_BYTES,
    NONCE_BYTES,
    KeyRing,
    Vault,
    _aad,
    init_key_file,
    join_pair,
    load_key_ring,
    mask,
    open_vault,
    split_pair,
    write_key_ring,
)
from tests.factories import Shop, paid_order, seed_codes, sku

SECRET = "SECRET-CODE-1234567"


def _sealed(vault: Vault, secret: str = SECRET, pool_id: int = 1,
            code_id: int = 1) -> tuple[str, bytes, bytes]:
    fp = vault.fingerprint(secret)
    kid, blob = vault.encrypt(secret, code_id=code_id, pool_id=pool_id, fingerprint=fp)
    return kid, blob, fp


def _write_raw(path: Path, payload: object) -> Path:
    path.write_text(json.dumps(payload), encoding="utf-8")
    path.chmod(0o600)
    return path


def _b64(n: int) -> str:
    return base64.b64encode(os.urandom(n)).decode()


# --- encryption ---------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [SECRET, "卡密-视频会员-Ωμ-😀", join_pair("6225001", "pw-884")])
def test_round_trip(vault: Vault, secret: str) -> None:
    """A code encrypted for a row decrypts to itself for that row (unicode and pairs too)."""
    kid, blob, fp = _sealed(vault, secret, pool_id=7)
    assert kid == vault.current_key_id
    assert secret.encode() not in blob
    assert vault.decrypt(kid, blob, code_id=1, pool_id=7, fingerprint=fp, aad_version=2) == secret


def test_ciphertext_moved_to_another_pool_fails(vault: Vault) -> None:
    """A ciphertext copied to a row of another pool does not decrypt."""
    kid, blob, fp = _sealed(vault, pool_id=1)
    with pytest.raises(VaultError, match="altered or moved"):
        vault.decrypt(kid, blob, code_id=1, pool_id=2, fingerprint=fp, aad_version=2)


def test_ciphertext_moved_to_another_fingerprint_fails(vault: Vault) -> None:
    """A ciphertext copied to the row of another code (other fingerprint) does not decrypt."""
    kid, blob, _ = _sealed(vault)
    other_fp = vault.fingerprint("ANOTHER-CODE-0000")
    with pytest.raises(VaultError):
        vault.decrypt(kid, blob, code_id=1, pool_id=1, fingerprint=other_fp, aad_version=2)


@pytest.mark.parametrize("index", [0, NONCE_BYTES, -1])
def test_flipped_byte_fails(vault: Vault, index: int) -> None:
    """Flipping one byte of nonce, ciphertext or tag makes decryption fail."""
    kid, blob, fp = _sealed(vault)
    tampered = bytearray(blob)
    tampered[index] ^= 0x01
    with pytest.raises(VaultError) as info:
        vault.decrypt(kid, bytes(tampered), code_id=1, pool_id=1, fingerprint=fp,
                      aad_version=2)
    assert SECRET not in str(info.value)


def test_truncated_blob_fails_with_vault_error(vault: Vault) -> None:
    """A blob shorter than nonce + tag is a VaultError, not a crash inside the cipher."""
    kid, blob, fp = _sealed(vault)
    for cut in (0, 5, NONCE_BYTES + 3):
        with pytest.raises(VaultError, match="truncated"):
            vault.decrypt(kid, blob[:cut], code_id=1, pool_id=1, fingerprint=fp, aad_version=2)


def test_unknown_key_id_names_the_key_not_the_code(vault: Vault) -> None:
    """Decrypting under a key the file lacks names the key id and never the code."""
    _, blob, fp = _sealed(vault)
    with pytest.raises(VaultError) as info:
        vault.decrypt("k9", blob, code_id=1, pool_id=1, fingerprint=fp, aad_version=2)
    message = str(info.value)
    assert "'k9'" in message
    assert SECRET not in message
    assert mask(SECRET) not in message


def test_key_id_is_bound_into_the_ciphertext(key_file: Path) -> None:
    """Relabelling a ciphertext with another key id of the same file fails."""
    ring = load_key_ring(key_file)
    two = Vault(KeyRing("k2", {**ring.keys, "k2": ring.keys["k1"]}, ring.fingerprint_key))
    kid, blob, fp = _sealed(Vault(ring))
    assert kid == "k1"
    with pytest.raises(VaultError):
        two.decrypt("k2", blob, code_id=1, pool_id=1, fingerprint=fp, aad_version=2)


def test_encryptions_of_the_same_code_differ(vault: Vault) -> None:
    """Two encryptions of one code use different nonces and give different ciphertexts."""
    _, first, fp = _sealed(vault)
    _, second, _ = _sealed(vault)
    assert first != second
    assert first[:NONCE_BYTES] != second[:NONCE_BYTES]
    assert vault.decrypt("k1", second, code_id=1, pool_id=1, fingerprint=fp, aad_version=2) == SECRET


def test_encrypt_many_seals_like_encrypt(vault: Vault) -> None:
    """The import's batch encryption: each blob decrypts for its own row only, and every
    code has a nonce of its own (drawn in one call, sliced without overlap)."""
    secrets_ = [SECRET, "卡密-视频会员-Ωμ", SECRET]
    items = [(i, s, vault.fingerprint(s)) for i, s in enumerate(secrets_, start=1)]
    sealed = vault.encrypt_many(items, pool_id=4)
    assert [kid for kid, _ in sealed] == [vault.current_key_id] * 3
    for (cid, secret, fp), (kid, blob) in zip(items, sealed, strict=True):
        assert vault.decrypt(kid, blob, code_id=cid, pool_id=4, fingerprint=fp,
                             aad_version=2) == secret
        with pytest.raises(VaultError):
            vault.decrypt(kid, blob, code_id=cid, pool_id=5, fingerprint=fp, aad_version=2)
        with pytest.raises(VaultError):
            vault.decrypt(kid, blob, code_id=cid + 10, pool_id=4, fingerprint=fp,
                          aad_version=2)
    nonces = {blob[:NONCE_BYTES] for _, blob in sealed}
    assert len(nonces) == 3
    assert sealed[0][1] != sealed[2][1]  # the same code twice: two ciphertexts
    assert vault.encrypt_many([], pool_id=4) == []


def test_rotation_keeps_old_codes_readable(key_file: Path) -> None:
    """After a new current key, codes under the old key still decrypt and new ones use k2."""
    ring = load_key_ring(key_file)
    old_vault = Vault(ring)
    kid, blob, fp = _sealed(old_vault)
    rotated = KeyRing("k2", {**ring.keys, "k2": os.urandom(KEY_BYTES)}, ring.fingerprint_key)
    write_key_ring(key_file, rotated)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    new_vault = open_vault(key_file)
    assert new_vault.decrypt(kid, blob, code_id=1, pool_id=1, fingerprint=fp, aad_version=2) == SECRET
    assert new_vault.encrypt(SECRET, code_id=1, pool_id=1, fingerprint=fp)[0] == "k2"
    assert new_vault.fingerprint(SECRET) == fp


def test_write_key_ring_forces_mode_0600_on_a_stale_temp_file(key_file: Path) -> None:
    """A leftover world-readable temp file does not make the rewritten key file readable."""
    stale = key_file.with_name(key_file.name + ".tmp")
    stale.write_text("stale")
    stale.chmod(0o644)
    write_key_ring(key_file, load_key_ring(key_file))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    open_vault(key_file)


# --- fingerprints -------------------------------------------------------------------------


def test_fingerprint_stable_for_one_key_file(key_file: Path) -> None:
    """Two vaults opened from one key file give the same fingerprint."""
    assert open_vault(key_file).fingerprint(SECRET) == open_vault(key_file).fingerprint(SECRET)
    assert len(open_vault(key_file).fingerprint(SECRET)) == 32


def test_fingerprint_differs_across_key_files(key_file: Path, tmp_path: Path) -> None:
    """Another key file (another fingerprint key) gives another fingerprint for the code."""
    other = tmp_path / "other.key"
    init_key_file(other)
    assert open_vault(key_file).fingerprint(SECRET) != open_vault(other).fingerprint(SECRET)


def test_fingerprint_distinguishes_codes(vault: Vault) -> None:
    """Different codes have different fingerprints."""
    assert vault.fingerprint(SECRET) != vault.fingerprint(SECRET + "8")


# --- masking ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("1234567890", "12****90"),
        ("ABCDEFG", "AB****FG"),
        ("123456", "******"),
        ("1234", "****"),
        ("12", "****"),
        ("", "****"),
        ("卡密视频会员月卡", "卡密****月卡"),
    ],
)
def test_mask(secret: str, shown: str) -> None:
    """Codes show two characters at each end; codes of six or fewer are fully hidden."""
    assert mask(secret) == shown


def test_mask_pair_masks_each_half() -> None:
    """A card number / password pair is masked half by half and the halves are kept apart."""
    pair = join_pair("6225880012345678", "884422")
    assert mask(pair) == "62****78 / ******"
    assert split_pair(pair) == ("6225880012345678", "884422")
    assert join_pair("6225880012345678", None) == "6225880012345678"
    assert split_pair("6225880012345678") == ("6225880012345678", None)


# --- key file -----------------------------------------------------------------------------


def test_init_key_file_mode_0600_and_valid(tmp_path: Path) -> None:
    """A new key file is private (0600) and holds one 32-byte key and a fingerprint key."""
    path = tmp_path / "sub" / "robot.key"
    init_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = load_key_ring(path)
    assert ring.current == "k1"
    assert [len(k) for k in ring.keys.values()] == [KEY_BYTES]
    assert len(ring.fingerprint_key) == KEY_BYTES
    assert ring.fingerprint_key != ring.keys["k1"]


def test_init_key_file_refuses_to_overwrite(key_file: Path) -> None:
    """An existing key file is never replaced by init."""
    before = key_file.read_bytes()
    with pytest.raises(VaultError, match="refusing to overwrite"):
        init_key_file(key_file)
    assert key_file.read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_load_refuses_group_or_other_readable(key_file: Path, mode: int) -> None:
    """A key file others can read is refused, with the chmod that fixes it."""
    key_file.chmod(mode)
    with pytest.raises(VaultError) as info:
        load_key_ring(key_file)
    assert f"chmod 600 {key_file}" in str(info.value)
    assert load_key_ring(key_file, check_mode=False).current == "k1"


def test_load_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    """A missing key file points to `robot keys init` and to the backup."""
    with pytest.raises(VaultError, match="robot keys init") as info:
        load_key_ring(tmp_path / "nope.key")
    assert "backup" in str(info.value)


def test_load_unreadable_path_is_a_vault_error(tmp_path: Path) -> None:
    """A key file path that is a directory is reported as a VaultError."""
    directory = tmp_path / "robot.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(VaultError, match="cannot be read"):
        load_key_ring(directory)


@pytest.mark.parametrize(
    "payload",
    [
        "not json {",
        [1, 2],
        {"version": 1, "current": "k1", "fingerprint_key": "x"},
        {"version": 1, "current": "k1", "keys": {"k1": "!!notbase64!!"}, "fingerprint_key": "AA=="},
        {"version": 1, "current": "k1", "keys": ["k1"], "fingerprint_key": "AA=="},
    ],
)
def test_load_malformed(tmp_path: Path, payload: object) -> None:
    """Malformed key files are refused as malformed."""
    path = tmp_path / "bad.key"
    if isinstance(payload, str):
        path.write_text(payload)
        path.chmod(0o600)
    else:
        _write_raw(path, payload)
    with pytest.raises(VaultError, match="malformed"):
        load_key_ring(path)


def test_load_unsupported_version(tmp_path: Path) -> None:
    """A key file of another version is refused, naming the version."""
    path = _write_raw(tmp_path / "v2.key", {"version": 2, "current": "k1",
                                            "keys": {"k1": _b64(32)}, "fingerprint_key": _b64(32)})
    with pytest.raises(VaultError, match="unsupported version 2"):
        load_key_ring(path)


@pytest.mark.parametrize(("key_len", "fp_len"), [(16, 32), (32, 31), (33, 32)])
def test_load_wrong_key_length(tmp_path: Path, key_len: int, fp_len: int) -> None:
    """Every key must be 32 bytes, the fingerprint key included."""
    path = _write_raw(tmp_path / "short.key", {
        "version": 1, "current": "k1", "keys": {"k1": _b64(key_len)},
        "fingerprint_key": _b64(fp_len),
    })
    with pytest.raises(VaultError, match="32 bytes"):
        load_key_ring(path)


def test_load_current_key_missing(tmp_path: Path) -> None:
    """A current key id that is not among the keys is refused, naming it."""
    path = _write_raw(tmp_path / "cur.key", {"version": 1, "current": "k2",
                                             "keys": {"k1": _b64(32)}, "fingerprint_key": _b64(32)})
    with pytest.raises(VaultError, match="current key 'k2' is missing"):
        load_key_ring(path)


def test_key_material_never_in_messages(key_file: Path) -> None:
    """Errors about a key file never quote its keys."""
    raw = json.loads(key_file.read_text())
    raw["current"] = "k7"
    _write_raw(key_file, raw)
    with pytest.raises(VaultError) as info:
        load_key_ring(key_file)
    assert raw["keys"]["k1"] not in str(info.value)
    assert raw["fingerprint_key"] not in str(info.value)


# --- sealed shop secrets ------------------------------------------------------------------


def test_seal_round_trip(vault: Vault) -> None:
    """A sealed shop secret unseals to itself under the same context."""
    kid, blob = vault.seal("tok-abcdef-令牌", context="shop-a/access_token")
    assert b"tok-abcdef" not in blob
    assert vault.unseal(kid, blob, context="shop-a/access_token") == "tok-abcdef-令牌"


def test_unseal_with_wrong_context_fails(vault: Vault) -> None:
    """A secret sealed for one shop or name cannot be unsealed as another."""
    kid, blob = vault.seal("tok-abcdef", context="shop-a/access_token")
    for context in ("shop-b/access_token", "shop-a/refresh_token"):
        with pytest.raises(VaultError) as info:
            vault.unseal(kid, blob, context=context)
        assert "tok-abcdef" not in str(info.value)


def test_unseal_unknown_key_and_truncated(vault: Vault) -> None:
    """Unsealing under a missing key names the key; a truncated blob is a VaultError."""
    kid, blob = vault.seal("tok-abcdef", context="c")
    with pytest.raises(VaultError, match="'k3'"):
        vault.unseal("k3", blob, context="c")
    with pytest.raises(VaultError, match="truncated"):
        vault.unseal(kid, blob[:10], context="c")


def test_code_and_secret_ciphertexts_are_not_interchangeable(vault: Vault) -> None:
    """A sealed secret cannot be passed off as a code and vice versa (separate AAD)."""
    kid, blob, fp = _sealed(vault)
    with pytest.raises(VaultError):
        vault.unseal(kid, blob, context="1")
    kid2, sealed = vault.seal(SECRET, context="1")
    with pytest.raises(VaultError):
        vault.decrypt(kid2, sealed, code_id=1, pool_id=1, fingerprint=fp, aad_version=2)


# --- robot keys ---------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _commands() -> None:
    robot.cli._register()


def _app_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, engine: Engine | None = None,
              key_file: Path | None = None) -> App:
    """Make the CLI use this App (its config and engine given here, not read from a file)."""
    app = App(config_path=tmp_path / "robot.yaml")
    if key_file is not None:
        # A database that does not exist yet: init has nothing to check it against.
        app.__dict__["config"] = SimpleNamespace(
            key_file=key_file, database=f"sqlite:///{tmp_path / 'absent.db'}")
    if engine is not None:
        app._engine = engine
    monkeypatch.setattr(robot.cli, "App", lambda config_path: app)
    return app


def _run_guarded(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                 *args: str) -> tuple[int, str, str]:
    """Run the CLI as `robot` does (exit status from run_guarded)."""
    monkeypatch.setattr(sys, "argv", ["robot", *args])
    status = run_guarded(robot.cli.cli)
    out, err = capsys.readouterr()
    return status, out, err


def test_keys_init_writes_a_private_key_file(tmp_path: Path) -> None:
    """`robot keys init --key-file` writes a 0600 key file and warns to back it up."""
    path = tmp_path / "k" / "robot.key"
    result = CliRunner().invoke(robot.cli.cli, ["keys", "init", "--key-file", str(path)])
    assert result.exit_code == 0, result.output
    assert str(path) in result.stdout
    assert "back this file up" in result.stderr
    assert "useless to a thief" in result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = load_key_ring(path)
    for key in (*ring.keys.values(), ring.fingerprint_key):
        assert base64.b64encode(key).decode() not in result.output


def test_keys_init_uses_the_configured_key_file(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """Without --key-file, init writes the file the config's key_file names."""
    path = tmp_path / "configured.key"
    _app_with(monkeypatch, tmp_path, key_file=path)
    result = CliRunner().invoke(robot.cli.cli, ["keys", "init"])
    assert result.exit_code == 0, result.output
    assert load_key_ring(path).current == "k1"


def test_keys_init_refuses_to_overwrite(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str], key_file: Path) -> None:
    """init on an existing key file changes nothing and exits 3 with one fatal line."""
    before = key_file.read_bytes()
    status, out, err = _run_guarded(monkeypatch, capsys, "keys", "init", "--key-file",
                                    str(key_file))
    assert status == EXIT_FATAL
    assert err.startswith("fatal: ")
    assert "refusing to overwrite" in err
    assert out == ""
    assert key_file.read_bytes() == before


def test_keys_status_counts_codes_per_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          engine: Engine, key_file: Path) -> None:
    """status lists the key ids, the current one, and how many codes each encrypts."""
    vault = open_vault(key_file)
    seed_codes(engine, vault, "pool-a", 3)
    _app_with(monkeypatch, tmp_path, engine=engine, key_file=key_file)
    result = CliRunner().invoke(robot.cli.cli, ["keys", "status", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["current"] == "k1"
    assert doc["keys"] == [{"key_id": "k1", "current": True, "in_key_file": True,
                            "codes": 3, "secrets": 0}]
    assert doc["missing_key_ids"] == []
    assert doc["database_error"] is None
    ring = load_key_ring(key_file)
    assert base64.b64encode(ring.keys["k1"]).decode() not in result.output


def test_keys_status_flags_key_ids_the_file_lacks(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path, engine: Engine,
                                                  key_file: Path) -> None:
    """Codes under a key id missing from the file are reported as unreadable, and the
    status fails as `robot run` would (it never looks healthy with the wrong key file)."""
    seed_codes(engine, open_vault(key_file), "pool-a", 2)
    other = tmp_path / "other.key"
    init_key_file(other)
    ring = load_key_ring(other)
    write_key_ring(other, KeyRing("k2", {"k2": ring.keys["k1"]}, ring.fingerprint_key))
    _app_with(monkeypatch, tmp_path, engine=engine)
    runner = CliRunner()
    result = runner.invoke(robot.cli.cli, ["keys", "status", "--key-file", str(other), "--json"])
    assert result.exit_code != 0, result.output
    doc = json.loads(result.stdout)
    assert "which the key file lacks" in doc["key_check"]
    assert doc["missing_key_ids"] == ["k1"]
    assert {k["key_id"]: (k["in_key_file"], k["codes"]) for k in doc["keys"]} == {
        "k2": (True, 0), "k1": (False, 2)}
    table = runner.invoke(robot.cli.cli, ["keys", "status", "--key-file", str(other)])
    assert table.exit_code != 0, table.output
    assert "MISSING" in table.stdout
    assert "restore the key file" in table.stderr


def test_keys_status_without_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      key_file: Path) -> None:
    """With no usable config or database, status still shows the key file and says why."""
    app = _app_with(monkeypatch, tmp_path)
    assert not app.config_path.exists()
    result = CliRunner().invoke(robot.cli.cli,
                                ["keys", "status", "--key-file", str(key_file), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["keys"] == [{"key_id": "k1", "current": True, "in_key_file": True,
                            "codes": None, "secrets": None}]
    assert doc["database_error"].startswith("ConfigError")


def test_keys_status_refuses_a_readable_key_file(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str],
                                                 key_file: Path) -> None:
    """status on a group-readable key file fails (exit 3) with the chmod that fixes it."""
    key_file.chmod(0o644)
    status, _, err = _run_guarded(monkeypatch, capsys, "keys", "status", "--key-file",
                                  str(key_file))
    assert status == EXIT_FATAL
    assert f"chmod 600 {key_file}" in err


def test_key_file_owned_by_another_user_is_refused(key_file, monkeypatch) -> None:
    """A key file the robot's user does not own is refused with the chown fix (root excepted)."""
    import os

    from robot.vault import load_key_ring

    owner = key_file.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1000)
    with pytest.raises(VaultError, match="chown"):
        load_key_ring(key_file)
    monkeypatch.setattr(os, "geteuid", lambda: owner)
    assert load_key_ring(key_file).current


# --- the row binding (code id in the associated data) -------------------------------------


def _legacy_blob(key_file: Path, secret: str, pool_id: int, fp: bytes) -> bytes:
    """A ciphertext as versions before the row binding wrote it (pool, fingerprint, key)."""
    ring = load_key_ring(key_file)
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(ring.keys["k1"]).encrypt(
        nonce, secret.encode(), _aad(0, pool_id, fp, "k1", AAD_V1))


def test_ciphertext_copied_to_another_row_of_its_pool_fails_naming_the_code(
        vault: Vault) -> None:
    """A ciphertext copied with its fingerprint and key id onto another row of the same pool
    does not decrypt there; the refusal names that row's code id and never the code."""
    kid, blob, fp = _sealed(vault, pool_id=1, code_id=41)
    assert vault.decrypt(kid, blob, code_id=41, pool_id=1, fingerprint=fp,
                         aad_version=AAD_V2) == SECRET
    with pytest.raises(CodeRejected, match=r"^code 42 failed authentication") as info:
        vault.decrypt(kid, blob, code_id=42, pool_id=1, fingerprint=fp, aad_version=AAD_V2)
    assert SECRET not in str(info.value)
    assert mask(SECRET) not in str(info.value)


def test_old_binding_decrypts_but_a_new_ciphertext_cannot_be_passed_off_as_old(
        key_file: Path, vault: Vault) -> None:
    """Rows written before the row binding (aad_version NULL) still decrypt; a version 2
    ciphertext relabelled as version 1 (or as an unknown version) does not."""
    fp = vault.fingerprint(SECRET)
    old = _legacy_blob(key_file, SECRET, 1, fp)
    assert vault.decrypt("k1", old, code_id=5, pool_id=1, fingerprint=fp,
                         aad_version=None) == SECRET
    with pytest.raises(CodeRejected, match="code 5"):
        vault.decrypt("k1", old, code_id=5, pool_id=1, fingerprint=fp, aad_version=AAD_V2)
    kid, new, _ = _sealed(vault, code_id=5)
    with pytest.raises(CodeRejected, match="code 5"):
        vault.decrypt(kid, new, code_id=5, pool_id=1, fingerprint=fp, aad_version=None)
    with pytest.raises(CodeRejected, match="unknown associated-data version"):
        vault.decrypt(kid, new, code_id=5, pool_id=1, fingerprint=fp, aad_version=7)


SWAP_SHOP = Shop(items=(sku("s1", ("p1", 1)),))


def _code_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [int(i) for i in conn.execute(select(codes.c.id).order_by(codes.c.id)).scalars()]


def _swap(engine: Engine, source: int, target: int) -> None:
    """What someone with write access to the database does: copy a delivered code's
    ciphertext, fingerprint, key id and binding onto an available row (moving the
    source's fingerprint aside first, as the unique index demands)."""
    with engine.begin() as conn:
        src = conn.execute(select(codes).where(codes.c.id == source)).one()
        conn.execute(update(codes).where(codes.c.id == source).values(fingerprint=b"\0" * 32))
        conn.execute(update(codes).where(codes.c.id == target).values(
            fingerprint=src.fingerprint, key_id=src.key_id, ciphertext=src.ciphertext,
            aad_version=src.aad_version))


def _ship(engine: Engine, disp: Dispatcher, platform: MemoryPlatform, name: str) -> int:
    order = paid_order(name, ("s1", 1))
    platform.put_order(order)
    order_id = pipeline.intake(engine, SWAP_SHOP, order).order_id
    assert order_id is not None
    while pipeline.allocate_next(engine):
        pass
    for _ in range(5):
        if not asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=2))):
            break
    return order_id


def _order(engine: Engine, order_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(orders_t.c.state, orders_t.c.reason)
                            .where(orders_t.c.id == order_id)).one()


def test_a_delivered_code_copied_onto_an_available_row_is_never_sold_again(
        engine: Engine, vault: Vault) -> None:
    """Swap: a delivered code's ciphertext, fingerprint and key id copied onto an available
    row. The order that gets that row fails with a reason naming the code id (logged and
    audited), nothing is sent to the platform, reveal and hand-over refuse it too, and the
    write-back goes on with the next order."""
    seed_codes(engine, vault, "p1", 3)
    first, second, third = _code_ids(engine)
    platform = MemoryPlatform()
    disp = Dispatcher(engine, vault, {SWAP_SHOP.name: MemoryConnector(platform)},
                      {SWAP_SHOP.name: SWAP_SHOP},
                      RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.001),
                      worker="test")
    sold = _ship(engine, disp, platform, "SW1")
    assert _order(engine, sold).state == "shipped"
    _swap(engine, first, second)
    with capture_logs() as logs:
        victim = _ship(engine, disp, platform, "SW2")
    state, reason = _order(engine, victim)
    assert state == "failed"
    assert f"code {second} failed authentication" in reason
    assert platform.shipments("SW2") == 0
    assert platform.memo("SW2") is None
    refused = [e for e in logs if e["event"] == "write_back_refused"]
    assert len(refused) == 1
    assert f"code {second}" in refused[0]["error"]
    with engine.connect() as conn:
        failed = conn.execute(select(audit_log.c.details).where(
            audit_log.c.action == "ship_failed")).scalars().all()
        assert any(f"code {second}" in d for d in failed)
        rows = handover.code_rows(conn, victim)
    with pytest.raises(CodeRejected, match=f"code {second}"):
        handover.views(vault, rows, masked=False)
    with pytest.raises(CodeRejected, match=f"code {second}"):
        orders.reveal(engine, vault, victim, actor="t")
    with engine.connect() as conn:  # the refused reveal marked nothing as seen
        assert conn.execute(select(deliveries.c.seen_at)
                            .where(deliveries.c.order_id == victim)).scalar() is None
    after = _ship(engine, disp, platform, "SW3")
    assert _order(engine, after).state == "shipped"
    with engine.connect() as conn:
        assert conn.execute(select(deliveries.c.code_id)
                            .where(deliveries.c.order_id == after)).scalar() == third


def test_rows_on_the_old_binding_are_rebound_then_a_swap_fails(
        engine: Engine, vault: Vault, key_file: Path) -> None:
    """Codes written before the row binding (as after the upgrade) could be swapped within
    their pool; keys.rebind_codes re-encrypts them (resumable, counted by old_binding) and
    from then on the same swap is refused, naming the code."""
    seed_codes(engine, vault, "p1", 3)
    with engine.begin() as conn:  # make them what an older version wrote
        for r in conn.execute(select(codes)).all():
            secret = vault.decrypt(r.key_id, r.ciphertext, code_id=r.id, pool_id=r.pool_id,
                                   fingerprint=r.fingerprint, aad_version=r.aad_version)
            conn.execute(update(codes).where(codes.c.id == r.id).values(
                aad_version=None,
                ciphertext=_legacy_blob(key_file, secret, r.pool_id, bytes(r.fingerprint))))
    first, second, _ = _code_ids(engine)
    with engine.connect() as conn:
        assert keys.old_binding(conn) == 3
        before = conn.execute(select(codes).where(codes.c.id == first)).one()
    # The old behaviour: a version-1 ciphertext decrypts on any row of its pool.
    assert vault.decrypt(before.key_id, before.ciphertext, code_id=second,
                         pool_id=before.pool_id, fingerprint=before.fingerprint,
                         aad_version=None).startswith("T")
    assert keys.rebind_codes(engine, vault, batch=2) == 3
    with engine.connect() as conn:
        assert keys.old_binding(conn) == 0
    assert keys.rebind_codes(engine, vault) == 0
    _swap(engine, first, second)
    with engine.connect() as conn:
        row = conn.execute(select(codes).where(codes.c.id == second)).one()
    with pytest.raises(CodeRejected, match=f"code {second}"):
        vault.decrypt(row.key_id, row.ciphertext, code_id=second, pool_id=row.pool_id,
                      fingerprint=row.fingerprint, aad_version=row.aad_version)
