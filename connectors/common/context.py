"""A :class:`connectors.base.ShopContext` kept in memory: for harnesses, tests and fakes'
demos, and for a connector built without the robot's durable context. Nothing survives a
restart. Part of the ground floor: it imports nothing from the robot.
"""

from __future__ import annotations


class MemoryContext:
    """A ShopContext keeping secrets in a dict (shared by connectors given the same one);
    ``stores`` counts the writes."""

    def __init__(self, shop: str) -> None:
        self._shop = shop
        self.secrets: dict[str, str] = {}
        self.stores = 0

    @property
    def shop(self) -> str:
        return self._shop

    def load_secret(self, name: str) -> str | None:
        return self.secrets.get(name)

    def store_secret(self, name: str, value: str) -> None:
        self.stores += 1
        self.secrets[name] = value
