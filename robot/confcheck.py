"""Warnings of ``robot config check`` about how secrets are kept (the files load either way).

* A secret written literally in a YAML file (not ``${ENV_VAR}`` nor ``file:/path``) ends up
  in backups, diffs and support mails with the file: :func:`secret_warnings` names file,
  shop and field. A password written into the database URL counts too.
* A ``file:`` secret that every user on the machine may read (mode ``& 0o004``) is no
  secret: named with the ``chmod`` that fixes it. (The key file is stricter: a key file
  others may read is refused outright, see :func:`robot.vault.load_key_ring`.)

The fields holding secrets are found from the models themselves (every ``SecretStr``
field of the robot file, the shop file and the shop's connector config), so a connector's
new secret is checked without a change here.

This module must never put a secret's value, or any part of it, into a warning.
"""

from __future__ import annotations

import stat
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connectors.config import ENV_REF_RE, FILE_PREFIX
from robot.config import RobotConfig, RobotFile, ShopFile


def secret_warnings(config: RobotConfig) -> list[str]:
    """Every secret written inline, and every world-readable ``file:`` secret."""
    base = config.path.parent
    found: list[str] = []
    raw = _raw(config.path)
    where = _rel(config.path, base)
    found += _walk(RobotFile, raw, (), where, config.path.parent)
    found += _database_url(raw.get("database"), where)
    for shop in config.shops:
        raw_shop = _raw(shop.file)
        shown = f"{_rel(shop.file, base)}: shop {shop.name!r}"
        found += _walk(ShopFile, raw_shop, (), shown, shop.file.parent)
        found += _walk(type(shop.platform_config), raw_shop.get("platform_config"),
                       ("platform_config",), shown, shop.file.parent)
    return found


def _raw(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}  # it loaded a moment ago; a file changed since is checked next time
    return data if isinstance(data, dict) else {}


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + part
    return out


def _walk(model: type[BaseModel], raw: Any, loc: tuple[int | str, ...], where: str,
          base: Path) -> list[str]:
    if not isinstance(raw, Mapping):
        return []
    found: list[str] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in raw:
            found += _value(info.annotation, raw[key], (*loc, key), where, base)
    return found


def _value(tp: Any, value: Any, loc: tuple[int | str, ...], where: str,
           base: Path) -> list[str]:
    origin = get_origin(tp)
    if origin is Annotated:
        return _value(get_args(tp)[0], value, loc, where, base)
    if origin in (Union, types.UnionType):
        found: list[str] = []
        for arg in get_args(tp):
            if arg is not type(None):
                found += _value(arg, value, loc, where, base)
        return found
    if origin in (list, tuple) and isinstance(value, list):
        args = get_args(tp)
        return [w for i, item in enumerate(value)
                for w in _value(args[0] if args else Any, item, (*loc, i), where, base)]
    if isinstance(tp, type) and issubclass(tp, SecretStr):
        return _secret(value, loc, where, base)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _walk(tp, value, loc, where, base)
    return []


def _secret(value: Any, loc: tuple[int | str, ...], where: str, base: Path) -> list[str]:
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        return []
    text = str(value)
    if ENV_REF_RE.fullmatch(text):
        return []
    if not text.startswith(FILE_PREFIX):
        return [f"{where}: {_loc(loc)}: a secret is written inline in the file; put it in an "
                "environment variable (${NAME}) or a file only the robot reads "
                "(file:/path, mode 0600)"]
    path = Path(text[len(FILE_PREFIX):]).expanduser()
    path = path if path.is_absolute() else base / path
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return []  # loading reported it already
    if mode & 0o004:
        return [f"{where}: {_loc(loc)}: secret file {path} is readable by every user "
                f"(mode {mode:04o}); run: chmod 600 {path}"]
    return []


def _database_url(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, str):
        return []
    try:
        password = make_url(raw).password
    except (ArgumentError, ValueError):
        return []
    if password is None or ENV_REF_RE.search(str(password)):
        return []
    return [f"{where}: database: the password is written inline in the URL; use "
            "${NAME} for it, e.g. postgresql://robot:${ROBOT_DB_PASSWORD}@host/robot"]
