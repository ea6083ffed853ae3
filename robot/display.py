"""How figures look on screen, in CSV and in JSON: times, money and durations, one helper each.

Money is stored as integer cents everywhere; people read yuan. :func:`yuan` turns cents into
``"29.90"`` (a string: exact, with both decimals, never a binary float), and
:func:`with_yuan` adds that yuan figure beside every ``…_cents`` member of a JSON document
(``total_cents: 2990`` gains ``total: "29.90"``), so a reader gets yuan and a program keeps
the exact cents. Times are stored as naive UTC and shown in the robot's ``timezone:`` (the
shops' zone, Asia/Shanghai unless the robot file says otherwise), to the second: on screen
through :func:`format_time` (``2026-12-06 01:30:00``), in JSON through
:func:`format_time_json` / :func:`json_times` (``2026-12-06T01:30:00+08:00``). Durations
are shown the way a config file writes them (``30d``, ``5m``, ``200ms``).

This module only formats; it never reads the database and never sees a code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, tzinfo
from typing import Any

from robot.clock import to_zone

CENTS_SUFFIX = "_cents"
_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0))


def yuan(cents: int | None) -> str:
    """``2990`` → ``"29.90"``; ``-5`` → ``"-0.05"``; None → ``""``."""
    if cents is None:
        return ""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(int(cents)), 100)
    return f"{sign}{whole}.{part:02d}"


def with_yuan(data: Any) -> Any:
    """``data`` with a yuan member beside every ``x_cents`` member (``x``), at any depth.

    When ``x`` is taken already (``cancelled`` counts orders beside ``cancelled_cents``),
    the yuan member is called ``x_yuan``.
    """
    if isinstance(data, Mapping):
        out: dict[Any, Any] = {}
        for key, value in data.items():
            out[key] = with_yuan(value)
            if isinstance(key, str) and key.endswith(CENTS_SUFFIX) and (
                    value is None or (isinstance(value, int) and not isinstance(value, bool))):
                out[yuan_name(key, data)] = yuan(value) if value is not None else None
        return out
    if isinstance(data, list | tuple):
        return [with_yuan(v) for v in data]
    return data


def yuan_name(cents_key: str, taken: Mapping[Any, Any] | Sequence[str] = ()) -> str:
    """The yuan member beside ``cents_key``: ``total_cents`` → ``total`` (``x_yuan`` when
    ``x`` is in ``taken``)."""
    plain = cents_key[: -len(CENTS_SUFFIX)] if cents_key.endswith(CENTS_SUFFIX) else cents_key
    return f"{plain}_yuan" if not plain or plain in taken else plain


def format_time(value: datetime | None, *, zone: tzinfo | None = None, empty: str = "") -> str:
    """A stored time for people, to the second: ``2026-01-02 03:04:05``.

    Stored times are naive UTC; with ``zone`` the time is shown in that zone instead.
    """
    if value is None:
        return empty
    if zone is not None:
        value = to_zone(value, zone)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def format_minute(value: datetime, *, zone: tzinfo | None = None) -> str:
    """A stored time for a title or a range, to the minute: ``2026-01-02 03:04``."""
    if zone is not None:
        value = to_zone(value, zone)
    return value.strftime("%Y-%m-%d %H:%M")


def format_time_json(value: datetime | None, zone: tzinfo | None = None) -> str | None:
    """A stored time for ``--json``: ISO 8601 with its offset, whole seconds, in ``zone``
    (UTC when None): ``2026-12-06T01:30:00+08:00``."""
    if value is None:
        return None
    return to_zone(value, zone or UTC).replace(microsecond=0).isoformat()


def json_times(data: Any, zone: tzinfo | None = None) -> Any:
    """``data`` with every datetime in it (at any depth) as :func:`format_time_json` writes
    it, and every date as ``YYYY-MM-DD``."""
    if isinstance(data, datetime):
        return format_time_json(data, zone)
    if isinstance(data, date):
        return data.isoformat()
    if isinstance(data, Mapping):
        return {k: json_times(v, zone) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [json_times(v, zone) for v in data]
    return data


def zone_name(zone: tzinfo | None) -> str:
    """How a table header names the zone its times are in (``Asia/Shanghai``)."""
    if zone is None:
        return "UTC"
    return str(getattr(zone, "key", None) or zone.tzname(None) or zone)


def format_span(seconds: float | None, *, empty: str = "") -> str:
    """A measured time span for people: ``45s``, ``12.5m``, ``3.5h`` (``empty`` for none)."""
    if seconds is None:
        return empty
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def format_duration(seconds: float) -> str:
    """Seconds as a config file writes them: ``2592000`` → ``30d``, ``90`` → ``90s``,
    ``5400`` → ``90m``, ``0.2`` → ``200ms`` (the largest unit that divides it evenly)."""
    for unit, size in _UNITS:
        count = seconds / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    millis = seconds * 1000
    if abs(millis - round(millis)) < 1e-6:
        return f"{round(millis)}ms"
    return f"{seconds:g}s"
