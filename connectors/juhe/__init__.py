"""Juhe (聚合数据) mobile top-up, reselling Ofpay: a supplier plugin (entry point ``juhe`` in
``robot.suppliers``).

Juhe sells top-ups only (no cards): its catalogue is the mobile top-up face values
(``mobile-10`` ... ``mobile-500``), each priced per number by Juhe (``telquery``). The
protocol, signatures and codes are in :mod:`connectors.juhe.protocol`; the client in
:mod:`connectors.juhe.client`; the fake (``robot fake juhe``) in :mod:`connectors.juhe.fake`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, ClassVar, cast

from pydantic import BaseModel, Field, field_validator

from connectors.base import ShopContext
from connectors.config import PlatformConfig, Secret
from connectors.errors import ConfigError
from connectors.juhe import protocol
from connectors.juhe.client import JuheSupplier

if TYPE_CHECKING:
    import click

    from connectors.testing.harness import SupplierHarness


class JuheConfig(PlatformConfig):
    """``openid`` (个人中心 OpenID) and ``key`` (the mobile top-up AppKey) are secrets;
    ``face_values``: the face values (yuan) offered; ``probe_phone``: the number the
    catalogue's prices are asked for (Juhe prices per number)."""

    openid: Secret
    key: Secret
    base_url: str = protocol.DEFAULT_BASE_URL
    face_values: list[int] = Field(default_factory=lambda: list(protocol.FACE_VALUES))
    probe_phone: str = "13800138000"
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("face_values")
    @classmethod
    def _known_faces(cls, value: list[int]) -> list[int]:
        unknown = sorted(set(value) - set(protocol.FACE_VALUES))
        if unknown or not value:
            raise ValueError(f"face values are some of {list(protocol.FACE_VALUES)}")
        return value

    @field_validator("probe_phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        if not protocol.PHONE.fullmatch(value):
            raise ValueError("an 11-digit mainland mobile number")
        return value


class JuheFactory:
    """The entry point ``juhe`` in ``robot.suppliers``."""

    supplier: ClassVar[str] = "juhe"
    config_model: ClassVar[type[BaseModel]] = JuheConfig

    def create(self, config: BaseModel, context: ShopContext) -> JuheSupplier:
        if not isinstance(config, JuheConfig):
            raise ConfigError(f"supplier juhe of {context.shop}: config is not a JuheConfig")
        return JuheSupplier(openid=config.openid.get_secret_value(),
                            key=config.key.get_secret_value(), base_url=config.base_url,
                            face_values=config.face_values, probe_phone=config.probe_phone,
                            timeout=config.timeout_seconds)

    def fake_command(self) -> click.Command:
        """``robot fake juhe``."""
        from connectors.juhe.fakecli import juhe_fake

        return juhe_fake

    def contract_harness(self) -> AbstractContextManager[SupplierHarness]:
        """The supplier contract suite's harness (the fake over loopback HTTP)."""
        from connectors.juhe.harness import make_harness

        return cast("AbstractContextManager[SupplierHarness]", make_harness())


__all__ = ["JuheConfig", "JuheFactory", "JuheSupplier"]
