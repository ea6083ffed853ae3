"""The ``platform_config`` section of a Pinduoduo shop file.

Validated once at load; it must never print a secret (``client_secret`` and the seed tokens
are :data:`robot.config.Secret` strings: ``${ENV}``, ``file:path`` or literal, shown as stars).
Refreshed tokens are not kept here but in the shop's encrypted secret store (ShopContext).
"""

from __future__ import annotations

import string
from typing import Literal

from pydantic import Field, field_validator, model_validator

from connectors.config import PlatformConfig, Secret

#: Placeholders a tracking-number rule may use (never anything derived from a code).
TRACKING_PLACEHOLDERS = frozenset({"order_sn", "order_digits"})


class PinduoduoConfig(PlatformConfig):
    """Credentials, polling and shipping rules for one Pinduoduo shop."""

    client_id: str = Field(min_length=1)
    client_secret: Secret
    #: The merchant's tokens from POP's OAuth. Either both tokens, or an authorization
    #: ``code`` that the connector exchanges once with ``pdd.pop.auth.token.create``.
    access_token: Secret | None = None
    refresh_token: Secret | None = None
    code: Secret | None = None
    gateway: str = "https://gw-api.pinduoduo.com/api/router"
    #: ``json`` posts one JSON object (current Java SDK); ``form`` posts urlencoded fields.
    request_format: Literal["json", "form"] = "json"
    #: Refresh the access token this long before POP says it expires.
    refresh_margin_seconds: int = Field(default=600, ge=0, le=86400)
    #: Length of one increment window; POP allows at most 30 minutes.
    window_minutes: int = Field(default=30, ge=1, le=30)
    #: How far behind "now" a window must end; POP's doc advises at least 3 minutes.
    lag_seconds: int = Field(default=180, ge=0, le=3600)
    #: How much consecutive windows overlap (duplicates are harmless; gaps are not).
    overlap_seconds: int = Field(default=300, ge=0)
    #: Where the very first poll starts, counted back from now.
    initial_lookback_minutes: int = Field(default=60, ge=1, le=60 * 24 * 90)
    page_size: int = Field(default=100, ge=1, le=100)
    timeout_seconds: float = Field(default=15, gt=0, le=300)
    #: Calls retried inside the connector on 52101-52103 / 70031 before giving up to the core.
    max_retries: int = Field(default=3, ge=0, le=10)
    backoff_seconds: float = Field(default=0.5, ge=0, le=60)
    #: ``pdd.logistics.online.send``: the company id (from ``pdd.logistics.companies.get``)
    #: the merchant's category accepts for virtual goods, and how the tracking number is made.
    logistics_id: int = Field(ge=1)
    tracking_number: str = "{order_sn}"
    #: Optional colour flag on the seller memo (1 red, 2 yellow, 3 green, 4 blue, 5 purple).
    memo_tag: int | None = Field(default=None, ge=1, le=5)

    @field_validator("tracking_number")
    @classmethod
    def _tracking_placeholders(cls, value: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"bad tracking_number rule: {exc}") from exc
        unknown = sorted(names - TRACKING_PLACEHOLDERS)
        if unknown:
            allowed = ", ".join("{" + n + "}" for n in sorted(TRACKING_PLACEHOLDERS))
            raise ValueError(
                f"unknown placeholder {unknown[0]!r} in tracking_number; use {allowed}")
        if not value.strip():
            raise ValueError("tracking_number rule is empty")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PinduoduoConfig:
        if self.overlap_seconds >= self.window_minutes * 60:
            raise ValueError("overlap_seconds must be shorter than window_minutes")
        if self.initial_lookback_minutes * 60 <= self.lag_seconds:
            raise ValueError("initial_lookback_minutes must reach further back than lag_seconds")
        if self.code is None and self.refresh_token is None and self.access_token is None:
            raise ValueError("give access_token and refresh_token, or an authorization code")
        return self

    def tracking_number_for(self, order_sn: str) -> str:
        """The tracking number this shop's rule gives ``order_sn``."""
        digits = "".join(ch for ch in order_sn if ch.isdigit())
        return self.tracking_number.format(order_sn=order_sn, order_digits=digits)
