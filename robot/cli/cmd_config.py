"""``robot config check`` and ``robot config show``: is the configuration right, and what is it.

``check`` loads the robot file and every shop file (all problems at once, exit status 2) and,
when the database already exists, checks that every pool the shops name exists and that the
key file opens and fits the database as ``robot run`` checks it at start (a missing key file
is an error when the database holds codes, secrets or audit entries that need it). It never
creates a database file and never runs migrations. ``show`` prints the effective
configuration (for people: durations as a file writes them, money in yuan, one row per SKU
mapping; ``--json`` keeps plain numbers); it must never print a secret (every ``Secret``
shows as ``********``). ``check`` also warns about secrets written inline and secret files
every user may read (:mod:`robot.confcheck`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import click
import yaml
from pydantic import BaseModel, BeforeValidator, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import SQLAlchemyError

from robot.cli.common import App, emit_json, json_option, missing_sqlite_file
from robot.confcheck import secret_warnings
from robot.config import (
    MASK,
    RobotConfig,
    SkuMapping,
    check_pools,
    effective_dict,
    parse_duration,
)
from robot.db import make_engine, safe_url
from robot.display import format_duration
from robot.errors import ConfigError, RobotError, VaultError
from robot.schema import pools
from robot.vault import open_vault


def _database_checks(config: RobotConfig) -> tuple[set[str] | None, list[str], list[str]]:
    """Pool names in the database (None: not read), notes, and problems with the key file.

    The key file is opened and checked against the database exactly as ``robot run`` does
    at start (:func:`robot.keys.check_keys`); a missing key file is a problem when the
    database holds rows that need it, and only a note when it holds none.
    """
    missing = missing_sqlite_file(config.database)
    if missing is not None:
        notes = [f"database {missing} does not exist yet; pool names not checked"]
        return None, notes, _key_file_problems(config, None)
    try:
        engine = make_engine(config.database)
    except RobotError as exc:
        return None, [f"database not usable ({exc.message}); pool names not checked"], []
    try:
        return _with_database(config, engine)
    finally:
        engine.dispose()


def _with_database(config: RobotConfig,
                   engine: Engine) -> tuple[set[str] | None, list[str], list[str]]:
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(pools.name):
                return (None, ["database has no pools table yet; pool names not checked"],
                        _key_file_problems(config, None))
            from robot.pools import pool_names

            names = pool_names(conn)
    except SQLAlchemyError as exc:
        # The driver's text may quote the URL; name the error class and the masked URL only.
        return None, [
            f"database {safe_url(config.database)} unreachable ({type(exc).__name__}); "
            "pool names and key file not checked"
        ], []
    try:
        return names, [], _key_file_problems(config, engine)
    except SQLAlchemyError as exc:  # e.g. a schema older than this robot (not migrated yet)
        return names, [f"key file not checked against the database ({type(exc).__name__}); "
                       "`robot run` checks it at start"], []


def _key_file_problems(config: RobotConfig, engine: Engine | None) -> list[str]:
    """The key file as ``robot run`` would find it (``engine``: a database with the schema)."""
    from robot.keys import check_keys, lost_key_file

    path = config.key_file
    try:
        if not path.exists():
            lost = lost_key_file(engine, path) if engine is not None else None
            return [] if lost is None else [lost.message]
        vault = open_vault(path)
        if engine is not None:
            check_keys(engine, vault)
    except VaultError as exc:
        return [exc.message]
    return []


@click.group()
def config() -> None:
    """Check and show the robot's configuration."""


@config.command("check")
@json_option
@click.pass_obj
def check(app: App, as_json: bool) -> None:
    """Validate the robot file, every shop file, and the pools the shops name."""
    cfg = app.config  # raises ConfigError listing every problem
    names, notes, problems = _database_checks(cfg)
    if names is not None:
        problems = [*check_pools(cfg, names), *problems]
    if problems:
        raise ConfigError(problems)
    if not cfg.key_file.exists():
        notes.append(f"key file {cfg.key_file} does not exist yet; create it with: robot keys init")
    warnings = secret_warnings(cfg)
    if as_json:
        checked = names is not None
        emit_json({"ok": True, "shops": len(cfg.shops), "pools_checked": checked, "notes": notes,
                   "warnings": warnings})
        return
    for line in notes:
        click.echo(f"note: {line}", err=True)
    for line in warnings:
        click.echo(f"warning: {line}", err=True)
    click.echo(f"config OK: {len(cfg.shops)} shop(s)")


@config.command("show")
@json_option
@click.pass_obj
def show(app: App, as_json: bool) -> None:
    """Print the effective configuration (defaults applied, secrets masked)."""
    data: dict[str, Any] = effective_dict(app.config)
    if as_json:
        emit_json(data)
        return
    shown = readable(app.config)
    shown["database"] = data["database"]
    click.echo(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True, width=100), nl=False)


def readable(config: RobotConfig) -> dict[str, Any]:
    """The effective configuration for people: durations as a file writes them (``30d``),
    money in yuan (``500.00``), each SKU mapping as one row; secrets masked."""
    data: dict[str, Any] = _readable(config)
    shops = []
    for shop, shown in zip(config.shops, data["shops"], strict=True):
        shown["items"] = [mapping_row(m) for m in shop.items]
        shops.append({("poll_interval" if k == "poll_interval_seconds" else k): v
                      for k, v in shown.items()})
    data["shops"] = shops
    return data


def mapping_row(mapping: SkuMapping) -> str:
    """``sku_id 4567 → youku-vip-month ×2`` (a bundle: ``… → a ×1 + b ×2``)."""
    kind, ident = mapping.key
    pools_text = " + ".join(f"{p.pool} ×{p.quantity}" for p in mapping.pools)
    return f"{kind} {ident} → {pools_text}"


def _readable(value: Any) -> Any:
    if isinstance(value, SecretStr | SecretBytes):
        return MASK
    if isinstance(value, BaseModel):
        out: dict[str, Any] = {}
        for name, info in type(value).model_fields.items():
            item = getattr(value, name)
            is_number = isinstance(item, int | float) and not isinstance(item, bool)
            out[name] = (format_duration(float(item)) if is_number and _is_duration(info)
                         else _readable(item))
        return out
    if isinstance(value, Decimal):
        return f"{value:.2f}"  # the only decimals in the config are yuan
    if isinstance(value, list | tuple):
        return [_readable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _readable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return _readable(value.value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _is_duration(info: FieldInfo) -> bool:
    """Whether the field is a :data:`robot.config.Duration` (possibly optional)."""
    return _duration_in(info.metadata) or _annotated_duration(info.annotation)


def _duration_in(metadata: Any) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in metadata)


def _annotated_duration(tp: Any) -> bool:
    if get_origin(tp) is Annotated:
        args = get_args(tp)
        return _duration_in(args[1:]) or _annotated_duration(args[0])
    return any(_annotated_duration(a) for a in get_args(tp))


COMMANDS: list[click.Command] = [config]
