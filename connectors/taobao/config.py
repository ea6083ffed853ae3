"""The ``platform_config`` section of a Taobao/Tmall shop file.

Validated once at load; it must never print a secret (``app_secret`` and ``session`` are
:data:`robot.config.Secret` strings: ``${ENV}``, ``file:path`` or literal, shown as stars).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.config import Secret  # a SecretStr that resolves ${ENV} and file:path


class TaobaoConfig(BaseModel):
    """Credentials and polling rules for one Taobao/Tmall shop."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_key: str = Field(min_length=1)
    app_secret: Secret
    #: The seller's access token ("session key") from TOP's OAuth.
    session: Secret
    sign_method: Literal["md5", "hmac", "hmac-sha256"] = "hmac-sha256"
    gateway: str = "https://eco.taobao.com/router/rest"
    #: Length of one ``trades.sold.increment.get`` window; TOP advises at most 30 minutes.
    window_minutes: int = Field(default=30, ge=1, le=30)
    #: How far behind "now" a window must end, so late-indexed trades are not skipped.
    lag_seconds: int = Field(default=60, ge=0, le=3600)
    #: How much consecutive windows overlap (duplicates are harmless; gaps are not).
    overlap_seconds: int = Field(default=300, ge=0)
    #: Where the very first poll starts, counted back from now.
    initial_lookback_minutes: int = Field(default=60, ge=1, le=60 * 24 * 90)
    page_size: int = Field(default=50, ge=1, le=100)
    use_tmc: bool = False
    tmc_group: str = Field(default="default", min_length=1)
    timeout_seconds: float = Field(default=15, gt=0, le=300)

    @model_validator(mode="after")
    def _overlap_shorter_than_window(self) -> TaobaoConfig:
        if self.overlap_seconds >= self.window_minutes * 60:
            raise ValueError("overlap_seconds must be shorter than window_minutes")
        if self.initial_lookback_minutes * 60 <= self.lag_seconds:
            raise ValueError("initial_lookback_minutes must reach further back than lag_seconds")
        return self
