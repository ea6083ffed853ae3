"""Every row of every table of the robot's schema, so "nothing changed" is one assertion::

    before = snapshot(engine)
    ...  # the bad input, refused
    assert snapshot(engine) == before

Rows are compared as written (ids, timestamps, ciphertexts included) and sorted by ``repr``
so the order a backend returns them in does not matter. ``id_blocks`` is left out: a refused
import may have reserved code ids, which are a gap, never data.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from robot.schema import metadata

Snapshot = dict[str, list[tuple[Any, ...]]]
NOT_DATA = frozenset({"id_blocks"})


def snapshot(engine: Engine) -> Snapshot:
    """Every row of every table in ``robot.schema.metadata``, keyed by table name."""
    with engine.connect() as conn:
        return {t.name: sorted((tuple(r) for r in conn.execute(select(t))), key=repr)
                for t in metadata.sorted_tables if t.name not in NOT_DATA}
