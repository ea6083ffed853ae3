"""The vault (encryption, fingerprints, masking, key file) and the ``robot keys`` commands."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

import robot.cli
from robot.cli.common import EXIT_FATAL, App, run_guarded
from robot.errors import VaultError
from robot.vault import (
    KEY_BYTES,
    NONCE_BYTES,
    KeyRing,
    Vault,
    init_key_file,
    join_pair,
    load_key_ring,
    mask,
    open_vault,
    split_pair,
    write_key_ring,
)
from tests.factories import seed_codes

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
        app.__dict__["config"] = SimpleNamespace(key_file=key_file)
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
    """Codes under a key id missing from the file are reported as unreadable."""
    seed_codes(engine, open_vault(key_file), "pool-a", 2)
    other = tmp_path / "other.key"
    init_key_file(other)
    ring = load_key_ring(other)
    write_key_ring(other, KeyRing("k2", {"k2": ring.keys["k1"]}, ring.fingerprint_key))
    _app_with(monkeypatch, tmp_path, engine=engine)
    runner = CliRunner()
    result = runner.invoke(robot.cli.cli, ["keys", "status", "--key-file", str(other), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["missing_key_ids"] == ["k1"]
    assert {k["key_id"]: (k["in_key_file"], k["codes"]) for k in doc["keys"]} == {
        "k2": (True, 0), "k1": (False, 2)}
    table = runner.invoke(robot.cli.cli, ["keys", "status", "--key-file", str(other)])
    assert table.exit_code == 0, table.output
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
