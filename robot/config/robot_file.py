"""The robot file as written (:class:`RobotFile`) and the whole configuration resolved
(:class:`RobotConfig`): database, key file, HTTP, alerts, intake guards, log, the shops."""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator
from pydantic_core import PydanticCustomError

from connectors.config import Secret
from robot.config.problems import did_you_mean
from robot.config.restock import RestockRule
from robot.config.shop_file import Defaults, ShopConfig
from robot.config.suppliers import SupplierConfig, SupplierEntry
from robot.config.types import (
    DEFAULT_TIMEZONE,
    Duration,
    ShopName,
    StrictModel,
    TimeZoneName,
    parse_duration,
)
from robot.db import safe_url
from robot.errors import UserError


class HttpConfig(StrictModel):
    """Where the robot listens (webhooks, pickup page, health, metrics)."""

    listen: str = "127.0.0.1:8080"
    #: Base of the links buyers get (pickup page); no trailing slash.
    public_url: str = "http://127.0.0.1:8080"
    #: Reverse proxies (CIDRs or addresses) whose ``X-Forwarded-For`` is believed; empty:
    #: nobody's, the TCP peer is the client (see robot.http.address).
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise PydanticCustomError(
                "trusted_proxies", "expected a list of CIDRs, e.g. [127.0.0.1/32, ::1/128]")
        out, bad = [], []
        for i, item in enumerate(value):
            text = str(item).strip() if isinstance(item, str | int) else ""
            try:
                net = ipaddress.ip_network(text, strict=True)
            except ValueError:
                hint = ""
                with contextlib.suppress(ValueError):
                    hint = f" (did you mean {ipaddress.ip_network(text, strict=False)}?)"
                bad.append(f"[{i}]: '{text[:60]}' is not a CIDR such as 10.0.0.0/8 or "
                           f"::1/128{hint}")
                continue
            if net.prefixlen == 0:
                bad.append(f"[{i}]: {net} would let every address on the internet say who "
                           "the client is; name your proxies")
            out.append(str(net))
        if bad:
            raise PydanticCustomError("trusted_proxies", "{problems}",
                                      {"problems": "; ".join(bad)})
        return out

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        # port 0 lets the system pick a free port (tests, several robots on one host)
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise PydanticCustomError("listen", "expected host:port, e.g. 127.0.0.1:8080")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
            raise PydanticCustomError(
                "public_url", "expected an http(s) URL without query, e.g. https://robot.example.com"
            )
        return value.rstrip("/")


class AlertsConfig(StrictModel):
    """Where alerts go (apprise URLs: they often carry tokens, hence secrets) and when."""

    targets: list[Secret] = Field(default_factory=list)
    #: Also alert when a pool's stock lasts fewer days than this at last week's sales rate.
    low_cover_days: float | None = Field(default=None, gt=0)
    #: Alert when more orders than this are failed / held / waiting for stock.
    failed_above: int = Field(default=0, ge=0)
    held_above: int = Field(default=0, ge=0)
    waiting_stock_above: int = Field(default=0, ge=0)
    #: Alert when a shop's last successful poll is older than this.
    poll_lag: Duration = 900.0
    #: Alert when available codes expire within this many days.
    expiring_days: float = Field(default=7.0, gt=0)
    #: Verify the audit chain at most this often (it reads the whole log).
    audit_every: Duration = 3600.0
    #: At most one message per alert per this interval (a flapping condition stays quiet).
    min_interval: Duration = 600.0


class IntakeConfig(StrictModel):
    """Guards on taking orders in: platform clocks and the reconciliation sweep."""

    #: A platform clock this far from ours (either way) is logged, alerted and shown as
    #: degraded in /healthz. Windows follow the platform's clock whatever the offset; 60 s is
    #: far above the measurement's own error (1 s Date resolution, smoothed over samples)
    #: and ten times inside the platforms' 10-minute timestamp tolerance.
    max_clock_offset: Duration = 60.0
    #: How often each polled shop re-reads its recent past for orders polling missed.
    sweep_every: Duration = 1800.0
    #: How far back the sweep reads (by the platform's modified/update time).
    sweep_lookback: Annotated[float, BeforeValidator(parse_duration),
                              Field(gt=0, le=7 * 86400)] = 86400.0


class LogConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


def _as_list(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    raise PydanticCustomError("shops_type", "expected a glob or a list of files/globs")


class SourcingConfig(StrictModel):
    """How the robot buys from suppliers (robot.sourcing)."""

    #: A purchase still in progress at the supplier after this long raises an alert.
    processing_alert_after: Duration = 1800.0
    #: A supplier's catalogue (its prices) is read again after this long.
    price_ttl: Duration = 60.0
    #: A purchase in progress is queried again after this long at first, doubling (with
    #: jitter) up to ``query_max``; a supplier's callback makes it due at once.
    query_initial: Duration = 5.0
    query_max: Duration = 300.0


class RobotFile(StrictModel):
    """The robot file exactly as written (before paths and defaults are resolved)."""

    database: str = "sqlite:///robot.db"
    key_file: str = "robot.key"
    shops: Annotated[list[str], BeforeValidator(_as_list)] = Field(
        default_factory=lambda: ["shops/*.yaml"]
    )
    #: The shops' time zone: what the buyers' order pages show times in (the lookup's paid_at).
    timezone: TimeZoneName = DEFAULT_TIMEZONE
    http: HttpConfig = Field(default_factory=HttpConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    defaults: Defaults = Field(default_factory=Defaults)
    log: LogConfig = Field(default_factory=LogConfig)
    #: Supplier accounts by name (robot.config.suppliers); each plugin checks its ``config``.
    suppliers: dict[ShopName, SupplierEntry] = Field(default_factory=dict)
    sourcing: SourcingConfig = Field(default_factory=SourcingConfig)
    #: Pools that refill themselves from a supplier (robot.config.restock), by pool name.
    restock: dict[str, RestockRule] = Field(default_factory=dict)


class RobotConfig(StrictModel):
    """The whole configuration, resolved: absolute paths, effective shop settings."""

    path: Path  # the robot file
    database: str  # resolved URL (may hold a password: never print it, see safe_url)
    key_file: Path
    timezone: TimeZoneName = DEFAULT_TIMEZONE  # the shops' time zone (see RobotFile)
    http: HttpConfig = Field(default_factory=HttpConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    defaults: Defaults = Field(default_factory=Defaults)
    log: LogConfig = Field(default_factory=LogConfig)
    shops: list[ShopConfig] = Field(default_factory=list)
    suppliers: list[SupplierConfig] = Field(default_factory=list)
    sourcing: SourcingConfig = Field(default_factory=SourcingConfig)
    restock: dict[str, RestockRule] = Field(default_factory=dict)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (safe_url(value) if name == "database" else value)

    def supplier(self, name: str) -> SupplierConfig:
        """The supplier called ``name``; :class:`UserError` with a suggestion if there is none."""
        for entry in self.suppliers:
            if entry.name == name:
                return entry
        names = [s.name for s in self.suppliers]
        hint = did_you_mean(name, names)
        known = (f"; configured suppliers: {', '.join(names)}" if names
                 else "; no suppliers are configured (the robot file's suppliers:)")
        raise UserError(f"no supplier named {name!r}{hint}{known}")

    def shop(self, name: str) -> ShopConfig:
        """The shop called ``name``; :class:`UserError` with a suggestion if there is none."""
        for shop in self.shops:
            if shop.name == name:
                return shop
        names = [s.name for s in self.shops]
        hint = did_you_mean(name, names)
        known = f"; configured shops: {', '.join(names)}" if names else "; no shops are configured"
        raise UserError(f"no shop named {name!r}{hint}{known}")
