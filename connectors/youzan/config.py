"""The ``platform_config`` section of a Youzan Cloud (有赞云) shop file.

Validated once at load. It must never print a secret: ``client_secret`` and the optional
tool-app ``auth_code`` / ``refresh_token`` are :data:`robot.config.Secret` strings
(``${ENV}``, ``file:path`` or literal, shown as stars).

Two kinds of app (PLATFORMS.md §3.1): a *self-use* app (自用型) gets its token by "silent"
authorization with ``grant_id`` = the shop's ``kdt_id``; a *tool* app (工具型) starts from an
authorization ``code`` (single use, 2 minutes) or a ``refresh_token`` (28 days), after which the
robot keeps the rotating refresh token in its encrypted store.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from connectors.config import PlatformConfig, Secret


class YouzanConfig(PlatformConfig):
    """Credentials, polling and push rules for one Youzan shop."""

    client_id: str = Field(min_length=1)
    client_secret: Secret
    #: The shop's ``kdt_id`` (the silent authorization's ``grant_id``).
    grant_id: str = Field(min_length=1)
    authorize_type: Literal["silent", "authorization_code"] = "silent"
    #: Tool apps: the one-time authorization code from the merchant's consent (used once).
    auth_code: Secret | None = None
    #: Tool apps: a refresh token obtained elsewhere (used when no stored one exists).
    refresh_token: Secret | None = None
    base_url: str = "https://open.youzanyun.com"
    #: Refresh the access token this long before its absolute ``expires``.
    token_refresh_margin_seconds: int = Field(default=3600, ge=0, le=86400)
    #: Versions of the order APIs (``youzan.trades.sold.get`` 4.0.x, ``youzan.trade.get``).
    trades_sold_get_version: str = "4.0.4"
    trade_get_version: str = "4.0.2"
    #: Length of one ``update`` window when polling.
    window_minutes: int = Field(default=60, ge=1, le=24 * 60)
    #: How far behind "now" a window ends: Youzan's list APIs lag (doc: poll > 30 s late).
    lag_seconds: int = Field(default=60, ge=0, le=3600)
    #: How much consecutive windows overlap (duplicates are harmless; gaps are not).
    overlap_seconds: int = Field(default=300, ge=0)
    #: Where the very first poll starts, counted back from now.
    initial_lookback_minutes: int = Field(default=60, ge=1, le=60 * 24 * 90)
    page_size: int = Field(default=50, ge=1, le=100)
    timeout_seconds: float = Field(default=10, gt=0, le=300)

    @model_validator(mode="after")
    def _consistent(self) -> YouzanConfig:
        if self.overlap_seconds >= self.window_minutes * 60:
            raise ValueError("overlap_seconds must be shorter than window_minutes")
        if self.initial_lookback_minutes * 60 <= self.lag_seconds:
            raise ValueError("initial_lookback_minutes must reach further back than lag_seconds")
        if (self.authorize_type == "authorization_code"
                and self.auth_code is None and self.refresh_token is None):
            raise ValueError("a tool app (authorize_type: authorization_code) needs auth_code "
                             "or refresh_token")
        return self
