"""Reading the YAML files and turning pydantic's errors into the robot's problem lines.

Each problem is one line naming file, shop and field, with a "did you mean" where a key or a
name is close to a known one. Nothing here may quote an input value: a pydantic
``ValidationError``'s text and a YAML error's snippet could both hold a secret.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _format_loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional wrappers from a type."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(model: type[BaseModel], path: Iterable[int | str]) -> type[BaseModel] | None:
    """The model class found by following ``path`` (field names, list indexes) from ``model``."""
    current: Any = model
    for part in path:
        current = _unwrap(current)
        origin = get_origin(current)
        if origin in (list, tuple, set, frozenset) and isinstance(part, int):
            current = get_args(current)[0] if get_args(current) else Any
        elif origin in (dict, Mapping) and get_args(current):
            current = get_args(current)[1]
        elif isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            names = {(f.alias or n): f for n, f in current.model_fields.items()}
            found = names.get(part) or current.model_fields.get(part)
            if found is None:
                return None
            current = found.annotation
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def known_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _walk_raw(raw: Any, path: Iterable[int | str]) -> Any:
    for part in path:
        in_list = isinstance(raw, list) and isinstance(part, int) and 0 <= part < len(raw)
        if not (in_list or (isinstance(raw, Mapping) and part in raw)):
            return None
        raw = raw[part]
    return raw


def explain(
    exc: ValidationError, model: type[BaseModel], raw: Any, prefix: tuple[int | str, ...] = ()
) -> list[str]:
    """``loc: message`` lines for a validation error; never quotes an input value."""
    lines: list[str] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            known = known_keys(owner) if owner is not None else []
            hint = did_you_mean(str(loc[-1]), known)
            listing = f"; expected one of: {', '.join(known)}" if known else ""
            msg = "unknown key" + (hint or listing)
        elif err["type"] in ("value_error", "assertion_error"):
            # A connector's plain `raise ValueError(...)`: drop pydantic's "Value error, ".
            msg = msg.split(", ", 1)[-1]
        loc = _shorthand_loc(loc, raw, err["type"])
        where = _format_loc(prefix + loc)
        lines.append(f"{where}: {msg}" if where else msg)
    return lines


def _shorthand_loc(loc: tuple[int | str, ...], raw: Any, kind: str) -> tuple[int | str, ...]:
    """Point errors in a ``pool:`` shorthand mapping at the keys the user actually wrote."""
    for i, part in enumerate(loc):
        if part != "pools" or i == 0:
            continue
        entry = _walk_raw(raw, loc[:i])
        if not isinstance(entry, Mapping) or "pools" in entry:
            continue
        rest = loc[i + 1 :]
        if len(rest) >= 2 and rest[0] == 0:
            return loc[:i] + rest[1:]
        if not rest and kind == "missing":
            return (*loc[:i], "pool")
    return loc


class _DuplicateKeyError(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[tuple[str, str]] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                raise _DuplicateKeyError(
                    problem=f"duplicate key {key_node.value!r}", problem_mark=key_node.start_mark
                )
            seen.add(ident)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass
class Problems:
    """Collects problem lines; ``where`` prefixes them with a file and shop."""

    base: Path
    lines: list[str] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.base).as_posix()
        except ValueError:
            return str(path)

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{where}: {message}")


def read_yaml(path: Path, shown: str, problems: Problems, *, what: str) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.add(shown, "file not found")
        return None
    except UnicodeDecodeError:
        problems.add(shown, "not UTF-8 text")
        return None
    except OSError as exc:
        problems.add(shown, f"cannot read: {exc.strerror or type(exc).__name__}")
        return None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # Only the problem and the position: the YAML snippet could quote a secret.
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        kind = "" if isinstance(exc, _DuplicateKeyError) else "YAML syntax error: "
        problems.add(shown, f"{where}{kind}{exc.problem or 'invalid YAML'}")
        return None
    except yaml.YAMLError as exc:
        problems.add(shown, f"YAML error: {type(exc).__name__}")
        return None
    if data is None:
        problems.add(shown, f"file is empty (a {what} needs at least {_REQUIRED[what]})")
        return None
    if not isinstance(data, dict):
        problems.add(shown, f"expected a mapping of keys at the top level, got {_yaml_kind(data)}")
        return None
    return data


_REQUIRED = {"robot file": "database and shops", "shop file": "name and platform"}


def _yaml_kind(data: Any) -> str:
    if isinstance(data, list):
        return "a list"
    if isinstance(data, str):
        return "a string"
    return f"a {type(data).__name__}"
