"""The robot file's ``suppliers:``: one entry per merchant account with a supplier.

::

    suppliers:
      fulu-main:               # the name shop mappings use (items[].suppliers[].supplier)
        plugin: fulu           # an entry point in robot.suppliers (fulu, juhe, memory, ...)
        config:                # checked by the plugin's own model; secrets as ${ENV} / file:
          app_key: ...
          app_secret: ${FULU_APP_SECRET}
        low_balance: 200       # yuan: alert below this balance (optional)

Credentials are :data:`connectors.config.Secret` values in the plugin's model, exactly like a
shop's ``platform_config``, and never print.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SerializeAsAny

from robot.config.types import ShopName, StrictModel, Yuan


class SupplierEntry(StrictModel):
    """One supplier account as written; ``config`` is checked by the plugin."""

    plugin: str = Field(min_length=1, max_length=64)
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)
    low_balance: Yuan | None = None


class SupplierConfig(StrictModel):
    """One supplier account, resolved: its plugin's validated config."""

    name: ShopName
    plugin: str
    enabled: bool = True
    config: SerializeAsAny[BaseModel]
    low_balance_cents: int | None = None
