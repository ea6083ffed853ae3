"""A process that asks for restock purchases of one pool (tests/test_restock_multiprocess.py):
started several times at once on one database, they must not overspend the budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robot import audit
from robot.config.restock import RestockRule
from robot.db import make_engine
from robot.restock import Refused, request


def ask(url: str, key_file: str, rule: dict[str, Any], tries: int, barrier: Any) -> int:
    """Wait for every process, then ask ``tries`` times; how many were granted."""
    audit.bind_default(lambda: audit.Seal.from_key_file(Path(key_file)))
    engine = make_engine(url)
    parsed = RestockRule.model_validate(rule)
    granted = 0
    barrier.wait()
    for _ in range(tries):
        try:
            request(engine, "shared", parsed, why="race", actor="process")
            granted += 1
        except Refused:
            pass
    engine.dispose()
    return granted
