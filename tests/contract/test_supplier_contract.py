"""The supplier contract (:mod:`connectors.testing.supplier`), run over every installed
supplier plugin that brings a harness (entry points ``robot.suppliers``)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest

from connectors.supplier import SUPPLIER_ENTRY_POINT_GROUP, SupplierFactory
from connectors.testing.harness import SupplierHarness
from connectors.testing.supplier import SupplierContract


def _factories() -> dict[str, Any]:
    found = {}
    for ep in entry_points(group=SUPPLIER_ENTRY_POINT_GROUP):
        factory = ep.load()()
        assert isinstance(factory, SupplierFactory), f"{ep.value} is not a supplier factory"
        if hasattr(factory, "contract_harness"):
            found[ep.name] = factory
    return found


FACTORIES = _factories()


def test_the_in_memory_supplier_is_installed_with_a_harness() -> None:
    """The built-in in-memory supplier loads through robot.suppliers and brings a harness."""
    assert "memory" in FACTORIES


class TestSupplierContract(SupplierContract):
    """Every installed supplier keeps the supplier contract."""

    @pytest.fixture(params=sorted(FACTORIES))
    def harness(self, request: pytest.FixtureRequest) -> Iterator[SupplierHarness]:
        with FACTORIES[request.param].contract_harness() as h:
            assert isinstance(h, SupplierHarness)
            yield h
