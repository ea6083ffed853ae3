"""The ``platform_config`` section of a WeChat mini-program shop file.

Validated once at load. It must never print a secret: the mini-program's ``app_secret``, the
WeChat Pay ``apiv3_key``, the merchant-backend ``backend_secret`` and the WeChat Pay
verification keys are :data:`robot.config.Secret` strings (``${ENV}``, ``file:path`` or
literal, shown as stars).

Which SKUs a WeChat Pay payment bought is known only to the mini-program's own backend
(PLATFORMS.md §4.1): the robot reads them from the transaction's ``attach`` (see
:mod:`connectors.wechat.lines`), from ``sku_rules`` matched against ``out_trade_no``, or from a
signed post of the merchant backend (``backend_secret``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.config import PlatformConfig, Secret
from connectors.errors import ConfigError
from connectors.wechat.crypto import load_public_key


class SkuRule(BaseModel):
    """``out_trade_no`` starting with ``prefix`` bought ``sku``.

    The quantity is ``quantity``, or, when ``unit_price_cents`` is set, the paid total divided
    by it (which must divide exactly).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    prefix: str = Field(min_length=1)
    sku: str = Field(min_length=1)
    quantity: int = Field(default=1, ge=1, le=10_000)
    unit_price_cents: int | None = Field(default=None, ge=1)
    title: str = ""


class WechatConfig(PlatformConfig):
    """Credentials, verification keys and SKU rules for one mini-program shop."""

    #: The mini-program's AppID and AppSecret (for ``cgi-bin/stable_token``).
    appid: str = Field(min_length=1)
    app_secret: Secret
    #: The WeChat Pay merchant id (``mchid``) payments are made to.
    mchid: str = Field(min_length=1)
    #: The APIv3 key (32 characters) that decrypts notification resources.
    apiv3_key: Secret
    #: ``Wechatpay-Serial`` → PEM public key or platform certificate (a WeChat Pay public key
    #: id ``PUB_KEY_ID_…`` or a certificate serial). ``file:path`` reads the PEM file.
    wechatpay_public_keys: dict[str, Secret] = Field(min_length=1)
    #: Shared secret of the merchant backend's signed order posts; None disables them.
    backend_secret: Secret | None = None
    #: ``out_trade_no`` prefix → SKU, used when ``attach`` names no SKU (first match wins).
    sku_rules: list[SkuRule] = Field(default_factory=list)
    #: A payment whose SKUs cannot be resolved: ``hold`` takes it in with an unmapped line
    #: (held for a human, per the shop's ``unmapped`` rule); ``backend`` ignores the payment
    #: and waits for the merchant backend's signed post of its lines.
    unresolved_lines: Literal["hold", "backend"] = "hold"
    base_url: str = "https://api.weixin.qq.com"
    #: Refuse pushes whose timestamp is further than this from now (WeChat Pay SDKs: 5 min).
    max_push_age_seconds: int = Field(default=300, ge=30, le=3600)
    #: Renew the access token this long before it expires.
    token_refresh_margin_seconds: int = Field(default=300, ge=0, le=3600)
    #: When ``upload_shipping_info`` does not find the payment yet (10060001): retry after.
    not_indexed_retry_seconds: float = Field(default=30, gt=0, le=3600)
    timeout_seconds: float = Field(default=4, gt=0, le=60)

    @field_validator("wechatpay_public_keys")
    @classmethod
    def _keys_load(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for serial, pem in keys.items():
            try:
                load_public_key(pem.get_secret_value(), serial=serial)
            except ConfigError as exc:
                raise ValueError(exc.message) from None
        return keys

    @model_validator(mode="after")
    def _consistent(self) -> WechatConfig:
        if len(self.apiv3_key.get_secret_value().encode("utf-8")) != 32:
            raise ValueError("apiv3_key must be the 32-character WeChat Pay APIv3 key")
        if self.unresolved_lines == "backend" and self.backend_secret is None:
            raise ValueError("unresolved_lines: backend needs backend_secret")
        return self
