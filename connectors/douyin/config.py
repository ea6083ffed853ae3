"""The ``platform_config`` section of a Douyin shop (抖店) file.

Validated once at load; ``app_secret`` is a :data:`connectors.config.Secret` (``${ENV}``,
``file:path`` or literal, shown as stars). A self-use app (自用型, ``app_type: self``) gets
its token with ``token.create`` / ``grant_type=authorization_self`` for ``shop_id``; a tool
app (工具型, ``app_type: tool``) trades the one-time ``auth_code`` its authorization redirect
gave (``grant_type=authorization_code``) once, then lives on refresh tokens. The robot keeps
the token and its refresh token in its encrypted per-shop store.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from connectors.config import PlatformConfig, Secret


class DouyinConfig(PlatformConfig):
    """Credentials, polling and push rules for one Douyin shop."""

    app_key: str = Field(min_length=1)
    app_secret: Secret
    #: The shop's id (``shop_id``): the self-use token's grant, and pushes must name it.
    shop_id: str = Field(min_length=1)
    #: ``self``: a self-use app (自用型); ``tool``: a tool app (工具型) from the service market.
    app_type: Literal["self", "tool"] = "self"
    #: A tool app's one-time authorization code (the ``code`` of the authorization redirect),
    #: traded for the first token; a new one is needed only if the refresh token lapses.
    auth_code: Secret | None = None
    base_url: str = "https://openapi-fxg.jinritemai.com"
    #: Renew the access token this long before it expires (the official SDK: 3000 s).
    token_refresh_margin_seconds: int = Field(default=3000, ge=0, le=86400)
    #: Length of one ``update_time`` window when polling.
    window_minutes: int = Field(default=60, ge=1, le=24 * 60)
    #: How far behind "now" a window ends (list APIs lag behind writes).
    lag_seconds: int = Field(default=60, ge=0, le=3600)
    #: How much consecutive windows overlap (duplicates are harmless; gaps are not).
    overlap_seconds: int = Field(default=300, ge=0)
    #: Where the very first poll starts, counted back from now (Douyin lists 90 days).
    initial_lookback_minutes: int = Field(default=60, ge=1, le=60 * 24 * 90)
    page_size: int = Field(default=50, ge=1, le=100)
    timeout_seconds: float = Field(default=10, gt=0, le=300)

    @model_validator(mode="after")
    def _consistent(self) -> DouyinConfig:
        if self.app_type == "tool" and self.auth_code is None:
            raise ValueError("app_type tool needs auth_code: the code of the shop's "
                             "authorization of the app")
        if self.overlap_seconds >= self.window_minutes * 60:
            raise ValueError("overlap_seconds must be shorter than window_minutes")
        if self.initial_lookback_minutes * 60 <= self.lag_seconds:
            raise ValueError("initial_lookback_minutes must reach further back than lag_seconds")
        return self
