"""The configuration: typed, loud (all problems at once, file/shop/field named), secret-safe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict, model_validator
from sqlalchemy import insert

import robot.cli
import robot.config
from connectors.base import ENTRY_POINT_GROUP
from connectors.config import PlatformConfig, Secret
from robot.clock import utcnow
from robot.config import (
    MASK,
    PoolShare,
    RobotConfig,
    ShopConfig,
    SkuMapping,
    check_pools,
    effective_dict,
    load_config,
    parse_duration,
)
from robot.db import make_engine
from robot.errors import ConfigError, UserError
from robot.pools import create_pool
from robot.registry import Discovery, LoadProblem, discover, load_factories
from robot.schema import pools
from robot.vault import init_key_file, open_vault
from tests.factories import seed_codes

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-APP-value-9f8e7d"
FILE_SECRET = "sess-FILE-value-1a2b3c"
DB_PASSWORD = "pg-PASS-value-4d5e6f"
ALERT_SECRET = "alert-TOKEN-value-7a8b9c"

robot.cli._register()


class NestedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = 3


class TestPlatConfig(PlatformConfig):
    """A connector config model like a real connector's: secrets and a nested section."""

    __test__ = False  # not a test class, despite the name

    app_key: str
    app_secret: Secret
    session: Secret | None = None
    options: NestedOptions = NestedOptions()
    use_tmc: bool = False  # as the Taobao example sets it

    @model_validator(mode="after")
    def _not_bad(self) -> TestPlatConfig:
        if self.app_key == "bad":
            raise ValueError("app_key 'bad' is refused by the platform")
        return self


class TestPlatFactory:
    """A minimal connector factory; the loader only needs its platform and config model."""

    __test__ = False

    platform: ClassVar[str] = "testplat"
    config_model: ClassVar[type[BaseModel]] = TestPlatConfig

    def create(self, config: BaseModel, context: Any) -> Any:
        raise NotImplementedError


REGISTRY = {"testplat": TestPlatFactory()}

ROBOT_YAML = """\
database: sqlite:///robot.db
key_file: robot.key
shops: shops/*.yaml
http: {listen: "0.0.0.0:9090", public_url: "https://robot.example.com/"}
alerts: {targets: ["${TEST_ALERT_URL}"]}
defaults:
  poll_interval: 5m
  max_attempts: 4
  unmapped: hold
  memo_template: "[r] {masked_codes} {pickup_url}"
log: {level: DEBUG, format: console}
"""

SHOP_YAML = """\
name: tb-main
platform: testplat
poll_interval: 30s
unmapped: ignore
items:
  - sku_id: 4567
    pool: youku-vip-month
    quantity: 2
  - outer_id: BUNDLE-A
    pools:
      - {pool: iqiyi-month, quantity: 1}
      - {pool: game-card-50, quantity: 2}
platform_config:
  app_key: 12345678
  app_secret: ${TEST_APP_SECRET}
  session: file:secrets/session.txt
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_APP_SECRET", SECRET)
    monkeypatch.setenv("TEST_ALERT_URL", f"dingtalk://{ALERT_SECRET}/")
    monkeypatch.delenv("TEST_UNSET_VAR", raising=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A good robot file with one good shop; returns the robot file's path."""
    write(tmp_path / "shops" / "secrets" / "session.txt", FILE_SECRET + "\n")
    write(tmp_path / "shops" / "tb.yaml", SHOP_YAML)
    return write(tmp_path / "robot.yaml", ROBOT_YAML)


def problems_of(robot_file: Path, registry: Any = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(robot_file, registry=REGISTRY if registry is None else registry)
    return info.value.problems


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# --------------------------------------------------------------------------- good configs


def test_good_config_loads_with_effective_values(site: Path) -> None:
    """A good config yields resolved paths, effective shop settings and validated mappings."""
    cfg = load_config(site, registry=REGISTRY)
    base = site.parent
    assert cfg.path == site
    assert cfg.database == f"sqlite:///{base / 'robot.db'}"
    assert cfg.key_file == base / "robot.key"
    assert cfg.http.listen == "0.0.0.0:9090"
    assert cfg.http.public_url == "https://robot.example.com"
    assert cfg.defaults.poll_interval == 300.0
    assert cfg.defaults.max_attempts == 4
    assert cfg.defaults.backoff_initial == 5.0
    assert cfg.log.level == "debug"
    assert cfg.log.format == "console"
    assert [t.get_secret_value() for t in cfg.alerts.targets] == [f"dingtalk://{ALERT_SECRET}/"]
    (shop,) = cfg.shops
    assert shop.name == "tb-main"
    assert shop.file == base / "shops" / "tb.yaml"
    assert shop.enabled is True
    assert shop.poll_interval_seconds == 30.0
    assert shop.unmapped == "ignore"
    assert shop.memo_template == "[r] {masked_codes} {pickup_url}"  # from defaults
    assert shop.item_desc == "{title} x{quantity}"  # built-in default
    assert shop.items == [
        SkuMapping(sku_id="4567", pools=[PoolShare(pool="youku-vip-month", quantity=2)]),
        SkuMapping(
            outer_id="BUNDLE-A",
            pools=[PoolShare(pool="iqiyi-month"), PoolShare(pool="game-card-50", quantity=2)],
        ),
    ]
    assert shop.items[0].key == ("sku_id", "4567")
    pc = shop.platform_config
    assert isinstance(pc, TestPlatConfig)
    assert pc.app_key == "12345678"
    assert pc.app_secret.get_secret_value() == SECRET
    assert pc.session is not None
    assert pc.session.get_secret_value() == FILE_SECRET  # relative to the shop file, newline gone
    assert cfg.shop("tb-main") is shop


def test_good_config_round_trips(site: Path) -> None:
    """Loading twice gives equal configs, and the effective view re-validates into equal models."""
    first = load_config(site, registry=REGISTRY)
    second = load_config(site, registry=REGISTRY)
    assert first == second
    shown = effective_dict(first)
    shop = shown["shops"][0]
    items = [SkuMapping.model_validate(item) for item in shop["items"]]
    assert items == first.shops[0].items
    assert shown["defaults"] == first.defaults.model_dump()
    assert shown["http"] == first.http.model_dump()


def test_shop_defaults_apply_when_not_overridden(tmp_path: Path) -> None:
    """A shop that overrides nothing takes every setting from the robot file's defaults."""
    write(tmp_path / "robot.yaml", ROBOT_YAML)
    write(
        tmp_path / "shops" / "plain.yaml",
        'name: plain\nplatform: testplat\nplatform_config: {app_key: k, app_secret: "x"}\n',
    )
    (shop,) = load_config(tmp_path / "robot.yaml", registry=REGISTRY).shops
    assert shop.poll_interval_seconds == 300.0
    assert shop.unmapped == "hold"
    assert shop.memo_template == "[r] {masked_codes} {pickup_url}"
    assert shop.items == []


def test_minimal_robot_file_uses_builtin_defaults(tmp_path: Path) -> None:
    """A robot file with just a database gets default key file, shops glob, http and log."""
    robot_file = write(tmp_path / "robot.yaml", "database: sqlite:///data/r.db\n")
    cfg = load_config(robot_file, registry=REGISTRY)
    assert cfg.database == f"sqlite:///{tmp_path / 'data' / 'r.db'}"
    assert cfg.key_file == tmp_path / "robot.key"
    assert cfg.shops == []
    assert cfg.http.public_url == "http://127.0.0.1:8080"
    assert cfg.defaults.unmapped == "hold"
    assert cfg.log.format == "json"


def test_example_files_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped examples are valid once their env vars and secret files exist."""
    shutil.copy(REPO / "config.example.yaml", tmp_path / "robot.yaml")
    (tmp_path / "shops").mkdir()
    shop_file = tmp_path / "shops" / "example-taobao.yaml"
    shutil.copy(REPO / "shops" / "example-taobao.yaml", shop_file)
    edit(shop_file, "platform: taobao", "platform: testplat")
    edit(shop_file, "file:/etc/robot/taobao.session", "file:taobao.session")
    write(tmp_path / "shops" / "taobao.session", FILE_SECRET)
    monkeypatch.setenv("TAOBAO_APP_SECRET", SECRET)
    monkeypatch.setenv("ROBOT_ALERT_URL", f"dingtalk://{ALERT_SECRET}/")
    cfg = load_config(tmp_path / "robot.yaml", registry=REGISTRY)
    (shop,) = cfg.shops
    assert shop.name == "taobao-main"
    assert [m.key for m in shop.items] == [
        ("sku_id", "4567890123"),
        ("item_id", "612345678901"),
        ("outer_id", "BUNDLE-A"),
    ]
    assert isinstance(shop.platform_config, TestPlatConfig)
    assert shop.platform_config.app_secret.get_secret_value() == SECRET


def test_example_shop_names_taobao() -> None:
    """The example shop file is written for the Taobao connector."""
    data = yaml.safe_load((REPO / "shops" / "example-taobao.yaml").read_text(encoding="utf-8"))
    assert data["platform"] == "taobao"
    assert data["platform_config"]["app_secret"] == "${TAOBAO_APP_SECRET}"


def test_empty_shops_glob_means_zero_shops(tmp_path: Path) -> None:
    """A glob that matches nothing is fine: the robot has no shops yet."""
    robot_file = write(tmp_path / "robot.yaml", "database: sqlite:///r.db\nshops: nowhere/*.yaml\n")
    assert load_config(robot_file, registry=REGISTRY).shops == []


def test_shops_list_of_files_and_globs(site: Path) -> None:
    """`shops` may be a list mixing files and globs; a file matched twice loads once."""
    write(site.parent / "extra" / "b.yaml", SHOP_YAML.replace("name: tb-main", "name: tb-b"))
    edit(site, "shops: shops/*.yaml", "shops: [shops/tb.yaml, 'shops/*.yaml', extra/b.yaml]")
    edit(site.parent / "extra" / "b.yaml", "file:secrets/session.txt", "literal-session")
    cfg = load_config(site, registry=REGISTRY)
    assert [s.name for s in cfg.shops] == ["tb-main", "tb-b"]


# --------------------------------------------------------------------------- bad files


def test_missing_robot_file(tmp_path: Path) -> None:
    """A robot file that does not exist is a config error naming it."""
    problems = problems_of(tmp_path / "nope.yaml")
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'nope.yaml'}: file not found")


def test_yaml_syntax_error_names_line_and_column(site: Path) -> None:
    """A YAML syntax error names the file, line and column, and never quotes the line."""
    write(site.parent / "shops" / "tb.yaml", f"name: tb-main\napp_secret: {SECRET}\nbad: [1, 2\n")
    problems = problems_of(site)
    assert len(problems) == 1
    assert problems[0].startswith("shops/tb.yaml: line 4, column 1: YAML syntax error: ")
    assert SECRET not in problems[0]


def test_duplicate_yaml_key_is_an_error(site: Path) -> None:
    """A key written twice in one mapping is reported instead of silently keeping the last."""
    edit(site, "  max_attempts: 4\n", "  max_attempts: 4\n  max_attempts: 5\n")
    assert problems_of(site) == ["robot.yaml: line 9, column 3: duplicate key 'max_attempts'"]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"])
def test_top_level_not_a_mapping(site: Path, text: str) -> None:
    """A file whose top level is not a mapping is reported for that file."""
    write(site.parent / "shops" / "tb.yaml", text)
    (problem,) = problems_of(site)
    assert problem.startswith("shops/tb.yaml: expected a mapping of keys at the top level, got a ")


def test_robot_file_not_a_mapping(tmp_path: Path) -> None:
    """The robot file itself must be a mapping too."""
    robot_file = write(tmp_path / "robot.yaml", "- database\n")
    assert problems_of(robot_file) == [
        "robot.yaml: expected a mapping of keys at the top level, got a list"
    ]


def test_empty_shop_file_matched_by_glob(site: Path) -> None:
    """An empty shop file picked up by the glob is reported, not skipped."""
    write(site.parent / "shops" / "empty.yaml", "# nothing yet\n")
    (problem,) = problems_of(site)
    assert problem.startswith("shops/empty.yaml: file is empty")


def test_listed_shop_file_that_does_not_exist(site: Path) -> None:
    """A shop file named explicitly (not a glob) must exist."""
    edit(site, "shops: shops/*.yaml", "shops: [shops/tb.yaml, shops/gone.yaml]")
    assert problems_of(site) == ["robot.yaml: shops[1]: file shops/gone.yaml does not exist"]


def test_unknown_key_with_did_you_mean(site: Path) -> None:
    """A misspelt key in the robot file is named with the closest known key."""
    edit(site, "  poll_interval: 5m", "  poll_intervall: 5m")
    assert problems_of(site) == [
        "robot.yaml: defaults.poll_intervall: unknown key (did you mean 'poll_interval'?)"
    ]


def test_unknown_key_without_close_match_lists_keys(site: Path) -> None:
    """An unknown key with no close match lists the keys that are allowed there."""
    edit(site, "log: {level: DEBUG, format: console}", "log: {level: DEBUG, zzz: 1}")
    assert problems_of(site) == ["robot.yaml: log.zzz: unknown key; expected one of: level, format"]


def test_unknown_keys_in_shop_and_platform_config(site: Path) -> None:
    """Unknown keys in a shop file and inside platform_config (nested too) get suggestions."""
    shop = site.parent / "shops" / "tb.yaml"
    edit(shop, "unmapped: ignore", "unmaped: ignore")
    edit(shop, "  app_key: 12345678", "  app_kee: 12345678\n  options: {retires: 2}")
    assert sorted(problems_of(site)) == sorted(
        [
            "shops/tb.yaml: shop 'tb-main': unmaped: unknown key (did you mean 'unmapped'?)",
            "shops/tb.yaml: shop 'tb-main': platform_config.app_kee: unknown key "
            "(did you mean 'app_key'?)",
            "shops/tb.yaml: shop 'tb-main': platform_config.options.retires: unknown key "
            "(did you mean 'retries'?)",
            "shops/tb.yaml: shop 'tb-main': platform_config.app_key: Field required",
        ]
    )


def test_platform_config_model_that_ignores_extras_still_reports_typos(site: Path) -> None:
    """A connector model that would silently ignore unknown keys still gets them reported."""

    class LaxConfig(BaseModel):
        app_key: str = ""

    class LaxFactory(TestPlatFactory):
        config_model: ClassVar[type[BaseModel]] = LaxConfig

    shop = site.parent / "shops" / "tb.yaml"
    edit(shop, "  app_secret: ${TEST_APP_SECRET}\n  session: file:secrets/session.txt\n", "")
    edit(shop, "  app_key: 12345678", "  app_kye: '12345678'")
    assert problems_of(site, {"testplat": LaxFactory()}) == [
        "shops/tb.yaml: shop 'tb-main': platform_config.app_kye: unknown key "
        "(did you mean 'app_key'?)"
    ]


def test_connector_model_validator_message(site: Path) -> None:
    """A connector's own whole-model check is reported under platform_config, without noise."""
    edit(site.parent / "shops" / "tb.yaml", "  app_key: 12345678", "  app_key: bad")
    assert problems_of(site) == [
        "shops/tb.yaml: shop 'tb-main': platform_config: app_key 'bad' is refused by the platform"
    ]


def test_wrong_types(site: Path) -> None:
    """Wrong value types name the field and what was expected."""
    edit(site, "max_attempts: 4", "max_attempts: lots")
    edit(site.parent / "shops" / "tb.yaml", "quantity: 2", "quantity: two")
    assert problems_of(site) == [
        "robot.yaml: defaults.max_attempts: Input should be a valid integer, "
        "unable to parse string as an integer",
        "shops/tb.yaml: shop 'tb-main': items[0].quantity: Input should be a valid integer, "
        "unable to parse string as an integer",
    ]


def test_missing_required_fields(site: Path) -> None:
    """Missing required fields are named: the pool of a mapping, the shop's platform."""
    shop = site.parent / "shops" / "tb.yaml"
    edit(shop, "    pool: youku-vip-month\n    quantity: 2\n", "")
    edit(shop, "platform: testplat\n", "")
    assert problems_of(site) == [
        "shops/tb.yaml: shop 'tb-main': platform: Field required",
        "shops/tb.yaml: shop 'tb-main': items[0].pool: Field required",
    ]


def test_shorthand_errors_point_at_written_keys(site: Path) -> None:
    """Errors in a `pool:` shorthand name `items[i].quantity`, not an invented `pools[0]`."""
    edit(site.parent / "shops" / "tb.yaml", "quantity: 2", "quantity: 0")
    assert problems_of(site) == [
        "shops/tb.yaml: shop 'tb-main': items[0].quantity: Input should be greater than or "
        "equal to 1"
    ]


def test_bad_enum_values(site: Path) -> None:
    """Values outside an enumeration list the allowed ones."""
    edit(site.parent / "shops" / "tb.yaml", "unmapped: ignore", "unmapped: keep")
    edit(site, "format: console", "format: jsn")
    assert problems_of(site) == [
        "robot.yaml: log.format: Input should be 'json' or 'console'",
        "shops/tb.yaml: shop 'tb-main': unmapped: Input should be 'hold' or 'ignore'",
    ]


def test_bad_shop_name(site: Path) -> None:
    """Shop names are lowercase identifiers."""
    edit(site.parent / "shops" / "tb.yaml", "name: tb-main", "name: TB Main")
    (problem,) = problems_of(site)
    assert problem.startswith("shops/tb.yaml: shop 'TB Main': name: must be 1-64 characters")


def test_duplicate_shop_names_name_both_files(site: Path) -> None:
    """Two shop files with one name: the second is reported, naming the first."""
    shutil.copy(site.parent / "shops" / "tb.yaml", site.parent / "shops" / "tb2.yaml")
    assert problems_of(site) == [
        "shops/tb2.yaml: shop 'tb-main': name: duplicate shop name, also used by shops/tb.yaml"
    ]


def test_unknown_platform_with_did_you_mean(site: Path) -> None:
    """An unregistered platform is named with the closest registered one."""
    edit(site.parent / "shops" / "tb.yaml", "platform: testplat", "platform: testpalt")
    assert problems_of(site) == [
        "shops/tb.yaml: shop 'tb-main': platform: unknown platform 'testpalt' "
        "(did you mean 'testplat'?); registered: testplat"
    ]


def test_platform_whose_connector_failed_to_load(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the installed registry, a shop on a broken connector says the connector failed."""
    problem = LoadProblem("testplat", "x.y:Factory", "ImportError: no module named x")
    monkeypatch.setattr(robot.config, "discover", lambda: Discovery({}, (problem,)))
    with pytest.raises(ConfigError) as info:
        load_config(site)
    assert info.value.problems == [
        "shops/tb.yaml: shop 'tb-main': platform: the 'testplat' connector failed to load: "
        "ImportError: no module named x"
    ]


def test_same_sku_mapped_twice(site: Path) -> None:
    """Two mappings for one SKU key in a shop are reported, naming both entries."""
    edit(site.parent / "shops" / "tb.yaml", "outer_id: BUNDLE-A", "sku_id: '4567'")
    assert problems_of(site) == [
        "shops/tb.yaml: shop 'tb-main': items[1].sku_id: sku_id '4567' is already mapped "
        "by items[0]"
    ]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ("", "items[0]: give exactly one of item_id, sku_id, outer_id"),
        ("    item_id: 1\n    outer_id: X\n", "items[0]: give exactly one of item_id, sku_id, "
         "outer_id"),
    ],
)
def test_exactly_one_sku_key(site: Path, ids: str, message: str) -> None:
    """Each mapping names exactly one of item_id / sku_id / outer_id."""
    edit(site.parent / "shops" / "tb.yaml", "  - sku_id: 4567\n    pool:", f"  -\n{ids}    pool:")
    assert problems_of(site) == [f"shops/tb.yaml: shop 'tb-main': {message}"]


def test_pool_and_pools_together(site: Path) -> None:
    """A mapping may not give both the shorthand and a bundle."""
    shop = site.parent / "shops" / "tb.yaml"
    edit(shop, "  - outer_id: BUNDLE-A\n", "  - outer_id: BUNDLE-A\n    pool: x\n")
    assert problems_of(site) == [
        "shops/tb.yaml: shop 'tb-main': items[1]: give either 'pool' (+ 'quantity') or "
        "'pools' (a bundle), not both"
    ]


def test_templates_reject_unknown_placeholders(site: Path) -> None:
    """A memo template with an unknown placeholder is caught at load, not at first shipment."""
    edit(site, '"[r] {masked_codes} {pickup_url}"', '"[r] {codes} {pickup_url}"')
    assert problems_of(site) == [
        "robot.yaml: defaults.memo_template: unknown placeholder {codes}; "
        "use {masked_codes}, {order_id}, {pickup_url}"
    ]


def test_backoff_max_below_initial(site: Path) -> None:
    """backoff_max must not be below backoff_initial."""
    edit(site, "  max_attempts: 4\n", "  max_attempts: 4\n  backoff_initial: 2h\n")
    assert problems_of(site) == [
        "robot.yaml: defaults: backoff_max must not be less than backoff_initial"
    ]


def test_every_problem_in_one_pass(site: Path) -> None:
    """Problems in the robot file and in several shop files all come back together."""
    edit(site, "  poll_interval: 5m", "  poll_interval: soon")
    edit(site.parent / "shops" / "tb.yaml", "unmapped: ignore", "unmapped: 3")
    write(site.parent / "shops" / "other.yaml", "name: other\nplatform: nope\n")
    write(site.parent / "shops" / "broken.yaml", "name: [\n")
    problems = problems_of(site)
    assert [p.split(":")[0] for p in problems] == [
        "robot.yaml",
        "shops/broken.yaml",
        "shops/other.yaml",
        "shops/tb.yaml",
    ]
    assert problems[0] == (
        "robot.yaml: defaults.poll_interval: expected seconds or a duration like '30s', '5m', '1h'"
    )


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(60, 60.0), (1.5, 1.5), ("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0),
     ("1h30m", 5400.0), ("500ms", 0.5)],
)
def test_durations(value: object, seconds: float) -> None:
    """Durations accept numbers and strings with s/m/h units."""
    assert parse_duration(value) == seconds


# --------------------------------------------------------------------------- secrets


def test_missing_env_var_names_the_variable(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset ${VAR} is reported by name, for the field that uses it."""
    monkeypatch.delenv("TEST_APP_SECRET")
    assert problems_of(site) == [
        "shops/tb.yaml: shop 'tb-main': platform_config.app_secret: "
        "environment variable TEST_APP_SECRET is not set"
    ]


def test_unreadable_secret_file_names_the_file(site: Path) -> None:
    """A file: secret that cannot be read is reported by path."""
    (site.parent / "shops" / "secrets" / "session.txt").unlink()
    (problem,) = problems_of(site)
    missing = site.parent / "shops" / "secrets" / "session.txt"
    assert problem == (
        f"shops/tb.yaml: shop 'tb-main': platform_config.session: cannot read file {missing}: "
        "No such file or directory"
    )


def test_secret_file_absolute_path(site: Path, tmp_path: Path) -> None:
    """file: with an absolute path reads that file; only the trailing newline is stripped."""
    secret_file = tmp_path / "elsewhere" / "s"
    secret_file.parent.mkdir()
    secret_file.write_text(f"  {FILE_SECRET}\n\n", encoding="utf-8")
    edit(site.parent / "shops" / "tb.yaml", "file:secrets/session.txt", f"file:{secret_file}")
    (shop,) = load_config(site, registry=REGISTRY).shops
    assert isinstance(shop.platform_config, TestPlatConfig)
    assert shop.platform_config.session is not None
    assert shop.platform_config.session.get_secret_value() == f"  {FILE_SECRET}"


def test_secret_outside_a_config_file_needs_an_absolute_path() -> None:
    """A connector model validated without a config file refuses relative file: paths."""
    with pytest.raises(ValueError, match="relative path needs a config file"):
        TestPlatConfig.model_validate({"app_key": "k", "app_secret": "file:rel/path"})
    direct = TestPlatConfig.model_validate({"app_key": "k", "app_secret": "${TEST_APP_SECRET}"})
    assert direct.app_secret.get_secret_value() == SECRET


def test_secrets_never_printed(site: Path) -> None:
    """str, repr and effective_dict of a loaded config never contain a secret value."""
    edit(site, "database: sqlite:///robot.db", f"database: postgresql://u:{DB_PASSWORD}@db/r")
    cfg = load_config(site, registry=REGISTRY)
    shown = json.dumps(effective_dict(cfg))
    for text in (str(cfg), repr(cfg), repr(cfg.shops[0]), str(cfg.shops[0].platform_config), shown):
        for secret in (SECRET, FILE_SECRET, DB_PASSWORD, ALERT_SECRET):
            assert secret not in text
    assert cfg.database == f"postgresql://u:{DB_PASSWORD}@db/r"  # still usable by the engine
    data = effective_dict(cfg)
    assert data["database"] == f"postgresql://u:{MASK}@db/r"
    assert data["alerts"]["targets"] == [MASK]
    assert data["shops"][0]["platform_config"]["app_secret"] == MASK
    assert data["shops"][0]["platform_config"]["session"] == MASK
    assert data["shops"][0]["platform_config"]["app_key"] == "12345678"


def test_secrets_absent_from_error_messages(site: Path) -> None:
    """Validation errors around secret fields never quote the secret."""
    shop = site.parent / "shops" / "tb.yaml"
    edit(shop, "  app_key: 12345678", f"  app_key: [{SECRET}]")
    edit(shop, "  app_secret: ${TEST_APP_SECRET}", f"  app_secret: {{nested: {SECRET}}}")
    edit(site, '"${TEST_ALERT_URL}"', f"[{ALERT_SECRET}]")
    edit(site, "database: sqlite:///robot.db", f"database: nosuch://u:{DB_PASSWORD}@h/d")
    problems = problems_of(site)
    assert len(problems) == 4
    for secret in (SECRET, ALERT_SECRET, DB_PASSWORD):
        assert secret not in "\n".join(problems)
    assert (
        "robot.yaml: alerts.targets[0]: expected a string (a literal, ${ENV_VAR} or file:/path)"
        in problems
    )


def test_database_env_substitution(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """${VAR} works in the database URL, as the whole value or inside it."""
    monkeypatch.setenv("TEST_DB_URL", "sqlite:///from-env.db")
    edit(site, "database: sqlite:///robot.db", "database: ${TEST_DB_URL}")
    expected = f"sqlite:///{site.parent / 'from-env.db'}"
    assert load_config(site, registry=REGISTRY).database == expected
    monkeypatch.setenv("TEST_DB_PASS", DB_PASSWORD)
    edit(site, "database: ${TEST_DB_URL}", "database: postgresql://u:${TEST_DB_PASS}@db/r")
    assert load_config(site, registry=REGISTRY).database == f"postgresql://u:{DB_PASSWORD}@db/r"


def test_database_missing_env_var(site: Path) -> None:
    """An unset variable in the database URL is named."""
    edit(site, "database: sqlite:///robot.db", "database: ${TEST_UNSET_VAR}")
    assert problems_of(site) == [
        "robot.yaml: database: environment variable TEST_UNSET_VAR is not set"
    ]


def test_absolute_sqlite_path_kept(site: Path, tmp_path: Path) -> None:
    """An absolute SQLite path is used as is."""
    target = tmp_path / "abs" / "x.db"
    edit(site, "database: sqlite:///robot.db", f"database: sqlite:///{target}")
    assert load_config(site, registry=REGISTRY).database == f"sqlite:///{target}"


# --------------------------------------------------------------------------- lookups and pools


def test_shop_lookup_suggests(site: Path) -> None:
    """An unknown shop name raises UserError with a suggestion."""
    cfg = load_config(site, registry=REGISTRY)
    with pytest.raises(UserError, match=r"no shop named 'tb-mian' \(did you mean 'tb-main'\?\)"):
        cfg.shop("tb-mian")


def test_check_pools(site: Path) -> None:
    """Mappings naming missing pools are reported with a suggestion and the create command."""
    cfg = load_config(site, registry=REGISTRY)
    assert check_pools(cfg, {"youku-vip-month", "iqiyi-month", "game-card-50"}) == []
    assert check_pools(cfg, {"youku-vip-monthly", "iqiyi-month"}) == [
        "shops/tb.yaml: shop 'tb-main': items[0].pool: pool 'youku-vip-month' does not exist "
        "(did you mean 'youku-vip-monthly'?); create it with: robot pools create youku-vip-month",
        "shops/tb.yaml: shop 'tb-main': items[1].pools[1].pool: pool 'game-card-50' does not "
        "exist; create it with: robot pools create game-card-50",
    ]


def test_models_are_frozen_and_strict() -> None:
    """Config models refuse unknown fields and assignment."""
    share = PoolShare(pool="p")
    with pytest.raises(ValueError, match="frozen"):
        share.pool = "q"
    with pytest.raises(ValueError, match="Extra inputs"):
        PoolShare.model_validate({"pool": "p", "qty": 2})
    shop = ShopConfig(name="s", platform="testplat", file=Path("s.yaml"))
    assert shop.poll_interval_seconds == 60.0
    bare = RobotConfig(path=Path("r.yaml"), database="sqlite://", key_file=Path("k"))
    assert bare.shops == []
    assert bare.alerts.targets == []


# --------------------------------------------------------------------------- registry


def _plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path / "plugins" / "good_plugin.py",
        """\
        from pydantic import BaseModel

        class Cfg(BaseModel):
            token: str = ""

        class GoodFactory:
            platform = "goodplat"
            config_model = Cfg

            def create(self, config, context):
                raise NotImplementedError

        class NotAFactory:
            pass
        """,
    )
    write(tmp_path / "plugins" / "broken_plugin.py", "import module_that_does_not_exist_zz\n")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))


def test_discover_reports_broken_connectors_without_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connector that fails to import or is not a factory is reported; the others load."""
    _plugin_dir(tmp_path, monkeypatch)
    eps = [
        EntryPoint("broken", "broken_plugin:Factory", ENTRY_POINT_GROUP),
        EntryPoint("goodplat", "good_plugin:GoodFactory", ENTRY_POINT_GROUP),
        EntryPoint("weird", "good_plugin:NotAFactory", ENTRY_POINT_GROUP),
    ]
    found = discover(eps)
    assert list(found.factories) == ["goodplat"]
    assert found.factories["goodplat"].config_model.__name__ == "Cfg"
    assert [(p.name, p.error.split(":")[0]) for p in found.problems] == [
        ("broken", "ModuleNotFoundError"),
        ("weird", "TypeError"),
    ]
    assert "module_that_does_not_exist_zz" in str(found.problems[0])
    assert found.problem_for("broken") is found.problems[0]


def test_two_plugins_naming_one_platform_keep_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second entry point providing a platform already provided is reported, not loaded
    over the first (the same holds for suppliers and notifiers: one loader serves all)."""
    _plugin_dir(tmp_path, monkeypatch)
    write(tmp_path / "plugins" / "copy_plugin.py", "from good_plugin import GoodFactory\n")
    found = discover([EntryPoint("a", "good_plugin:GoodFactory", ENTRY_POINT_GROUP),
                      EntryPoint("b", "copy_plugin:GoodFactory", ENTRY_POINT_GROUP)])
    assert list(found.factories) == ["goodplat"]
    assert [(p.name, p.error) for p in found.problems] == [
        ("b", "'goodplat' is already provided by good_plugin:GoodFactory")]

def test_load_factories_uses_installed_entry_points() -> None:
    """Installed connectors load (or are reported) and are keyed by their platform."""
    factories = load_factories()
    for platform, factory in factories.items():
        assert factory.platform == platform
    names = {ep.name for ep in discover().problems} | set(factories)
    assert "memory" in names


# --------------------------------------------------------------------------- CLI


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "robot", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=120,
    )


def test_cli_exit_code_2_on_bad_config(tmp_path: Path) -> None:
    """`robot config check` exits 2 and prints every problem on stderr."""
    robot_file = write(
        tmp_path / "robot.yaml",
        "database: sqlite:///r.db\nshops: []\ndefaults: {max_attempt: 3}\nlog: {level: loud}\n",
    )
    result = _run_cli("-c", str(robot_file), "config", "check")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: robot.yaml: defaults.max_attempt: unknown key (did you mean 'max_attempts'?)",
        "error: robot.yaml: log.level: Input should be 'debug', 'info', 'warning' or 'error'",
    ]
    assert result.stdout == ""


def test_cli_config_ok(tmp_path: Path) -> None:
    """`robot config check` on a good config says so, exits 0 and creates no database."""
    robot_file = write(tmp_path / "robot.yaml", "database: sqlite:///r.db\nshops: shops/*.yaml\n")
    result = _run_cli("-c", str(robot_file), "config", "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "config OK: 0 shop(s)\n"
    assert "does not exist yet; pool names not checked" in result.stderr
    assert not (tmp_path / "r.db").exists()


@pytest.fixture
def test_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's loader sees the test connector as the installed one."""
    monkeypatch.setattr(robot.config, "discover", lambda: Discovery(REGISTRY))


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(robot.cli.cli, list(args), catch_exceptions=True)


@pytest.mark.usefixtures("test_registry")
def test_config_check_against_database_pools(
    site: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a database, `config check` fails for missing pools and passes once they exist."""
    monkeypatch.setenv("TEST_ROBOT_DB", db_url)
    edit(site, "database: sqlite:///robot.db", "database: ${TEST_ROBOT_DB}")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(pools), [{"name": "youku-vip-month", "created_at": utcnow()}])
        result = _invoke("-c", str(site), "config", "check")
        assert isinstance(result.exception, ConfigError)
        assert result.exception.problems == [
            "shops/tb.yaml: shop 'tb-main': items[1].pools[0].pool: pool 'iqiyi-month' does not "
            "exist; create it with: robot pools create iqiyi-month",
            "shops/tb.yaml: shop 'tb-main': items[1].pools[1].pool: pool 'game-card-50' does not "
            "exist; create it with: robot pools create game-card-50",
        ]
        with engine.begin() as conn:
            conn.execute(
                insert(pools),
                [{"name": n, "created_at": utcnow()} for n in ("iqiyi-month", "game-card-50")],
            )
        result = _invoke("-c", str(site), "config", "check", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["pools_checked"] is True
        result = _invoke("-c", str(site), "config", "check")
        assert result.exit_code == 0, result.output
        assert result.stdout == "config OK: 1 shop(s)\n"
    finally:
        engine.dispose()


@pytest.mark.usefixtures("test_registry")
def test_config_check_without_pools_table(site: Path) -> None:
    """An existing database without the pools table is noted, not an error."""
    make_engine(f"sqlite:///{site.parent / 'robot.db'}").connect().close()
    result = _invoke("-c", str(site), "config", "check")
    assert result.exit_code == 0, result.output
    assert result.stdout == "config OK: 1 shop(s)\n"
    assert "no pools table yet" in result.stderr


@pytest.mark.usefixtures("test_registry")
def test_config_show_masks_secrets(site: Path) -> None:
    """`config show` (YAML and --json) prints the effective config with secrets masked."""
    result = _invoke("-c", str(site), "config", "show", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["shops"][0]["platform_config"]["app_secret"] == MASK
    assert data["shops"][0]["poll_interval_seconds"] == 30.0
    assert data["alerts"]["targets"] == [MASK]
    as_yaml = _invoke("-c", str(site), "config", "show")
    assert as_yaml.exit_code == 0, as_yaml.output
    assert yaml.safe_load(as_yaml.stdout)["shops"][0]["platform_config"]["app_secret"] == MASK
    for out in (result.output, as_yaml.output):
        for secret in (SECRET, FILE_SECRET, ALERT_SECRET):
            assert secret not in out


@pytest.mark.usefixtures("test_registry")
def test_config_show_prints_durations_as_written_and_mappings_as_rows(site: Path) -> None:
    """`config show` says `5m`, `30d`, `1h` (not seconds), yuan with two decimals, and one
    readable row per SKU mapping; `--json` keeps plain numbers for programs."""
    edit(site, "  max_attempts: 4\n", "  max_attempts: 4\n  risk: {buyer_amount_per_day_yuan: 500}\n")
    shown = yaml.safe_load(_invoke("-c", str(site), "config", "show").stdout)
    assert shown["defaults"]["poll_interval"] == "5m"
    assert shown["defaults"]["backoff_max"] == "1h"
    assert shown["defaults"]["risk"]["buyer_amount_per_day_yuan"] == "500.00"
    shop = shown["shops"][0]
    assert shop["poll_interval"] == "30s"
    assert shop["pickup"]["link_ttl"] == "30d"
    assert shop["items"] == ["sku_id 4567 → youku-vip-month ×2",
                             "outer_id BUNDLE-A → iqiyi-month ×1 + game-card-50 ×2"]
    data = json.loads(_invoke("-c", str(site), "config", "show", "--json").stdout)
    assert data["shops"][0]["pickup"]["link_ttl"] == 2592000.0


@pytest.mark.usefixtures("test_registry")
def test_config_check_warns_on_inline_secrets_without_quoting_them(site: Path) -> None:
    """A secret written literally (a connector's, the robot file's, a database password) is
    a warning naming file, shop and field, never the value; ${ENV} and file: are not."""
    (site.parent / "shops" / "secrets" / "session.txt").chmod(0o600)
    clean = _invoke("-c", str(site), "config", "check", "--json")
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout)["warnings"] == []
    edit(site.parent / "shops" / "tb.yaml", "app_secret: ${TEST_APP_SECRET}",
         f"app_secret: {SECRET}")
    edit(site, "alerts: {targets: [\"${TEST_ALERT_URL}\"]}",
         f"alerts: {{targets: [\"dingtalk://{ALERT_SECRET}/\"]}}")
    edit(site, "database: sqlite:///robot.db", "database: postgresql://robot:hunter2@db/robot")
    result = _invoke("-c", str(site), "config", "check", "--json")
    warnings = json.loads(result.stdout)["warnings"]
    assert [w.split(": a secret")[0] for w in warnings if ": a secret" in w] == [
        "robot.yaml: alerts.targets[0]",
        "shops/tb.yaml: shop 'tb-main': platform_config.app_secret",
    ]
    assert any(w.startswith("robot.yaml: database: the password is written inline")
               for w in warnings)
    text = _invoke("-c", str(site), "config", "check")
    for out in (result.output, text.output, text.stderr):
        for secret in (SECRET, ALERT_SECRET, "hunter2"):
            assert secret not in out
    assert "warning: shops/tb.yaml: shop 'tb-main': platform_config.app_secret" in text.stderr


@pytest.mark.usefixtures("test_registry")
def test_config_check_warns_on_world_readable_secret_files(site: Path) -> None:
    """A file: secret every user may read is a warning with the chmod that fixes it."""
    path = site.parent / "shops" / "secrets" / "session.txt"
    path.chmod(0o644)
    result = _invoke("-c", str(site), "config", "check", "--json")
    assert result.exit_code == 0, result.output
    [warning] = json.loads(result.stdout)["warnings"]
    assert warning.startswith("shops/tb.yaml: shop 'tb-main': platform_config.session: secret "
                              f"file {path} is readable by every user (mode 0644)")
    assert f"chmod 600 {path}" in warning
    assert FILE_SECRET not in result.output
    path.chmod(0o640)
    assert json.loads(_invoke("-c", str(site), "config", "check", "--json").stdout)[
        "warnings"] == []


@pytest.mark.usefixtures("test_registry")
def test_config_show_bad_config_never_prints_secret(site: Path) -> None:
    """A failing `config show` raises ConfigError whose lines carry no secret."""
    edit(site.parent / "shops" / "tb.yaml", "  app_key: 12345678", f"  app_key: [{SECRET}]")
    result = _invoke("-c", str(site), "config", "show")
    assert isinstance(result.exception, ConfigError)
    assert result.exception.problems == [
        "shops/tb.yaml: shop 'tb-main': platform_config.app_key: Input should be a valid string"
    ]
    assert SECRET not in result.output


# --------------------------------------------------------------------------- lookup checks


def test_paid_amount_alone_is_refused_naming_file_shop_field_and_alternatives(
        site: Path) -> None:
    """``lookup_check: paid_amount`` alone is no secret (a price is public): refused."""
    write(site.parent / "shops" / "tb.yaml",
          SHOP_YAML + "pickup: {lookup_check: paid_amount}\n")
    (problem,) = problems_of(site)
    assert problem.startswith("shops/tb.yaml: shop 'tb-main': pickup.lookup_check: paid_amount "
                              "alone is no secret")
    assert "paid_at or buyer_id_suffix" in problem and "[paid_at, paid_amount]" in problem
    write(site.parent / "shops" / "tb.yaml",
          SHOP_YAML + "pickup: {lookup_check: [paid_amount]}\n")
    assert "alone is no secret" in problems_of(site)[0]


@pytest.mark.parametrize(("checks", "expected"), [
    ("paid_at", ("paid_at",)),
    ("[paid_at, paid_amount]", ("paid_at", "paid_amount")),
    ("[buyer_id_suffix, paid_amount]", ("buyer_id_suffix", "paid_amount")),
    ("none", ()),
])
def test_lookup_checks_a_buyer_knows_are_accepted(site: Path, checks: str,
                                                  expected: tuple[str, ...]) -> None:
    """One secret check, or a public one combined with a secret one, loads."""
    write(site.parent / "shops" / "tb.yaml", SHOP_YAML + f"pickup: {{lookup_check: {checks}}}\n")
    config = load_config(site, registry=REGISTRY)
    assert config.shops[0].pickup.lookup_check == expected


@pytest.mark.parametrize(("checks", "message"), [
    ("[paid_at, paid_at]", "a check is listed twice"),
    ("[none, paid_at]", "'none' turns the lookup off"),
    ("birthday", "Input should be 'buyer_id_suffix', 'paid_at' or 'paid_amount'"),
])
def test_bad_lookup_checks_are_errors(site: Path, checks: str, message: str) -> None:
    """Duplicates, ``none`` in a list and unknown checks are reported on the field."""
    write(site.parent / "shops" / "tb.yaml", SHOP_YAML + f"pickup: {{lookup_check: {checks}}}\n")
    (problem,) = problems_of(site)
    assert problem.startswith("shops/tb.yaml: shop 'tb-main': pickup.lookup_check")
    assert message in problem


def test_timezone_defaults_to_shanghai_and_must_be_an_iana_name(site: Path) -> None:
    """``timezone`` is the shops' time zone: Asia/Shanghai unless set, an IANA name if set."""
    assert load_config(site, registry=REGISTRY).timezone == "Asia/Shanghai"
    edit(site, "key_file: robot.key", "key_file: robot.key\ntimezone: Europe/Berlin")
    assert load_config(site, registry=REGISTRY).timezone == "Europe/Berlin"
    for bad in ("Mars/Olympus", "../../etc/passwd", "Beijing"):
        edit(site, site.read_text().split("timezone: ")[1].split("\n")[0], bad)
        (problem,) = problems_of(site)
        assert problem.startswith(f"robot.yaml: timezone: unknown time zone {bad!r}")


# --- the key file, checked against the database as `robot run` checks it ------------------


def _site_with_codes(site: Path, db_url: str, key_file: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The site on the test database, its pools created, 2 codes under the test key file."""
    monkeypatch.setenv("TEST_ROBOT_DB", db_url)
    edit(site, "database: sqlite:///robot.db", "database: ${TEST_ROBOT_DB}")
    engine = make_engine(db_url)
    try:
        for name in ("iqiyi-month", "game-card-50"):
            create_pool(engine, name, actor="t")
        seed_codes(engine, open_vault(key_file), "youku-vip-month", 2)
    finally:
        engine.dispose()


@pytest.mark.usefixtures("test_registry")
def test_config_check_fails_with_a_wrong_key_file(site: Path, db_url: str, key_file: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A key file that does not decrypt the stored codes fails `config check` with the
    start-up check's message (it used to say "config OK")."""
    _site_with_codes(site, db_url, key_file, monkeypatch)
    init_key_file(site.parent / "robot.key")  # the configured one: another key
    result = _invoke("-c", str(site), "config", "check")
    assert isinstance(result.exception, ConfigError)
    assert [p for p in result.exception.problems if "do not decrypt" in p] == [
        "key id(s) k1 in the key file do not decrypt the stored rows: wrong key file; "
        "restore the right one (nothing was written)"]


@pytest.mark.usefixtures("test_registry")
def test_config_check_fails_with_the_key_file_missing_over_codes(
        site: Path, db_url: str, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the key file missing and codes in the database, `config check` fails saying to
    restore the key file from backup, never suggesting `keys init`."""
    _site_with_codes(site, db_url, key_file, monkeypatch)
    result = _invoke("-c", str(site), "config", "check")
    assert isinstance(result.exception, ConfigError)
    [problem] = result.exception.problems
    assert "not found, and the database holds 2 code(s) under key k1" in problem
    assert "restore the key file from its backup" in problem
    assert "create it with" not in result.output


@pytest.mark.usefixtures("test_registry")
def test_config_check_passes_with_the_right_key_file(site: Path, db_url: str, key_file: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The right key file passes: config OK."""
    _site_with_codes(site, db_url, key_file, monkeypatch)
    edit(site, "key_file: robot.key", f"key_file: {key_file}")
    result = _invoke("-c", str(site), "config", "check")
    assert result.exit_code == 0, result.output
    assert result.stdout == "config OK: 1 shop(s)\n"


@pytest.mark.usefixtures("test_registry")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_config_check_fails_with_a_key_file_others_may_read(site: Path, mode: int) -> None:
    """A key file readable by its group or by every user fails `config check` with the
    chmod that fixes it, as `robot run` refuses it (no database needed)."""
    path = site.parent / "robot.key"
    init_key_file(path)
    path.chmod(mode)
    result = _invoke("-c", str(site), "config", "check")
    assert isinstance(result.exception, ConfigError)
    [problem] = result.exception.problems
    assert f"chmod 600 {path}" in problem
    path.chmod(0o600)
    assert _invoke("-c", str(site), "config", "check").exit_code == 0
