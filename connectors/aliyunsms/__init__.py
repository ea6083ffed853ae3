"""Buyer SMS through Aliyun SMS (阿里云短信服务): a notifier plugin (entry point
``aliyun_sms`` in ``robot.notifiers``).

A shop's ``notify.sms.config``::

    access_key_id: ${ALIYUN_SMS_KEY_ID}
    access_key_secret: ${ALIYUN_SMS_KEY_SECRET}
    sign_name: 某某小店             # the approved signature (签名)
    templates:                     # the approved template code per language
      zh: SMS_100000001            # e.g. 您的订单${order}已发货，请在此领取：${link}
      en: SMS_100000002

The template's variables are the shop's ``notify.sms.params`` (see the README). The
protocol is in :mod:`connectors.aliyunsms.protocol`; the fake (``robot fake aliyun-sms``) in
:mod:`connectors.aliyunsms.fake`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, Field, field_validator

from connectors.aliyunsms import protocol
from connectors.aliyunsms.client import AliyunSmsNotifier
from connectors.config import PlatformConfig, Secret
from connectors.errors import ConfigError
from connectors.notifier import Channel

if TYPE_CHECKING:
    import click

LANGUAGES = ("zh", "en")


class AliyunSmsConfig(PlatformConfig):
    """One Aliyun account, its approved signature name and templates (see the package)."""

    access_key_id: Secret
    access_key_secret: Secret
    sign_name: str = Field(min_length=1, max_length=64)
    templates: dict[str, str]
    endpoint: str = protocol.DEFAULT_ENDPOINT
    region: str = "cn-hangzhou"
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(LANGUAGES))
        if unknown:
            raise ValueError(f"languages are {' and '.join(LANGUAGES)}, not {', '.join(unknown)}")
        if not value:
            raise ValueError("give at least one template code, e.g. {zh: SMS_123456789}")
        if not all(code.startswith("SMS_") for code in value.values()):
            raise ValueError("a template code looks like SMS_123456789 (短信模板CODE)")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith(("https://", "http://127.", "http://localhost", "http://[::1]")):
            raise ValueError("https:// (plain http only for a fake on this machine)")
        return value


class AliyunSmsFactory:
    """The entry point ``aliyun_sms`` in ``robot.notifiers``."""

    notifier: ClassVar[str] = "aliyun_sms"
    channel: ClassVar[Channel] = Channel.SMS
    config_model: ClassVar[type[BaseModel]] = AliyunSmsConfig

    def create(self, config: BaseModel, shop: str) -> AliyunSmsNotifier:
        if not isinstance(config, AliyunSmsConfig):
            raise ConfigError(f"notifier aliyun_sms of shop {shop}: config is not an "
                              "AliyunSmsConfig")
        return AliyunSmsNotifier(
            access_key_id=config.access_key_id.get_secret_value(),
            access_key_secret=config.access_key_secret.get_secret_value(),
            sign_name=config.sign_name, templates=dict(config.templates),
            endpoint=config.endpoint, region=config.region, timeout=config.timeout_seconds)

    def fake_command(self) -> click.Command:
        """``robot fake aliyun-sms``."""
        from connectors.aliyunsms.fakecli import aliyun_sms_fake

        return aliyun_sms_fake


__all__ = ["AliyunSmsConfig", "AliyunSmsFactory", "AliyunSmsNotifier"]
