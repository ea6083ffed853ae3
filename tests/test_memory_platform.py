"""The memory platform's state file survives a writer that dies mid-write: the robots under
test are SIGKILLed at any instant, and a truncated file would read as an empty platform
(every order and shipment forgotten, the poll cursor pointing past the new orders)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connectors.memory import MemoryPlatform
from tests.factories import paid_order


def test_a_write_cut_off_before_it_lands_leaves_the_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process that dies while writing the state leaves the last complete state behind."""
    state = tmp_path / "platform.json"
    platform = MemoryPlatform(state)
    platform.put_order(paid_order("A1", ("s1", 1)))
    assert platform.ship("A1").value == "shipped"
    _, head_before = platform.changed_after(0, "poll")

    def die(*_args: object) -> None:
        raise SystemExit("killed before the rename")

    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(SystemExit):
        platform.put_order(paid_order("A2", ("s1", 1)))
    monkeypatch.undo()

    again = MemoryPlatform(state)  # another process opening the same platform
    assert again.all_shipments() == {"A1": 1}
    assert again.order("A1").platform_order_id == "A1"
    with pytest.raises(KeyError):
        again.order("A2")
    changed, head = again.changed_after(0, "poll")
    assert [o.platform_order_id for o in changed] == ["A1"] and head == head_before


def test_reads_do_not_rewrite_the_state_file(tmp_path: Path) -> None:
    """Only a change replaces the file (reads under load must not churn the disk)."""
    state = tmp_path / "platform.json"
    platform = MemoryPlatform(state)
    platform.put_order(paid_order("A1", ("s1", 1)))
    before = state.stat().st_ino
    platform.all_shipments()
    platform.order("A1")
    assert state.stat().st_ino == before
    platform.put_order(paid_order("A2", ("s1", 1)))
    assert state.stat().st_ino != before
