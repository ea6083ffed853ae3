"""Bad-input catalogue (issue #8): configuration files a merchant gets wrong.

Each case breaks one thing in a working site (robot.yaml, shops/*.yaml, a key file and a
database holding a pool of codes) and runs the real command line. What must hold:

* ``robot run`` refuses to start, exit status 2, with exactly the lines that name the file,
  the shop and the field (every problem in one pass), no traceback, no secret;
* nothing changed: every table as it was (``snapshot``), no file created or touched;
* a SKU mapped to a pool that does not exist is caught by ``robot config check`` (the
  systemd unit's ExecStartPre) the same way, and named again in the robot's log at start.

The finer points of each validation live in tests/test_config.py; this is the catalogue's
proof that a bad file stops the robot cleanly before it writes anything.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from robot import pools as P
from robot.cli.common import EXIT_CONFIG
from robot.config import load_config
from robot.daemon import Robot
from robot.db import make_engine
from robot.migrate import upgrade
from robot.vault import open_vault
from tests.badinput.cli import run
from tests.badinput.snapshot import snapshot
from tests.test_daemon import write_config

SECRET = "tb-secret-not-for-print-5Kq"  # set for the case whose other variable is missing


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def add_shop(site: Path, name: str, text: str) -> None:
    (site / "shops" / name).write_text(text)


TAOBAO_SHOP = (
    "name: tb\nplatform: taobao\n"
    "items:\n  - sku_id: '1'\n    pool: p1\n"
    "platform_config:\n  app_key: '12345678'\n  app_secret: ${TB_SECRET_NOT_SET}\n"
    "  session: ${TB_SESSION}\n"
)

# (case, how to break the site, the exact error lines). Paths are relative to the site.
CASES: list[tuple[str, Callable[[Path], None], list[str]]] = [
    ("missing robot file", lambda s: (s / "robot.yaml").unlink(),
     ["error: {site}/robot.yaml: file not found (create it from config.example.yaml, or pass "
      "-c FILE)"]),
    ("bad YAML in a shop file", lambda s: replace(s / "shops" / "mem.yaml", "    quantity: 1\n",
                                                  "    quantity: [1\n"),
     ["error: shops/mem.yaml: line 7, column 16: YAML syntax error: expected ',' or ']', but "
      "got ':'"]),
    ("unknown keys", lambda s: (replace(s / "robot.yaml", "poll_interval:", "pol_interval:"),
                                replace(s / "shops" / "mem.yaml", "quantity: 1", "quantity: 1\n"
                                        "    colour: red")),
     ["error: robot.yaml: defaults.pol_interval: unknown key (did you mean 'poll_interval'?)",
      "error: shops/mem.yaml: shop 'mem': items[0].colour: unknown key; expected one of: "
      "item_id, sku_id, outer_id, pools, suppliers, account, price, goods_name, face_value"]),
    ("wrong types", lambda s: (replace(s / "shops" / "mem.yaml", "quantity: 1", "quantity: two"),
                               replace(s / "robot.yaml", "backoff_initial: 0.01",
                                       "backoff_initial: soon")),
     ["error: robot.yaml: defaults.backoff_initial: expected seconds or a duration like '30s', "
      "'5m', '1h'",
      "error: shops/mem.yaml: shop 'mem': items[0].quantity: Input should be a valid integer, "
      "unable to parse string as an integer"]),
    ("missing secrets", lambda s: add_shop(s, "tb.yaml", TAOBAO_SHOP),
     ["error: shops/tb.yaml: shop 'tb': platform_config.app_secret: environment variable "
      "TB_SECRET_NOT_SET is not set"]),
    ("a delivery API token too short to resist guessing",
     lambda s: (s / "shops" / "mem.yaml").write_text(
         (s / "shops" / "mem.yaml").read_text() + "delivery_api_token: x\n"),
     ["error: shops/mem.yaml: shop 'mem': delivery_api_token: too short: use at least 32 "
      "random characters, e.g. make one with python3 -c 'import secrets; "
      "print(secrets.token_urlsafe(32))'"]),
    ("trusted proxies that are no CIDRs",
     lambda s: (s / "robot.yaml").write_text((s / "robot.yaml").read_text() + (
         "http: {trusted_proxies: [10.0.0.1/8, nginx-host, 0.0.0.0/0, '::1']}\n")),
     ["error: robot.yaml: http.trusted_proxies: [0]: '10.0.0.1/8' is not a CIDR such as "
      "10.0.0.0/8 or ::1/128 (did you mean 10.0.0.0/8?); [1]: 'nginx-host' is not a CIDR such "
      "as 10.0.0.0/8 or ::1/128; [2]: 0.0.0.0/0 would let every address on the internet say "
      "who the client is; name your proxies"]),
    ("two shops with one name", lambda s: add_shop(s, "copy.yaml", (s / "shops" / "mem.yaml")
                                                   .read_text()),
     ["error: shops/mem.yaml: shop 'mem': name: duplicate shop name, also used by "
      "shops/copy.yaml"]),
]


def site_state(site: Path) -> dict[str, str]:
    """Every file under the site and its content hash: no file created, removed or changed."""
    return {str(p.relative_to(site)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(site.rglob("*")) if p.is_file()}


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working site whose database already holds a pool of codes."""
    root = tmp_path / "site"
    write_config(root, f"cfg-{uuid.uuid4().hex}")
    monkeypatch.chdir(root)
    monkeypatch.setenv("TB_SESSION", SECRET)
    monkeypatch.delenv("TB_SECRET_NOT_SET", raising=False)
    config = load_config(root / "robot.yaml")
    engine = make_engine(config.database)
    upgrade(engine)
    P.create_pool(engine, "p1", actor="test")
    codes = root / "codes.txt"
    codes.write_text("TEST-CFG-0001\nTEST-CFG-0002\n")
    P.import_codes(engine, open_vault(config.key_file), "p1", codes, actor="test")
    engine.dispose()
    return root


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_bad_config_stops_the_robot_before_it_writes(
        case: str, site: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`robot run` on a broken config: the exact lines, exit 2, nothing changed anywhere."""
    _, breaks, expected = next(c for c in CASES if c[0] == case)
    engine = make_engine(f"sqlite:///{site / 'robot.db'}")
    tables = snapshot(engine)
    breaks(site)
    files = site_state(site)
    status, out, err = run(monkeypatch, capsys, "-c", str(site / "robot.yaml"), "run")
    assert (status, out) == (EXIT_CONFIG, "")
    assert err.splitlines() == [line.format(site=site) for line in expected]
    assert "Traceback" not in err and SECRET not in err
    assert site_state(site) == files
    assert snapshot(engine) == tables
    engine.dispose()


def test_sku_mapped_to_a_missing_pool(site: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`config check` names the file, shop, field and the fix (exit 2, nothing changed); the
    robot names it in its log at start too (its orders wait for that pool, the rest ship)."""
    replace(site / "shops" / "mem.yaml", "pool: p1", "pool: p2")
    engine = make_engine(f"sqlite:///{site / 'robot.db'}")
    tables = snapshot(engine)
    problem = ("shops/mem.yaml: shop 'mem': items[0].pool: pool 'p2' does not exist; create it "
               "with: robot pools create p2")
    status, out, err = run(monkeypatch, capsys, "-c", str(site / "robot.yaml"), "config",
                           "check")
    assert (status, out, err) == (EXIT_CONFIG, "", f"error: {problem}\n")
    assert snapshot(engine) == tables
    engine.dispose()

    robot = Robot(load_config(site / "robot.yaml"))
    with capture_logs() as logs:
        robot.prepare()
    robot.release()
    assert [(e["event"], e["problem"]) for e in logs if e["event"] == "pool_missing"] \
        == [("pool_missing", problem)]
