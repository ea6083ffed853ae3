"""The chaos suite, small: real robot processes under kills, lost database sessions, a
database restart and misbehaving platforms keep every invariant of DESIGN.md.

``scripts/chaos --orders 10000 --minutes 10`` is the long run of the same harness.
"""

from __future__ import annotations

import pytest

from tests.chaos.harness import ChaosPlan, ChaosReport, run
from tests.conftest import _server_urls, backends


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", [b for b in backends() if b != "sqlite"])
def test_several_robots_on_a_server_database_keep_every_invariant(backend: str) -> None:
    """Three robots on PostgreSQL/MariaDB, SIGKILLed every few seconds, their sessions
    terminated, the server (the machine's own) restarted once and up again at the end, the
    platforms faulty: no violation."""
    report = run(ChaosPlan(backend=backend, server_url=_server_urls()[backend], robots=3,
                           orders=200, seconds=28, say=print))
    print("\n".join(report.lines()))
    assert report.kills >= 4 and report.session_kills >= 4 and report.db_restarts == 1
    assert sum(report.faults.values()) >= 10
    assert report.shipments_applied >= report.orders // 2
    _assert_the_evidence_was_read(report)
    assert report.violations == []


@pytest.mark.timeout(600)
def test_one_robot_on_sqlite_killed_again_and_again_keeps_every_invariant() -> None:
    """SQLite allows one robot: it is SIGKILLed and restarted repeatedly under faulty
    platforms: no violation."""
    report = run(ChaosPlan(backend="sqlite", robots=1, orders=120, seconds=24, kill_every=5,
                           say=print))
    print("\n".join(report.lines()))
    assert report.kills >= 3 and sum(report.faults.values()) >= 10
    assert report.shipments_applied >= report.orders // 2
    _assert_the_evidence_was_read(report)
    assert report.violations == []


def _assert_the_evidence_was_read(report: ChaosReport) -> None:
    """The stronger checks had something to judge (a check over no records passes idly)."""
    assert report.ship_calls >= report.shipments_applied - report.faults["already_shipped_by_hand"]
    assert report.memo_calls > 0 and report.plaintexts_compared >= report.shipped
    assert report.shipped >= report.shipped_minimum > 0
