"""The config section of a Fulu (福禄开放平台) supplier: the app's key and secret, the gateway.

The secret signs every request and is the AES-256 key of the card codes Fulu sends, so it must
be 32 bytes (Fulu issues 32 hex characters). It is a :data:`connectors.config.Secret`
(``${ENV}``, ``file:path`` or literal; prints as stars).
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from connectors.config import PlatformConfig, Secret

PRODUCTION_GATEWAY = "https://openapi.fulu.com/api/getway"


class FuluConfig(PlatformConfig):
    """Credentials and limits for one Fulu merchant account."""

    app_key: str = Field(min_length=1, max_length=200)
    app_secret: Secret
    gateway: str = PRODUCTION_GATEWAY
    timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    #: A callback whose finish time is older than this is refused (the query still works).
    callback_max_age_seconds: int = Field(default=12 * 3600, ge=60, le=7 * 86400)

    @field_validator("app_secret")
    @classmethod
    def _aes_key(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().encode("utf-8")) != 32:
            raise ValueError("Fulu's app_secret is 32 characters (it is also the card codes' "
                             "AES-256 key)")
        return value

    @field_validator("gateway")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("gateway: an http(s) URL such as " + PRODUCTION_GATEWAY)
        return value
