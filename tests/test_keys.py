"""Key rotation and the start-up key check, on every backend."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, func, select, update
from structlog.testing import capture_logs

import robot.cli
from connectors.memory import MemoryPlatform
from robot import audit, keys, orders, pipeline
from robot.cli.common import App
from robot.clock import DEFAULT_ZONE
from robot.config import load_config
from robot.daemon import Robot
from robot.db import make_engine
from robot.errors import UserError, VaultError
from robot.migrate import upgrade
from robot.pools import create_pool, import_codes
from robot.schema import batches, codes
from robot.schema import orders as orders_t
from robot.shops import DbShopContext
from robot.vault import (
    AAD_V1,
    AAD_V2,
    NONCE_BYTES,
    KeyRing,
    Vault,
    _aad,
    init_key_file,
    load_key_ring,
    open_vault,
    write_key_ring,
)
from tests.factories import Shop, paid_order, seed_codes, sku
from tests.test_daemon import write_config
from tests.test_pipeline import dispatcher, drain

SHOP = Shop(items=(sku("s1", ("p1", 1)),))


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C in the middle of a rotation."""


def codes_by_key(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return keys.key_usage(conn).codes


def all_plaintexts(engine: Engine, vault: Vault) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(select(codes.c.id, codes.c.key_id, codes.c.ciphertext,
                                   codes.c.pool_id, codes.c.fingerprint,
                                   codes.c.aad_version)).all()
    return {vault.decrypt(r.key_id, r.ciphertext, code_id=r.id, pool_id=r.pool_id,
                          fingerprint=bytes(r.fingerprint), aad_version=r.aad_version)
            for r in rows}


def order_for(engine: Engine, name: str, quantity: int = 1) -> int:
    result = pipeline.intake(engine, SHOP, paid_order(name, ("s1", quantity)))
    assert result.order_id is not None
    return result.order_id


def test_rotation_interrupted_resumed_while_delivering(engine: Engine, key_file: Path) -> None:
    """A rotation cut off after one batch resumes without a new key; deliveries go on in
    between; at the end every code decrypts, none is under the old key, the old key is gone."""
    running = open_vault(key_file)  # the robot's vault, opened before the rotation
    seeded = set(seed_codes(engine, running, "p1", 23))
    DbShopContext(engine, running, SHOP.name).store_secret("access_token", "tok-secret-1")
    platform = MemoryPlatform()
    first = paid_order("K0", ("s1", 2))
    platform.put_order(first)
    pipeline.intake(engine, SHOP, first)
    drain(engine, dispatcher(engine, running, platform, shop=SHOP))
    assert platform.shipments("K0") == 1

    def crash_after_first(done: int) -> None:
        raise Interrupted(f"after {done}")

    with pytest.raises(Interrupted):
        keys.rotate(key_file, engine, actor="t", batch=5, on_batch=crash_after_first)
    ring = load_key_ring(key_file)
    assert (ring.current, sorted(ring.keys)) == ("k2", ["k1", "k2"])
    assert codes_by_key(engine) == {"k1": 18, "k2": 5}

    # The robot keeps delivering between the two halves, with the vault it started with.
    middle = [order_for(engine, f"M{i}") for i in range(3)]
    for _ in middle:
        assert pipeline.allocate_next(engine) is not None
    revealed = [orders.reveal(engine, running, oid, actor="t")[0].secret for oid in middle]
    assert set(revealed) <= seeded
    seeded |= set(seed_codes(engine, running, "p1", 4))  # written under the new key
    assert codes_by_key(engine)["k2"] == 9

    report = keys.rotate(key_file, engine, actor="t", batch=5)
    assert report.new_key is None and report.current == "k2"
    assert report.codes == 18 and report.secrets == 1
    assert report.retired == ["k1"]
    assert codes_by_key(engine) == {"k2": 27}
    assert sorted(load_key_ring(key_file).keys) == ["k2"]
    fresh = open_vault(key_file)
    assert all_plaintexts(engine, fresh) == seeded
    assert all_plaintexts(engine, running) == seeded  # the running robot still reads them all
    with engine.connect() as conn:
        order_ids = [int(i) for i in conn.execute(select(orders_t.c.id)).scalars()]
    shown = {c.secret for oid in order_ids for c in orders.reveal(engine, fresh, oid, actor="t")}
    assert len(shown) == 5 and shown <= seeded
    assert DbShopContext(engine, fresh, SHOP.name).load_secret("access_token") == "tok-secret-1"
    keys.check_keys(engine, fresh)
    assert audit.verify(engine).ok


def test_rotate_does_not_stack_keys_unless_forced(engine: Engine, key_file: Path,
                                                  vault: Vault) -> None:
    """An unfinished rotation is finished, not restarted; --new-key forces another key;
    a finished one lets the next rotate start afresh."""
    seed_codes(engine, vault, "p1", 3)
    kept = keys.rotate(key_file, engine, actor="t", retire_old=False)
    assert (kept.new_key, kept.retired) == ("k2", [])
    again = keys.rotate(key_file, engine, actor="t")
    assert (again.new_key, again.codes, again.retired) == (None, 0, ["k1"])
    forced_ring, created = keys.switch_key(key_file, engine, actor="t")
    assert created == "k3" and forced_ring.current == "k3"
    _, none_created = keys.switch_key(key_file, engine, actor="t")
    assert none_created is None
    _, forced = keys.switch_key(key_file, engine, force=True, actor="t")
    assert forced == "k4"
    done = keys.rotate(key_file, engine, actor="t")
    assert done.new_key is None and done.retired == ["k2", "k3"]
    assert codes_by_key(engine) == {"k4": 3}
    assert sorted(load_key_ring(key_file).keys) == ["k4"]


def test_retire_refuses_while_a_key_is_in_use(engine: Engine, key_file: Path,
                                              vault: Vault) -> None:
    """The old key stays while a code or secret uses it, or an import is running; the current
    key is never retired."""
    seed_codes(engine, vault, "p1", 2)
    keys.switch_key(key_file, engine, actor="t")
    with pytest.raises(UserError, match="still encrypts 2"):
        keys.retire(key_file, engine, "k1", actor="t")
    with pytest.raises(UserError, match="current key"):
        keys.retire(key_file, engine, "k2", actor="t")
    keys.reencrypt_codes(engine, open_vault(key_file))
    with engine.begin() as conn:
        conn.execute(update(batches).values(state="importing"))
    with pytest.raises(UserError, match="import is running"):
        keys.retire(key_file, engine, "k1", actor="t")
    report = keys.rotate(key_file, engine, actor="t")
    assert report.retired == [] and report.blocked is not None
    with engine.begin() as conn:
        conn.execute(update(batches).values(state="active"))
    keys.retire(key_file, engine, "k1", actor="t")
    assert sorted(load_key_ring(key_file).keys) == ["k2"]


def test_a_guarded_write_never_overwrites_a_newer_row(engine: Engine, key_file: Path,
                                                      vault: Vault) -> None:
    """A row rewritten by someone else between the rotation's read and write is left as they
    wrote it (the write is guarded by the old key id)."""
    seed_codes(engine, vault, "p1", 4)
    keys.switch_key(key_file, engine, actor="t")
    with engine.connect() as conn:
        victim = conn.execute(select(codes).order_by(codes.c.id.desc()).limit(1)).one()
    fp = bytes(victim.fingerprint)
    writer = open_vault(key_file)
    theirs = writer.encrypt(writer.decrypt(victim.key_id, victim.ciphertext, code_id=victim.id,
                                           pool_id=victim.pool_id, fingerprint=fp,
                                           aad_version=victim.aad_version),
                            code_id=victim.id, pool_id=victim.pool_id, fingerprint=fp)

    class Meddled(Vault):
        """Lets another writer in while the rotation holds the victim's old copy."""

        def decrypt(self, key_id: str, blob: bytes, *, code_id: int, pool_id: int,
                    fingerprint: bytes, aad_version: int | None) -> str:
            if fingerprint == fp:
                with engine.begin() as conn:
                    conn.execute(update(codes).where(codes.c.id == victim.id)
                                 .values(key_id=theirs[0], ciphertext=theirs[1]))
            return super().decrypt(key_id, blob, code_id=code_id, pool_id=pool_id,
                                   fingerprint=fingerprint, aad_version=aad_version)

    assert keys.reencrypt_codes(engine, Meddled(load_key_ring(key_file)), batch=2) == 4
    with engine.connect() as conn:
        stored = conn.execute(select(codes.c.ciphertext).where(codes.c.id == victim.id)).scalar()
    assert bytes(stored) == theirs[1]
    assert codes_by_key(engine) == {"k2": 4}


def test_wrong_key_file_is_a_clear_error_and_nothing_is_written(
        engine: Engine, key_file: Path, vault: Vault, tmp_path: Path) -> None:
    """Another key file (same ids, other keys) or one lacking a used key id is a VaultError
    naming the ids; imports and rotation write nothing with it."""
    seed_codes(engine, vault, "p1", 2)
    create_pool(engine, "p2", actor="t")
    other = tmp_path / "other" / "robot.key"
    init_key_file(other)
    lacking = tmp_path / "lacking.key"
    ring = load_key_ring(key_file)
    write_key_ring(lacking, KeyRing("k9", {"k9": ring.keys["k1"]}, ring.fingerprint_key))
    source = tmp_path / "codes.txt"
    source.write_text("AAAA-1111-BBBB\nCCCC-2222-DDDD\n")
    with engine.connect() as conn:
        before = (conn.execute(select(func.count()).select_from(codes)).scalar_one(),
                  conn.execute(select(func.count()).select_from(batches)).scalar_one())
    with pytest.raises(VaultError, match=r"k1.* do not decrypt"):
        import_codes(engine, open_vault(other), "p2", source, actor="t")
    with pytest.raises(VaultError, match="key id\\(s\\) k1, which the key file lacks"):
        import_codes(engine, open_vault(lacking), "p2", source, actor="t")
    with pytest.raises(VaultError, match="lacks"):
        keys.rotate(lacking, engine, actor="t")
    assert sorted(load_key_ring(lacking).keys) == ["k9"]  # no key was added to it
    with engine.connect() as conn:
        after = (conn.execute(select(func.count()).select_from(codes)).scalar_one(),
                 conn.execute(select(func.count()).select_from(batches)).scalar_one())
    assert after == before
    assert codes_by_key(engine) == {"k1": 2}
    # The right file still works.
    assert import_codes(engine, vault, "p2", source, actor="t").imported == 2


def test_wrong_fingerprint_key_is_refused(engine: Engine, key_file: Path, vault: Vault,
                                          tmp_path: Path) -> None:
    """A key file with the right keys but another fingerprint key would break
    de-duplication: it is refused."""
    seed_codes(engine, vault, "p1", 1)
    ring = load_key_ring(key_file)
    changed = tmp_path / "fp.key"
    write_key_ring(changed, KeyRing(ring.current, ring.keys, b"\x01" * 32))
    with pytest.raises(VaultError, match="fingerprint key"):
        keys.check_keys(engine, open_vault(changed))


def test_daemon_refuses_to_start_with_a_wrong_key_file(tmp_path: Path) -> None:
    """The robot's start-up stops with a VaultError when the key file does not fit."""
    config = load_config(write_config(tmp_path, "keys-daemon"))
    engine = make_engine(config.database)
    upgrade(engine)
    seed_codes(engine, open_vault(config.key_file), "p1", 1)
    engine.dispose()
    config.key_file.unlink()
    init_key_file(config.key_file)
    robot = Robot(config)
    try:
        with pytest.raises(VaultError, match="do not decrypt"):
            robot.prepare()
    finally:
        if robot._lock is not None:
            robot._lock.close()
        if robot._engine is not None:
            robot._engine.dispose()


@pytest.fixture
def cli_app(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    """The CLI, talking to the test database instead of a configured one."""
    robot.cli._register()
    app = App(config_path=tmp_path / "robot.yaml")
    app._engine = engine
    app.zone = DEFAULT_ZONE  # no robot file: its default timezone
    monkeypatch.setattr(robot.cli, "App", lambda config_path: app)
    return app


def test_cli_rotate_and_status(cli_app: App, engine: Engine, key_file: Path,
                               vault: Vault) -> None:
    """`robot keys rotate` re-encrypts and retires; `keys status` then shows one key in use;
    `keys retire` refuses the current key."""
    seed_codes(engine, vault, "p1", 3)
    runner = CliRunner()
    result = runner.invoke(robot.cli.cli, ["keys", "rotate", "--key-file", str(key_file),
                                           "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"current": "k2", "new_key": "k2", "codes": 3,
                                         "secrets": 0, "retired": ["k1"], "left": {},
                                         "blocked": None}
    status = runner.invoke(robot.cli.cli, ["keys", "status", "--key-file", str(key_file),
                                           "--json"])
    assert status.exit_code == 0, status.output
    shown = json.loads(status.stdout)
    assert shown["current"] == "k2"
    assert [(k["key_id"], k["codes"]) for k in shown["keys"]] == [("k2", 3)]
    assert shown["rotation_unfinished"] is False
    kept = runner.invoke(robot.cli.cli, ["keys", "rotate", "--key-file", str(key_file),
                                         "--new-key", "--keep-old"])
    assert kept.exit_code == 0, kept.output
    assert "new current key: k3" in kept.stdout
    status = runner.invoke(robot.cli.cli, ["keys", "status", "--key-file", str(key_file),
                                           "--json"])
    assert json.loads(status.stdout)["rotation_unfinished"] is True
    refused = runner.invoke(robot.cli.cli, ["keys", "retire", "--key-file", str(key_file), "k3"])
    assert refused.exit_code != 0
    retired = runner.invoke(robot.cli.cli, ["keys", "retire", "--key-file", str(key_file), "k2"])
    assert retired.exit_code == 0, retired.output
    assert sorted(load_key_ring(key_file).keys) == ["k3"]


# --- a key file is never created over rows that need another one (issue 15, point 10) -----


def _two_keys_and_a_secret(engine: Engine, key_file: Path, vault: Vault) -> None:
    """2 codes under k1, 1 code and 1 shop secret under k2 (a rotation not finished)."""
    seed_codes(engine, vault, "p1", 2)
    keys.switch_key(key_file, engine, actor="t")
    rotated = open_vault(key_file)
    seed_codes(engine, rotated, "p1", 1)
    DbShopContext(engine, rotated, "tb").store_secret("session", "s3cr3t-token")


def test_keys_init_refuses_over_encrypted_rows(cli_app: App, engine: Engine, key_file: Path,
                                               vault: Vault) -> None:
    """With the key file gone and codes and secrets under k1 and k2 in the database,
    `keys init` refuses, naming the counts and key ids and saying to restore the backup;
    no key file is written."""
    _two_keys_and_a_secret(engine, key_file, vault)
    key_file.unlink()
    result = CliRunner().invoke(robot.cli.cli, ["keys", "init", "--key-file", str(key_file)])
    assert result.exit_code != 0
    assert isinstance(result.exception, VaultError)
    message = result.exception.message
    for part in ("2 code(s) under key k1", "1 code(s) under key k2",
                 "1 shop secret(s) under key k2", "restore the key file from its backup",
                 "nothing was written"):
        assert part in message, message
    assert not key_file.exists()


def test_keys_init_refuses_over_a_sealed_audit_log(cli_app: App, engine: Engine,
                                                   key_file: Path) -> None:
    """A database with no code but an audit log sealed with the lost key file is refused
    too: a new key file could never verify it."""
    create_pool(engine, "p1", actor="t")
    key_file.unlink()
    result = CliRunner().invoke(robot.cli.cli, ["keys", "init", "--key-file", str(key_file)])
    assert isinstance(result.exception, VaultError)
    assert "1 audit log entries sealed with its key file" in result.exception.message
    assert not key_file.exists()


def test_keys_init_on_an_empty_database_writes_a_key_file(cli_app: App, tmp_path: Path) -> None:
    """An empty database needs no old key: `keys init` writes a new key file (mode 0600)."""
    path = tmp_path / "fresh" / "robot.key"
    result = CliRunner().invoke(robot.cli.cli, ["keys", "init", "--key-file", str(path)])
    assert result.exit_code == 0, result.output
    assert path.stat().st_mode & 0o777 == 0o600


def test_keys_status_fails_with_a_wrong_key_file(cli_app: App, engine: Engine, vault: Vault,
                                                 tmp_path: Path) -> None:
    """`keys status` with a key file that does not decrypt the stored codes runs the start-up
    check and fails saying so (it used to look healthy); --json carries the check too."""
    seed_codes(engine, vault, "p1", 2)
    other = tmp_path / "other" / "robot.key"
    init_key_file(other)
    runner = CliRunner()
    result = runner.invoke(robot.cli.cli, ["keys", "status", "--key-file", str(other)])
    assert isinstance(result.exception, VaultError)
    assert "k1 in the key file do not decrypt the stored rows" in result.exception.message
    as_json = runner.invoke(robot.cli.cli, ["keys", "status", "--key-file", str(other), "--json"])
    assert isinstance(as_json.exception, VaultError)
    assert "do not decrypt" in json.loads(as_json.stdout)["key_check"]


def test_keys_status_with_the_key_file_missing_says_restore(cli_app: App, engine: Engine,
                                                            key_file: Path,
                                                            vault: Vault) -> None:
    """`keys status` with the key file missing over stored codes says to restore it from
    backup, not to create one."""
    seed_codes(engine, vault, "p1", 3)
    key_file.unlink()
    result = CliRunner().invoke(robot.cli.cli, ["keys", "status", "--key-file", str(key_file)])
    assert isinstance(result.exception, VaultError)
    assert "not found, and the database holds 3 code(s) under key k1" in result.exception.message
    assert "restore the key file from its backup" in result.exception.message


def test_keys_status_with_the_right_key_file_reports_the_check(cli_app: App, engine: Engine,
                                                               key_file: Path,
                                                               vault: Vault) -> None:
    """The right key file passes the start-up check: status exits 0 with key_check ok."""
    seed_codes(engine, vault, "p1", 1)
    result = CliRunner().invoke(robot.cli.cli, ["keys", "status", "--key-file", str(key_file),
                                                "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["key_check"] == "ok"


def _to_old_binding(engine: Engine, vault: Vault, key_file: Path) -> None:
    """Rewrite every code as a version before the row binding wrote it."""
    key = load_key_ring(key_file).keys["k1"]
    with engine.begin() as conn:
        for r in conn.execute(select(codes)).all():
            secret = vault.decrypt(r.key_id, r.ciphertext, code_id=r.id, pool_id=r.pool_id,
                                   fingerprint=r.fingerprint, aad_version=r.aad_version)
            nonce = os.urandom(NONCE_BYTES)
            blob = nonce + AESGCM(key).encrypt(
                nonce, secret.encode(), _aad(0, r.pool_id, bytes(r.fingerprint), "k1", AAD_V1))
            conn.execute(update(codes).where(codes.c.id == r.id)
                         .values(aad_version=None, ciphertext=blob))


def test_status_counts_old_binding_and_rotate_rebinds_without_a_new_key(
        cli_app: App, engine: Engine, key_file: Path, vault: Vault) -> None:
    """`keys status` shows how many codes are still on the old binding (an unfinished step);
    `keys rotate` re-binds them in its re-encryption batches without adding a key, after
    which every code decrypts only for its own id."""
    seed_codes(engine, vault, "p1", 5)
    _to_old_binding(engine, vault, key_file)
    runner = CliRunner()
    status = runner.invoke(robot.cli.cli, ["keys", "status", "--key-file", str(key_file),
                                           "--json"])
    assert status.exit_code == 0, status.output
    shown = json.loads(status.stdout)
    assert shown["codes_on_old_binding"] == 5
    assert shown["rotation_unfinished"] is True
    text_status = runner.invoke(robot.cli.cli, ["keys", "status", "--key-file", str(key_file)])
    assert "5 code(s) are on the old binding" in text_status.stderr
    result = runner.invoke(robot.cli.cli, ["keys", "rotate", "--key-file", str(key_file),
                                           "--json", "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["new_key"] is None
    assert json.loads(result.stdout)["codes"] == 5
    assert sorted(load_key_ring(key_file).keys) == ["k1"]
    with engine.connect() as conn:
        assert keys.old_binding(conn) == 0
        assert set(conn.execute(select(codes.c.aad_version)).scalars()) == {AAD_V2}
    assert len(all_plaintexts(engine, vault)) == 5
    shown = json.loads(runner.invoke(robot.cli.cli, ["keys", "status", "--key-file",
                                                     str(key_file), "--json"]).stdout)
    assert shown["codes_on_old_binding"] == 0
    assert shown["rotation_unfinished"] is False


def test_a_code_failing_authentication_is_skipped_by_rebinding(
        engine: Engine, key_file: Path, vault: Vault) -> None:
    """Re-binding leaves an altered row as it is (logged with its id, never re-encrypted
    into validity) and re-binds the others."""
    seed_codes(engine, vault, "p1", 3)
    _to_old_binding(engine, vault, key_file)
    with engine.begin() as conn:
        victim = int(conn.execute(select(func.min(codes.c.id))).scalar_one())
        fp = conn.execute(select(codes.c.fingerprint).where(codes.c.id == victim)).scalar()
        conn.execute(update(codes).where(codes.c.id == victim)
                     .values(fingerprint=bytes(fp)[::-1]))
    with capture_logs() as logs:
        assert keys.rebind_codes(engine, vault) == 2
    assert [e["code_id"] for e in logs if e["event"] == "code_rejected"] == [victim]
    with engine.connect() as conn:
        assert keys.old_binding(conn) == 1


def test_daemon_start_rebinds_codes_on_the_old_binding(tmp_path: Path) -> None:
    """The robot's start-up re-binds codes written before the row binding (as after an
    upgrade): afterwards none is left on the old binding and all still decrypt."""
    config = load_config(write_config(tmp_path, "keys-rebind"))
    engine = make_engine(config.database)
    upgrade(engine)
    vault = open_vault(config.key_file)
    seed_codes(engine, vault, "p1", 4)
    _to_old_binding(engine, vault, config.key_file)
    robot = Robot(config)
    try:
        with capture_logs() as logs:
            robot.prepare()
        with engine.connect() as conn:
            assert keys.old_binding(conn) == 0
        assert len(all_plaintexts(engine, vault)) == 4
        (done,) = [e for e in logs if e["event"] == "codes_rebind_finished"]
        assert (done["rebound"], done["old_binding_left"]) == (4, 0)
    finally:
        engine.dispose()
        if robot._lock is not None:
            robot._lock.close()
        if robot._engine is not None:
            robot._engine.dispose()
