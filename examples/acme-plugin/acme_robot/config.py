"""An Acme shop's ``platform_config``, on the ground floor's config base."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field

from connectors.config import PlatformConfig, Secret


class AcmeConfig(PlatformConfig):
    """The API's address, the shop's API key and the secret Acme signs its pushes with."""

    base_url: AnyHttpUrl
    api_key: Secret
    push_secret: Secret
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    #: How far back the first poll looks.
    initial_lookback_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
