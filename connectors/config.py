"""The plugin config base: :data:`Secret` for anything confidential and :class:`PlatformConfig`
for a connector's (or supplier's) ``config_model``.

A :data:`Secret` is a literal, a whole-value ``${ENV_VAR}`` or ``file:/path`` (contents,
trailing newline stripped; a relative path is read from the directory of the config file that
holds it, which the loader passes in the validation context under :data:`BASE_DIR`). It is a
pydantic ``SecretStr``: it prints as ``**********``.

This module is part of the ground floor: it imports nothing from the robot, and it never puts
a secret's value into a message or a repr.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr, ValidationInfo
from pydantic_core import PydanticCustomError

ENV_REF_RE = re.compile(r"\$\{([^}]*)\}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FILE_PREFIX = "file:"
#: Key of the pydantic validation context holding the config file's directory.
BASE_DIR = "base_dir"


def _base_dir(info: ValidationInfo) -> Path | None:
    ctx = info.context
    if isinstance(ctx, Mapping):
        base = ctx.get(BASE_DIR)
        if isinstance(base, Path):
            return base
    return None


def env_value(name: str) -> str:
    """The value of the environment variable ``name``; a pydantic error if it is unset or empty."""
    if not ENV_NAME_RE.fullmatch(name):
        raise PydanticCustomError(
            "env_name",
            "'${{{name}}}' is not a valid environment variable reference",
            {"name": name},
        )
    value = os.environ.get(name)
    if value is None:
        raise PydanticCustomError(
            "env_missing", "environment variable {name} is not set", {"name": name}
        )
    if value == "":
        raise PydanticCustomError(
            "env_empty", "environment variable {name} is empty", {"name": name}
        )
    return value


def _read_secret_file(raw: str, base: Path | None) -> str:
    path = Path(raw).expanduser()
    if not path.is_absolute():
        if base is None:
            raise PydanticCustomError(
                "secret_file_relative",
                "file:{path}: a relative path needs a config file to resolve against; "
                "use an absolute path",
                {"path": raw},
            )
        path = base / path
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PydanticCustomError(
            "secret_file_encoding", "file {path} is not UTF-8 text", {"path": str(path)}
        ) from exc
    except OSError as exc:
        raise PydanticCustomError(
            "secret_file_unreadable",
            "cannot read file {path}: {reason}",
            {"path": str(path), "reason": exc.strerror or type(exc).__name__},
        ) from exc
    value = text.rstrip("\r\n")
    if not value:
        raise PydanticCustomError("secret_file_empty", "file {path} is empty", {"path": str(path)})
    return value


def _resolve_secret(value: Any, info: ValidationInfo) -> Any:
    """Turn ``${ENV}`` / ``file:path`` / a literal into the secret's value."""
    if isinstance(value, SecretStr):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PydanticCustomError(
            "secret_type", "expected a string (a literal, ${ENV_VAR} or file:/path)"
        )
    value = str(value)
    ref = ENV_REF_RE.fullmatch(value)
    if ref:
        return env_value(ref.group(1))
    if value.startswith(FILE_PREFIX):
        return _read_secret_file(value[len(FILE_PREFIX) :], _base_dir(info))
    return value


#: A confidential string: a literal, ``${ENV_VAR}`` (whole value) or ``file:/path`` (contents,
#: trailing newline stripped; relative to the config file that holds it). Prints as stars.
Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret)]


class PlatformConfig(BaseModel):
    """A convenient base for connectors' ``config_model``: unknown keys are errors, numbers
    given for string fields (``app_key: 12345678``) are accepted as strings."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)
