"""The ``platform_config`` of a 闲管家 (goofish) shop: the robot as a 自研虚拟货源.

``app_id`` / ``app_secret`` are 闲管家's (the application's AppKey / AppSecret); ``mch_id`` /
``mch_secret`` are ours, as registered in the application's 货源授权信息 (闲管家 sends
``mch_id`` with every request and signs with all four). The secrets are
:data:`connectors.config.Secret` (``${ENV}``, ``file:path`` or a literal; shown as stars).
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field, field_validator

from connectors.config import PlatformConfig, Secret

_DIGITS = "an integer id, as 闲管家 shows it (digits only)"


class GoofishConfig(PlatformConfig):
    """Credentials and answers of one 闲管家 supplier gateway."""

    app_id: str = Field(min_length=1, max_length=20)
    app_secret: Secret
    mch_id: str = Field(min_length=1, max_length=64)
    mch_secret: Secret
    #: Seconds a request's timestamp may differ from our clock (the standard: 5 minutes).
    timestamp_window_seconds: int = Field(default=300, ge=30, le=3600)
    #: The balance ``goofish/user/info`` reports (yuan): 闲管家 asks it when the application
    #: is saved; the robot keeps no account for 闲管家, so it is a figure the merchant sets.
    balance_yuan: Decimal = Field(default=Decimal(100000), ge=0, max_digits=14,
                                  decimal_places=2)
    #: Seconds a callback to 闲管家 may take before it counts as failed (and is retried).
    callback_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator("app_id")
    @classmethod
    def _digits(cls, value: str) -> str:
        if not value.isdigit():
            raise ValueError(_DIGITS)  # 闲管家 answers app_id as an integer
        return value
