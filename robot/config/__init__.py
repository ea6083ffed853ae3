"""The robot's configuration: one robot file, one file per shop, typed and loud.

:func:`load_config` reads the robot file and every shop file it names, validates them with
pydantic (each shop's ``platform_config`` with its connector's own model) and reports EVERY
problem in one :class:`robot.errors.ConfigError`, one line each, naming file, shop and field::

    shops/tb.yaml: shop 'tb-main': items[1].pool: Field required
    robot.yaml: defaults.poll_intervall: unknown key (did you mean 'poll_interval'?)

:data:`Secret` is the type for anything confidential (connectors use it too): a literal, a
whole-value ``${ENV_VAR}`` or ``file:/path``; it prints as ``********``.

This module must never put a secret's value into a message, a repr or :func:`effective_dict`,
and never print a pydantic ``ValidationError`` as is (its text quotes input values).

The package is split as Mopidy splits its config: :mod:`~robot.config.types` (value types:
``Secret``, durations, templates), :mod:`~robot.config.robot_file`,
:mod:`~robot.config.shop_file`, :mod:`~robot.config.mappings` and
:mod:`~robot.config.problems` (YAML reading and error lines); loading and display live here.
Every name is importable from ``robot.config`` as before.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from connectors.base import ConnectorFactory
from connectors.config import (
    BASE_DIR,
    ENV_NAME_RE,
    ENV_REF_RE,
    FILE_PREFIX,
    PlatformConfig,
    Secret,
    env_value,
)
from connectors.notifier import NotifierFactory
from robot.config.mappings import (
    AccountRule,
    PoolShare,
    SkuMapping,
    SupplierRoute,
    check_pools,
    check_suppliers,
    duplicate_skus,
    price_problems,
)
from robot.config.notify import NotifyConfig, validate_channels
from robot.config.problems import Problems, did_you_mean, explain, known_keys, read_yaml
from robot.config.robot_file import (
    AlertsConfig,
    HttpConfig,
    IntakeConfig,
    LogConfig,
    RobotConfig,
    RobotFile,
    SourcingConfig,
)
from robot.config.shop_file import (
    PUBLIC_CHECKS,
    Contact,
    Defaults,
    LookupCheckName,
    PickupConfig,
    RateRule,
    ReviewSku,
    RiskRules,
    ShopConfig,
    ShopFile,
)
from robot.config.suppliers import SupplierConfig, SupplierEntry
from robot.config.types import (
    DEFAULT_ITEM_DESC,
    DEFAULT_MEMO_TEMPLATE,
    DEFAULT_TIMEZONE,
    ITEM_DESC_PLACEHOLDERS,
    MASK,
    MEMO_PLACEHOLDERS,
    MIN_API_TOKEN,
    SHOP_NAME_RE,
    Duration,
    ItemDescTemplate,
    MemoTemplate,
    PlatformId,
    ShopName,
    TimeZoneName,
    Unmapped,
    Yuan,
    cents,
    parse_duration,
    zone,
)
from robot.db import normalize_url, safe_url
from robot.errors import ConfigError
from robot.registry import discover, discover_notifiers, discover_suppliers

#: What ``from robot.config import …`` offers (the names the single module had).
__all__ = [
    "DEFAULT_ITEM_DESC",
    "DEFAULT_MEMO_TEMPLATE",
    "DEFAULT_TIMEZONE",
    "ENV_NAME_RE",
    "ENV_REF_RE",
    "FILE_PREFIX",
    "ITEM_DESC_PLACEHOLDERS",
    "MASK",
    "MEMO_PLACEHOLDERS",
    "MIN_API_TOKEN",
    "PUBLIC_CHECKS",
    "SHOP_NAME_RE",
    "AccountRule",
    "AlertsConfig",
    "Contact",
    "Defaults",
    "Duration",
    "HttpConfig",
    "IntakeConfig",
    "ItemDescTemplate",
    "LogConfig",
    "LookupCheckName",
    "MemoTemplate",
    "NotifyConfig",
    "PickupConfig",
    "PlatformConfig",
    "PlatformId",
    "PoolShare",
    "RateRule",
    "ReviewSku",
    "RiskRules",
    "RobotConfig",
    "RobotFile",
    "Secret",
    "ShopConfig",
    "ShopFile",
    "ShopName",
    "SkuMapping",
    "SourcingConfig",
    "SupplierConfig",
    "SupplierEntry",
    "SupplierRoute",
    "TimeZoneName",
    "Unmapped",
    "Yuan",
    "cents",
    "check_pools",
    "check_suppliers",
    "effective_dict",
    "load_config",
    "parse_duration",
    "zone",
]

def _substitute_env(value: str) -> str:
    def repl(match: re.Match[str]) -> str:
        return env_value(match.group(1))

    return ENV_REF_RE.sub(repl, value)


_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")


def _resolve_database(raw: str, base: Path) -> str:
    """Expand ``${ENV}`` and make a relative SQLite path absolute; raise ConfigError."""
    try:
        url = _substitute_env(raw)
    except PydanticCustomError as exc:
        raise ConfigError(f"database: {exc.message()}") from None
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"database: not a database URL: {safe_url(url)!r}") from None
    backend = parsed.get_backend_name()
    if backend not in _BACKENDS:
        raise ConfigError(
            f"database: unsupported backend {backend!r}{did_you_mean(backend, _BACKENDS)}; "
            f"use one of: {', '.join(_BACKENDS)}"
        )
    try:
        normalize_url(url)  # picks our drivers; raises ConfigError naming the field
    except NoSuchModuleError:
        raise ConfigError(
            f"database: unknown driver in {safe_url(url)!r}; "
            "leave the driver out (e.g. postgresql://...) and the robot picks it"
        ) from None
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser()
        if not path.is_absolute():
            parsed = parsed.set(database=str(base / path))
            return parsed.render_as_string(hide_password=False)
    return url


def _has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _shop_files(spec: list[str], robot_file: Path, problems: Problems) -> list[Path]:
    base = robot_file.parent
    where = problems.rel(robot_file)
    found: list[Path] = []
    for i, entry in enumerate(spec):
        label = f"{where}: shops" + (f"[{i}]" if len(spec) > 1 else "")
        pattern = Path(entry).expanduser()
        full = pattern if pattern.is_absolute() else base / pattern
        if _has_magic(entry):
            pattern_text = (
                entry if pattern.is_absolute() else os.path.join(glob.escape(str(base)), entry)
            )
            matches = sorted(Path(p) for p in glob.glob(pattern_text, recursive=True))
            found.extend(p for p in matches if p.is_file() and p != robot_file)
        elif full.is_dir():
            problems.lines.append(
                f"{label}: {entry} is a directory; use a glob such as {entry.rstrip('/')}/*.yaml"
            )
        elif not full.exists():
            problems.lines.append(f"{label}: file {entry} does not exist")
        else:
            found.append(full)
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


@dataclass(frozen=True)
class _Plugins:
    """The installed plugins a shop file may name, and the ones that failed to load."""

    connectors: Mapping[str, ConnectorFactory]
    load_errors: Mapping[str, str]
    notifiers: Mapping[str, NotifierFactory]
    notifier_errors: Mapping[str, str]


def _load_shop(
    path: Path,
    defaults: Defaults | None,
    plugins: _Plugins,
    problems: Problems,
) -> tuple[str | None, ShopConfig | None]:
    """Validate one shop file; returns its name (if readable) and the shop (if valid)."""
    shown = problems.rel(path)
    raw = read_yaml(path, shown, problems, what="shop file")
    if raw is None:
        return None, None
    name = raw.get("name") if isinstance(raw.get("name"), str) else None
    where = f"{shown}: shop {name!r}" if name else shown
    before = len(problems.lines)
    shop_file: ShopFile | None = None
    try:
        shop_file = ShopFile.model_validate(raw, context={BASE_DIR: path.parent})
    except ValidationError as exc:
        for line in explain(exc, ShopFile, raw):
            problems.add(where, line)

    registry, load_errors = plugins.connectors, plugins.load_errors
    platform_config: BaseModel | None = None
    platform = raw.get("platform")
    if isinstance(platform, str) and platform:
        factory = registry.get(platform)
        if factory is None:
            if platform in load_errors:
                problems.add(
                    where,
                    f"platform: the {platform!r} connector failed to load: {load_errors[platform]}",
                )
            else:
                known = sorted(registry)
                hint = did_you_mean(platform, known)
                listed = ", ".join(known) if known else "none"
                problems.add(
                    where, f"platform: unknown platform {platform!r}{hint}; registered: {listed}"
                )
        elif isinstance(raw.get("platform_config", {}), dict):
            platform_config = _validate_platform_config(
                factory, raw.get("platform_config") or {}, path, where, problems
            )

    for line in _item_problems(raw, registry):
        problems.add(where, line)
    notify = validate_channels(
        raw.get("notify"), shop_file.notify if shop_file else None, path, where, problems,
        plugins.notifiers, plugins.notifier_errors,
        pickup_enabled=shop_file.pickup.enabled if shop_file else True)

    if len(problems.lines) > before or shop_file is None or platform_config is None:
        return name, None
    if defaults is None:  # the robot file is broken; its problems are reported already
        return name, None
    shop = ShopConfig(
        name=shop_file.name,
        platform=shop_file.platform,
        enabled=shop_file.enabled,
        file=path,
        poll_interval_seconds=shop_file.poll_interval or defaults.poll_interval,
        unmapped=shop_file.unmapped or defaults.unmapped,
        memo_template=(
            shop_file.memo_template if shop_file.memo_template is not None
            else defaults.memo_template
        ),
        item_desc=shop_file.item_desc if shop_file.item_desc is not None else defaults.item_desc,
        items=shop_file.items,
        platform_config=platform_config,
        pickup=shop_file.pickup,
        delivery_api_token=shop_file.delivery_api_token,
        risk=defaults.risk.merged(shop_file.risk),
        display_name=shop_file.display_name,
        contact=shop_file.contact,
        notify=notify or NotifyConfig(),
    )
    return name, shop


def _item_problems(raw: Mapping[str, Any], registry: Mapping[str, ConnectorFactory]) -> list[str]:
    """Mapping problems across entries, and prices where the platform does (not) take them."""
    lines = duplicate_skus(raw.get("items"))
    platform = raw.get("platform")
    if isinstance(platform, str) and platform in registry:
        priced = getattr(registry[platform], "priced_items", False) is True
        lines += price_problems(raw.get("items"), priced=priced)
    return lines


def _validate_platform_config(
    factory: ConnectorFactory, raw: dict[str, Any], path: Path, where: str, problems: Problems
) -> BaseModel | None:
    model = factory.config_model
    prefix: tuple[int | str, ...] = ("platform_config",)
    result: BaseModel | None = None
    try:
        result = model.model_validate(raw, context={BASE_DIR: path.parent})
    except ValidationError as exc:
        for line in explain(exc, model, raw, prefix):
            problems.add(where, line)
    except Exception as exc:  # noqa: BLE001 - a connector's validator bug must not hide other problems
        problems.add(
            where,
            f"platform_config: the {factory.platform!r} connector's config model failed: "
            f"{type(exc).__name__}",
        )
    # A model that ignores unknown keys would hide typos: report them anyway.
    if model.model_config.get("extra") in (None, "ignore"):
        known = known_keys(model)
        for key in raw:
            if key not in known and key not in model.model_fields:
                hint = did_you_mean(str(key), known)
                problems.add(where, f"platform_config.{key}: unknown key{hint}")
                result = None
    return result


def load_config(
    path: Path | str, *, registry: Mapping[str, ConnectorFactory] | None = None,
    notifiers: Mapping[str, NotifierFactory] | None = None,
    supplier_registry: Mapping[str, Any] | None = None,
) -> RobotConfig:
    """Load and validate the robot file and its shop files; every problem in one ConfigError.

    ``registry`` maps platform names to connector factories, ``notifiers`` notifier names to
    notifier factories, ``supplier_registry`` supplier plugin names to supplier factories
    (default: the installed ones).
    """
    load_errors: dict[str, str] = {}
    if registry is None:
        found = discover()
        registry = found.factories
        load_errors = {p.name: p.error for p in found.problems}
    notifier_errors: dict[str, str] = {}
    if notifiers is None:
        notifiers, broken = discover_notifiers()
        notifier_errors = {p.name: p.error for p in broken}
    plugins = _Plugins(registry, load_errors, notifiers, notifier_errors)

    robot_file = Path(path).expanduser().absolute()
    base = robot_file.parent
    problems = Problems(base=base)
    shown = problems.rel(robot_file)
    if not robot_file.exists():
        raise ConfigError(
            f"{path}: file not found (create it from config.example.yaml, or pass -c FILE)"
        )
    raw = read_yaml(robot_file, shown, problems, what="robot file")
    if raw is None:
        raise ConfigError(problems.lines)

    robot: RobotFile | None = None
    try:
        robot = RobotFile.model_validate(raw, context={BASE_DIR: base})
    except ValidationError as exc:
        for line in explain(exc, RobotFile, raw):
            problems.add(shown, line)
    database = _database_of(raw, base, shown, problems)
    spec = robot.shops if robot is not None else _shops_spec_fallback(raw.get("shops"))
    shops = _load_shops(_shop_files(spec, robot_file, problems),
                        robot.defaults if robot else None, plugins, problems)
    suppliers = _load_suppliers(raw.get("suppliers"), robot_file, shown, problems,
                                supplier_registry)
    if problems.lines or robot is None or database is None:
        raise ConfigError(problems.lines)
    key_file = Path(robot.key_file).expanduser()
    config = RobotConfig(
        path=robot_file,
        database=database,
        key_file=key_file if key_file.is_absolute() else base / key_file,
        timezone=robot.timezone,
        http=robot.http,
        alerts=robot.alerts,
        intake=robot.intake,
        defaults=robot.defaults,
        log=robot.log,
        shops=shops,
        suppliers=suppliers,
        sourcing=robot.sourcing,
        restock=robot.restock,
    )
    unknown = check_suppliers(config)
    if unknown:
        raise ConfigError(unknown)
    return config


def _load_suppliers(raw: Any, path: Path, shown: str, problems: Problems,
                    registry: Mapping[str, Any] | None) -> list[SupplierConfig]:
    """Every supplier account of the robot file, its ``config`` checked by its plugin's
    model (problems name the file and ``suppliers.NAME.field``)."""
    if not isinstance(raw, Mapping) or not raw:
        return []
    load_errors: dict[str, str] = {}
    if registry is None:
        registry, failed = discover_suppliers()
        load_errors = {p.name: p.error for p in failed}
    found: list[SupplierConfig] = []
    for name, entry in raw.items():
        where = f"suppliers.{name}"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("plugin"), str):
            continue  # RobotFile's validation reported it
        plugin = entry["plugin"]
        factory = registry.get(plugin)
        if factory is None:
            why = (f"the {plugin!r} supplier plugin failed to load: {load_errors[plugin]}"
                   if plugin in load_errors else
                   f"unknown supplier plugin {plugin!r}{did_you_mean(plugin, sorted(registry))}"
                   f"; installed: {', '.join(sorted(registry)) or 'none'}")
            problems.add(shown, f"{where}.plugin: {why}")
            continue
        model = factory.config_model
        body = entry.get("config") or {}
        try:
            validated = model.model_validate(body, context={BASE_DIR: path.parent})
        except ValidationError as exc:
            for line in explain(exc, model, body, (where, "config")):
                problems.add(shown, line)
            continue
        low = entry.get("low_balance")
        try:
            found.append(SupplierConfig(
                name=str(name), plugin=plugin, enabled=bool(entry.get("enabled", True)),
                config=validated,
                low_balance_cents=int(Decimal(str(low)) * 100) if low is not None else None))
        except (ValidationError, ArithmeticError, ValueError):
            continue  # RobotFile's validation reported the name or the amount
    return found


def _database_of(raw: Mapping[str, Any], base: Path, shown: str,
                 problems: Problems) -> str | None:
    """The robot file's database URL, resolved (None, with the problem added, when wrong)."""
    raw_db = raw.get("database", RobotFile.model_fields["database"].default)
    if not isinstance(raw_db, str):
        return None
    try:
        return _resolve_database(raw_db, base)
    except ConfigError as exc:
        for line in exc.problems:
            problems.add(shown, line)
    return None


def _load_shops(shop_paths: Iterable[Path], defaults: Defaults | None, plugins: _Plugins,
                problems: Problems) -> list[ShopConfig]:
    """Every shop file that loads, with each shop name used once (a duplicate is a problem)."""
    shops: list[ShopConfig] = []
    seen: dict[str, Path] = {}
    for shop_path in shop_paths:
        name, shop = _load_shop(shop_path, defaults, plugins, problems)
        if name is not None:
            if name in seen:
                problems.add(
                    f"{problems.rel(shop_path)}: shop {name!r}",
                    f"name: duplicate shop name, also used by {problems.rel(seen[name])}",
                )
            else:
                seen[name] = shop_path
        if shop is not None:
            shops.append(shop)
    return shops


def _shops_spec_fallback(value: Any) -> list[str]:
    """Shop files are still checked when the robot file has other problems."""
    if value is None:
        return list(RobotFile.model_fields["shops"].get_default(call_default_factory=True))
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return []


def _plain(value: Any) -> Any:
    """JSON-able data with every secret replaced by the mask."""
    if isinstance(value, SecretStr | SecretBytes):
        return MASK
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def effective_dict(config: RobotConfig) -> dict[str, Any]:
    """The effective configuration (defaults applied) as plain data, secrets masked."""
    data: dict[str, Any] = _plain(config)
    data["database"] = safe_url(config.database).replace(":***@", f":{MASK}@")
    for shop_data in data["shops"]:
        shop_data["items"] = [
            {k: v for k, v in item.items() if v is not None} for item in shop_data["items"]
        ]
    return data
