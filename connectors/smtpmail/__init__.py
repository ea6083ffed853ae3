"""Buyer e-mail over SMTP: a notifier plugin (entry point ``smtp`` in ``robot.notifiers``).

A shop's ``notify.email.config``::

    host: smtp.example.com
    port: 587                 # default by security: starttls 587, ssl 465, none 25
    security: starttls        # starttls | ssl | none (a local relay, e.g. localhost:25)
    username: robot@example.com
    password: ${SMTP_PASSWORD}
    from_address: robot@example.com
    from_name: 某某小店
    ca_file: relay-ca.pem     # optional: trust this CA (a relay with a private CA) instead
                              # of the system's; relative to the shop file

What SMTP can and cannot promise about duplicates is in :mod:`connectors.smtpmail.client`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from connectors.config import BASE_DIR, PlatformConfig, Secret
from connectors.errors import ConfigError
from connectors.notifier import Channel
from connectors.smtpmail.client import SmtpNotifier

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (a local relay)."""
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpConfig(PlatformConfig):
    """One SMTP server and the sender address (see the package docstring)."""

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: Secret | None = None
    from_address: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    from_name: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    ca_file: Path | None = None

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        base = info.context.get(BASE_DIR) if isinstance(info.context, Mapping) else None
        path = value.expanduser()
        if not path.is_absolute() and isinstance(base, Path):
            path = base / path
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        return path

    @model_validator(mode="after")
    def _safe_login(self) -> SmtpConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together (both or neither)")
        if self.password is not None and self.security == "none" and not is_loopback(self.host):
            raise ValueError("a password over plain SMTP travels in clear: use security "
                             "starttls or ssl (none is for a relay on this machine)")
        return self


class SmtpNotifierFactory:
    """The entry point ``smtp`` in ``robot.notifiers``."""

    notifier: ClassVar[str] = "smtp"
    channel: ClassVar[Channel] = Channel.EMAIL
    config_model: ClassVar[type[BaseModel]] = SmtpConfig

    def create(self, config: BaseModel, shop: str) -> SmtpNotifier:
        if not isinstance(config, SmtpConfig):
            raise ConfigError(f"notifier smtp of shop {shop}: config is not an SmtpConfig")
        return SmtpNotifier(
            host=config.host, port=config.port, security=config.security,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            sender=config.from_address, sender_name=config.from_name,
            timeout=config.timeout_seconds,
            ca_file=str(config.ca_file) if config.ca_file is not None else None)


__all__ = ["SmtpConfig", "SmtpNotifier", "SmtpNotifierFactory"]
