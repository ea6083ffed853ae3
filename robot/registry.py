"""Connector discovery: every platform, built-in or third-party, through one entry point group.

Each entry point in ``robot.connectors`` names a :class:`connectors.base.ConnectorFactory`
class; it is loaded and instantiated with no arguments. A connector that fails to import, or
that does not look like a factory, becomes a :class:`LoadProblem` (name and error) and does
not stop the others from loading: one broken plugin must not take every shop down.

This module must never import a connector's module by name (only through its entry point),
and never let an exception from one connector escape :func:`discover`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from connectors.base import ENTRY_POINT_GROUP, ConnectorFactory
from connectors.notifier import NOTIFIER_ENTRY_POINT_GROUP, NotifierFactory
from connectors.supplier import SUPPLIER_ENTRY_POINT_GROUP
from robot.log import get_logger

log = get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LoadProblem:
    """One connector entry point that could not be loaded."""

    name: str  # the entry point's name
    target: str  # what it points at, ``module:Class``
    error: str  # ``ExceptionType: message``

    def __str__(self) -> str:
        return f"connector {self.name!r} ({self.target}) failed to load: {self.error}"


@dataclass(frozen=True, slots=True)
class Discovery:
    """The factories that loaded, by platform, and the entry points that did not."""

    factories: Mapping[str, ConnectorFactory]
    problems: tuple[LoadProblem, ...] = ()

    def problem_for(self, platform: str) -> LoadProblem | None:
        """The load problem of the entry point named ``platform``, if it failed."""
        return next((p for p in self.problems if p.name == platform), None)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _check_factory(obj: Any) -> str | None:
    """Why ``obj`` is not a usable factory, or None if it is."""
    platform = getattr(obj, "platform", None)
    if not isinstance(platform, str) or not platform:
        return "it has no 'platform' name (a non-empty str class attribute)"
    model = getattr(obj, "config_model", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return "its 'config_model' is not a pydantic model class"
    if not callable(getattr(obj, "create", None)):
        return "it has no 'create(config, context)' method"
    return None


def _load_one(ep: EntryPoint) -> tuple[str, ConnectorFactory]:
    factory = _instance(ep)
    reason = _check_factory(factory)
    if reason is not None:
        raise TypeError(f"{ep.value} is not a connector factory: {reason}")
    return factory.platform, cast("ConnectorFactory", factory)


def _instance(ep: EntryPoint) -> Any:
    """What the entry point names: a factory class is instantiated with no arguments."""
    loaded = ep.load()
    return loaded() if isinstance(loaded, type) else loaded


def _load_group(group: str, eps: Iterable[EntryPoint] | None,
                load: Callable[[EntryPoint], tuple[str, T]]) -> tuple[dict[str, T],
                                                                     tuple[LoadProblem, ...]]:
    """Every plugin of entry point ``group`` (or ``eps``), by the name ``load`` gives it, and
    the entry points that failed to load or named a plugin another one already provides
    (never raised: one broken plugin must not take the others down)."""
    candidates = list(entry_points(group=group) if eps is None else eps)
    found: dict[str, T] = {}
    sources: dict[str, str] = {}
    problems: list[LoadProblem] = []
    for ep in sorted(candidates, key=lambda e: (e.name, e.value)):
        try:
            name, plugin = load(ep)
        except Exception as exc:  # noqa: BLE001 - any plugin bug is reported, never fatal to the rest
            problems.append(LoadProblem(ep.name, ep.value, _describe(exc)))
            continue
        previous = sources.get(name)
        if previous is not None and previous != ep.value:
            problems.append(LoadProblem(ep.name, ep.value,
                                        f"{name!r} is already provided by {previous}"))
            continue
        found[name] = plugin
        sources[name] = ep.value
    return found, tuple(problems)


def discover(eps: Iterable[EntryPoint] | None = None) -> Discovery:
    """Load every connector factory registered in ``robot.connectors`` (or in ``eps``)."""
    factories, problems = _load_group(ENTRY_POINT_GROUP, eps, _load_one)
    return Discovery(factories=factories, problems=problems)


def load_factories() -> dict[str, ConnectorFactory]:
    """The registered connector factories by platform; load failures are logged, not raised."""
    found = discover()
    for problem in found.problems:
        log.warning(
            "connector_load_failed",
            connector=problem.name,
            target=problem.target,
            error=problem.error,
        )
    return dict(found.factories)


def _load_supplier(ep: EntryPoint) -> tuple[str, Any]:
    factory = _instance(ep)
    name = getattr(factory, "supplier", None)
    if not isinstance(name, str) or not name or not callable(getattr(factory, "create", None)):
        raise TypeError(f"{ep.value} is not a supplier factory: it needs a 'supplier' "
                        "name and a 'create(config, context)' method")
    return name, factory


def discover_suppliers(eps: Iterable[EntryPoint] | None = None) -> tuple[
        dict[str, Any], tuple[LoadProblem, ...]]:
    """Every supplier factory registered in ``robot.suppliers`` (or in ``eps``), by supplier
    name, and the entry points that failed to load."""
    return _load_group(SUPPLIER_ENTRY_POINT_GROUP, eps, _load_supplier)


def _load_notifier(ep: EntryPoint) -> tuple[str, NotifierFactory]:
    factory = _instance(ep)
    if not isinstance(factory, NotifierFactory) or not factory.notifier:
        raise TypeError(f"{ep.value} is not a notifier factory: it needs 'notifier', "
                        "'channel', 'config_model' and 'create(config, shop)'")
    return factory.notifier, factory


def discover_notifiers(eps: Iterable[EntryPoint] | None = None) -> tuple[
        dict[str, NotifierFactory], tuple[LoadProblem, ...]]:
    """Every buyer-notifier factory registered in ``robot.notifiers`` (or in ``eps``), by
    notifier name, and the entry points that failed to load."""
    return _load_group(NOTIFIER_ENTRY_POINT_GROUP, eps, _load_notifier)
