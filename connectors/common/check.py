"""``robot shops test`` verdicts from checks that run in order and stop at the first failure.

A connector's ``check`` knows which named step failed (say "app key and secret" when the
platform refuses the signature); the steps before it passed and the later ones were not
reached. This module must never call the platform itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.base import CheckReport


def staged_report(names: Sequence[str], failed_at: int, detail: str) -> CheckReport:
    """Checks before ``failed_at`` passed, that one failed, later ones were not reached.

    ``failed_at >= len(names)`` means every check passed (``detail`` is then unused).
    """
    checks: list[tuple[str, bool, str]] = []
    for index, name in enumerate(names):
        if index < failed_at:
            checks.append((name, True, "ok"))
        elif index == failed_at:
            checks.append((name, False, detail))
        else:
            checks.append((name, False, "not checked"))
    return CheckReport(ok=failed_at >= len(names), checks=tuple(checks))
