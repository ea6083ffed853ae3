"""The robot's configuration: one robot file, one file per shop, typed and loud.

:func:`load_config` reads the robot file and every shop file it names, validates them with
pydantic (each shop's ``platform_config`` with its connector's own model) and reports EVERY
problem in one :class:`robot.errors.ConfigError`, one line each, naming file, shop and field::

    shops/tb.yaml: shop 'tb-main': items[1].pool: Field required
    robot.yaml: defaults.poll_intervall: unknown key (did you mean 'poll_interval'?)

:data:`Secret` (the type for anything confidential) and :class:`PlatformConfig` come from the
ground floor, :mod:`connectors.config`, where connectors take them too.

This module must never put a secret's value into a message, a repr or :func:`effective_dict`,
and never print a pydantic ``ValidationError`` as is (its text quotes input values).
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import ipaddress
import os
import re
import string
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretBytes,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from connectors.base import ConnectorFactory
from connectors.config import (
    BASE_DIR,
    ENV_REF_RE,
    Secret,
    env_value,
)
from robot.db import normalize_url, safe_url
from robot.errors import ConfigError, UserError
from robot.registry import discover

MASK = "********"
SHOP_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: Placeholders a memo template may use (the pipeline fills them in).
MEMO_PLACEHOLDERS = frozenset({"masked_codes", "pickup_url", "order_id"})
#: Placeholders an item description may use.
ITEM_DESC_PLACEHOLDERS = frozenset({"title", "quantity", "order_id"})
DEFAULT_MEMO_TEMPLATE = "[robot] {masked_codes} {pickup_url}"
DEFAULT_ITEM_DESC = "{title} x{quantity}"
#: Characters a delivery API token needs at least (``secrets.token_urlsafe(32)`` gives 43).
MIN_API_TOKEN = 32

_BASE_DIR = BASE_DIR  # key in the pydantic validation context


# --------------------------------------------------------------------------- reusable types

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_HELP = "expected seconds or a duration like '30s', '5m', '1h'"
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a string such as ``"30"``, ``"30s"``, ``"5m"``, ``"1h30m"``."""
    if isinstance(value, bool):
        raise PydanticCustomError("duration", _DURATION_HELP)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            return float(text)
        except ValueError:
            pass
        parts = _DURATION_PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    raise PydanticCustomError("duration", _DURATION_HELP)


#: Seconds (> 0); YAML may say ``60``, ``"30s"``, ``"5m"``, ``"1h"``.
Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def _check_name(value: Any) -> Any:
    if isinstance(value, str) and not SHOP_NAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "shop_name",
            "must be 1-64 characters: lowercase letters, digits, '_' or '-', "
            "starting with a letter or digit",
        )
    return value


ShopName = Annotated[str, BeforeValidator(_check_name)]


def _template_checker(allowed: frozenset[str]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            raise PydanticCustomError(
                "template_syntax",
                "bad template: {reason} (write {{{{ and }}}} for literal braces)",
                {"reason": str(exc)},
            ) from exc
        unknown = sorted({f for f in fields if f not in allowed})
        if unknown:
            raise PydanticCustomError(
                "template_placeholder",
                "unknown placeholder {unknown}; use {allowed}",
                {
                    "unknown": ", ".join("{" + u + "}" for u in unknown),
                    "allowed": ", ".join("{" + a + "}" for a in sorted(allowed)),
                },
            )
        return value

    return check


MemoTemplate = Annotated[str, BeforeValidator(_template_checker(MEMO_PLACEHOLDERS))]
ItemDescTemplate = Annotated[str, BeforeValidator(_template_checker(ITEM_DESC_PLACEHOLDERS))]
Unmapped = Literal["hold", "ignore"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- robot file


class HttpConfig(_Strict):
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


class AlertsConfig(_Strict):
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


class IntakeConfig(_Strict):
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


_ID_KEYS = ("item_id", "sku_id", "outer_id")


def _id_to_str(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


PlatformId = Annotated[str | None, BeforeValidator(_id_to_str)]


def _one_id(model: BaseModel) -> None:
    if sum(getattr(model, k) is not None for k in _ID_KEYS) != 1:
        raise PydanticCustomError("sku_key", "give exactly one of item_id, sku_id, outer_id")


def _money(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("yuan", "expected an amount in yuan, e.g. 500 or 99.90")
    if isinstance(value, float):
        return str(value)  # 99.9 -> "99.9", not the float's binary expansion
    return value


#: An amount of money in yuan (元), at most two decimals; the risk rules compare it in cents.
Yuan = Annotated[Decimal, BeforeValidator(_money), Field(gt=0, max_digits=14, decimal_places=2)]


class RateRule(_Strict):
    """At most ``max_orders`` orders within ``window``; the order that would go over is held."""

    max_orders: int = Field(ge=1)
    window: Duration


class ReviewSku(_Strict):
    """An item / SKU / outer id whose orders always wait for a person (exactly one key)."""

    item_id: PlatformId = None
    sku_id: PlatformId = None
    outer_id: PlatformId = None

    @model_validator(mode="after")
    def _one_key(self) -> ReviewSku:
        _one_id(self)
        return self


class RiskRules(_Strict):
    """Risk rules for new paid orders (robot.risk); every rule is off unless set.

    Amounts are in yuan (元) in the file and compared with orders' totals in cents. A shop's
    ``risk:`` overrides single fields of ``defaults.risk`` (``null`` turns a rule off for
    that shop; a shop's ``review_skus`` replaces the default list).
    """

    buyer_rate: RateRule | None = None  # orders per buyer (platform + buyer id) per window
    ip_rate: RateRule | None = None  # orders per buyer IP (any shop, any platform) per window
    max_quantity: int | None = Field(default=None, ge=1)  # units per order
    buyer_amount_per_day_yuan: Yuan | None = None  # a buyer's orders over the last 24 hours
    new_buyer_first_order_yuan: Yuan | None = None  # buyers with nothing shipped yet
    review_skus: list[ReviewSku] = Field(default_factory=list)

    def merged(self, override: RiskRules | None) -> RiskRules:
        """These rules with the fields ``override`` sets (a shop's ``risk:``) replaced."""
        if override is None:
            return self
        return self.model_copy(
            update={k: getattr(override, k) for k in override.model_fields_set}
        )


class Defaults(_Strict):
    """Per-shop settings a shop file may override; durations in seconds."""

    poll_interval: Duration = 60.0
    max_attempts: int = Field(default=10, ge=1)  # write-back attempts before `failed`
    backoff_initial: Duration = 5.0
    backoff_max: Duration = 3600.0
    unmapped: Unmapped = "hold"
    memo_template: MemoTemplate = DEFAULT_MEMO_TEMPLATE
    item_desc: ItemDescTemplate = DEFAULT_ITEM_DESC
    risk: RiskRules = Field(default_factory=RiskRules)

    @model_validator(mode="after")
    def _backoff_order(self) -> Defaults:
        if self.backoff_max < self.backoff_initial:
            raise PydanticCustomError(
                "backoff_order", "backoff_max must not be less than backoff_initial"
            )
        return self


class LogConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


#: The shops' time zone when the robot file names none (the platforms show Beijing time).
DEFAULT_TIMEZONE = "Asia/Shanghai"


def _zone_name(value: Any) -> Any:
    if not isinstance(value, str):
        raise PydanticCustomError("timezone_type",
                                  "expected an IANA time zone name, e.g. Asia/Shanghai")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: not a zone key at all ("../x")
        raise PydanticCustomError(
            "timezone", "unknown time zone {name}; use an IANA name, e.g. Asia/Shanghai",
            {"name": repr(value[:64])}) from None
    return value


#: An IANA time zone name (``Asia/Shanghai``), checked against the system's zone database.
TimeZoneName = Annotated[str, BeforeValidator(_zone_name)]


def zone(name: str) -> ZoneInfo:
    """The zone a validated :data:`TimeZoneName` names."""
    return ZoneInfo(name)


def _as_list(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    raise PydanticCustomError("shops_type", "expected a glob or a list of files/globs")


class RobotFile(_Strict):
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


# --------------------------------------------------------------------------- shop file


class PoolShare(_Strict):
    """Codes from one pool per unit sold."""

    pool: str = Field(min_length=1, max_length=64)
    quantity: int = Field(default=1, ge=1)


class SkuMapping(_Strict):
    """Which platform item/SKU takes codes from which pools.

    Exactly one of ``item_id`` / ``sku_id`` / ``outer_id``. ``pool:`` + ``quantity:`` is
    shorthand for a one-pool ``pools:`` list.
    """

    item_id: PlatformId = None
    sku_id: PlatformId = None
    outer_id: PlatformId = None
    pools: list[PoolShare] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not ("pool" in data or "quantity" in data):
            return data
        if "pools" in data:
            raise PydanticCustomError(
                "pool_and_pools",
                "give either 'pool' (+ 'quantity') or 'pools' (a bundle), not both",
            )
        rest = {k: v for k, v in data.items() if k not in ("pool", "quantity")}
        share = {k: data[k] for k in ("pool", "quantity") if k in data}
        return {**rest, "pools": [share]}

    @model_validator(mode="after")
    def _one_key(self) -> SkuMapping:
        if sum(v is not None for v in (self.item_id, self.sku_id, self.outer_id)) != 1:
            raise PydanticCustomError(
                "sku_key", "give exactly one of item_id, sku_id, outer_id"
            )
        return self

    @property
    def key(self) -> tuple[str, str]:
        """``(kind, id)``, e.g. ``("sku_id", "4567")``."""
        for kind in _ID_KEYS:
            value = getattr(self, kind)
            if value is not None:
                return kind, value
        raise AssertionError("a validated SkuMapping has exactly one id")  # pragma: no cover


#: What a buyer may be asked on the lookup form (robot.http.checks holds how each is read and
#: compared). A later check, e.g. the recharge account's last 4 for top-up orders, is one more
#: name here and one more entry in robot.http.checks.CHECKS.
LookupCheckName = Literal["buyer_id_suffix", "paid_at", "paid_amount"]
#: Checks that are no secret on their own (a price is public): only allowed beside another.
PUBLIC_CHECKS = frozenset({"paid_amount"})
_SECRET_CHECKS = ("paid_at", "buyer_id_suffix")


def _checks_list(value: Any) -> Any:
    if value is None or value == "none":
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        if "none" in value:
            raise PydanticCustomError(
                "lookup_none", "'none' turns the lookup off: give it alone, not in a list")
        return tuple(value)
    raise PydanticCustomError(
        "lookup_type", "expected none, one check or a list of checks, e.g. [paid_at, paid_amount]")


class PickupConfig(_Strict):
    """How buyers reach their codes on the robot's pickup page (robot.http).

    ``lookup_check`` is what a buyer must give with the platform order number on the lookup
    form (``/p``), one check or a list of checks that must all match: ``none`` (the default)
    disables the lookup for this shop (per-order links only); ``paid_at`` asks for the minute
    the buyer paid, as their order page shows it (the robot's ``timezone``, ±1 minute);
    ``buyer_id_suffix`` asks for the last ``suffix_length`` characters of the platform buyer id
    (for platforms whose buyer id the buyer sees, e.g. a member number); ``paid_amount`` asks
    for the amount paid, which is public (the price), so it is only accepted beside another
    check (``[paid_at, paid_amount]``). Links expire ``link_ttl`` after they are made
    (``null``: never).
    """

    enabled: bool = True
    lookup_check: Annotated[tuple[LookupCheckName, ...], BeforeValidator(_checks_list)] = ()
    suffix_length: int = Field(default=4, ge=4, le=32)
    link_ttl: Duration | None = 30 * 86400.0

    @field_validator("lookup_check")
    @classmethod
    def _secret_enough(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("lookup_duplicate", "a check is listed twice")
        if value and all(check in PUBLIC_CHECKS for check in value):
            raise PydanticCustomError(
                "lookup_public",
                "{checks} alone is no secret (prices are public: anyone could open orders by "
                "guessing order numbers); use {secret}, or combine, e.g. [paid_at, paid_amount]",
                {"checks": " + ".join(value), "secret": " or ".join(_SECRET_CHECKS)},
            )
        return value


class ShopFile(_Strict):
    """A shop file exactly as written; ``platform_config`` is checked by the connector."""

    name: ShopName
    platform: str = Field(min_length=1)
    enabled: bool = True
    poll_interval: Duration | None = None
    unmapped: Unmapped | None = None
    memo_template: MemoTemplate | None = None
    item_desc: ItemDescTemplate | None = None
    items: list[SkuMapping] = Field(default_factory=list)
    platform_config: dict[str, Any] = Field(default_factory=dict)
    pickup: PickupConfig = Field(default_factory=PickupConfig)
    #: Bearer token for the delivery API (robot.http); unset: the API is off for this shop.
    delivery_api_token: Secret | None = None
    risk: RiskRules | None = None  # fields set here override defaults.risk

    @field_validator("delivery_api_token")
    @classmethod
    def _api_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_API_TOKEN:
            # Never quote the token, not even its length: it names how weak it is.
            raise PydanticCustomError(
                "api_token_short",
                "too short: use at least {n} random characters, e.g. make one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
                {"n": MIN_API_TOKEN})
        return value


class _NoPlatformConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShopConfig(_Strict):
    """One shop with its effective settings (defaults applied) and validated connector config."""

    name: ShopName
    platform: str
    enabled: bool = True
    file: Path
    poll_interval_seconds: Duration = 60.0
    unmapped: Unmapped = "hold"
    memo_template: MemoTemplate = DEFAULT_MEMO_TEMPLATE
    item_desc: ItemDescTemplate = DEFAULT_ITEM_DESC
    items: list[SkuMapping] = Field(default_factory=list)
    platform_config: SerializeAsAny[BaseModel] = Field(default_factory=_NoPlatformConfig)
    pickup: PickupConfig = Field(default_factory=PickupConfig)
    delivery_api_token: Secret | None = None
    risk: RiskRules = Field(default_factory=RiskRules)


class RobotConfig(_Strict):
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

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (safe_url(value) if name == "database" else value)

    def shop(self, name: str) -> ShopConfig:
        """The shop called ``name``; :class:`UserError` with a suggestion if there is none."""
        for shop in self.shops:
            if shop.name == name:
                return shop
        names = [s.name for s in self.shops]
        hint = _did_you_mean(name, names)
        known = f"; configured shops: {', '.join(names)}" if names else "; no shops are configured"
        raise UserError(f"no shop named {name!r}{hint}{known}")


# --------------------------------------------------------------------------- messages


def _did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _format_loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional wrappers from a type."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(model: type[BaseModel], path: Iterable[int | str]) -> type[BaseModel] | None:
    """The model class found by following ``path`` (field names, list indexes) from ``model``."""
    current: Any = model
    for part in path:
        current = _unwrap(current)
        origin = get_origin(current)
        if origin in (list, tuple, set, frozenset) and isinstance(part, int):
            current = get_args(current)[0] if get_args(current) else Any
        elif origin in (dict, Mapping) and get_args(current):
            current = get_args(current)[1]
        elif isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            names = {(f.alias or n): f for n, f in current.model_fields.items()}
            found = names.get(part) or current.model_fields.get(part)
            if found is None:
                return None
            current = found.annotation
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _walk_raw(raw: Any, path: Iterable[int | str]) -> Any:
    for part in path:
        in_list = isinstance(raw, list) and isinstance(part, int) and 0 <= part < len(raw)
        if not (in_list or (isinstance(raw, Mapping) and part in raw)):
            return None
        raw = raw[part]
    return raw


def _explain(
    exc: ValidationError, model: type[BaseModel], raw: Any, prefix: tuple[int | str, ...] = ()
) -> list[str]:
    """``loc: message`` lines for a validation error; never quotes an input value."""
    lines: list[str] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            known = _known_keys(owner) if owner is not None else []
            hint = _did_you_mean(str(loc[-1]), known)
            listing = f"; expected one of: {', '.join(known)}" if known else ""
            msg = "unknown key" + (hint or listing)
        elif err["type"] in ("value_error", "assertion_error"):
            # A connector's plain `raise ValueError(...)`: drop pydantic's "Value error, ".
            msg = msg.split(", ", 1)[-1]
        loc = _shorthand_loc(loc, raw, err["type"])
        where = _format_loc(prefix + loc)
        lines.append(f"{where}: {msg}" if where else msg)
    return lines


def _shorthand_loc(loc: tuple[int | str, ...], raw: Any, kind: str) -> tuple[int | str, ...]:
    """Point errors in a ``pool:`` shorthand mapping at the keys the user actually wrote."""
    for i, part in enumerate(loc):
        if part != "pools" or i == 0:
            continue
        entry = _walk_raw(raw, loc[:i])
        if not isinstance(entry, Mapping) or "pools" in entry:
            continue
        rest = loc[i + 1 :]
        if len(rest) >= 2 and rest[0] == 0:
            return loc[:i] + rest[1:]
        if not rest and kind == "missing":
            return (*loc[:i], "pool")
    return loc


# --------------------------------------------------------------------------- YAML


class _DuplicateKeyError(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would silently keep the last one)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[tuple[str, str]] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                raise _DuplicateKeyError(
                    problem=f"duplicate key {key_node.value!r}", problem_mark=key_node.start_mark
                )
            seen.add(ident)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass
class _Problems:
    """Collects problem lines; ``where`` prefixes them with a file and shop."""

    base: Path
    lines: list[str] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.base).as_posix()
        except ValueError:
            return str(path)

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{where}: {message}")


def _read_yaml(path: Path, shown: str, problems: _Problems, *, what: str) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.add(shown, "file not found")
        return None
    except UnicodeDecodeError:
        problems.add(shown, "not UTF-8 text")
        return None
    except OSError as exc:
        problems.add(shown, f"cannot read: {exc.strerror or type(exc).__name__}")
        return None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # Only the problem and the position: the YAML snippet could quote a secret.
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        kind = "" if isinstance(exc, _DuplicateKeyError) else "YAML syntax error: "
        problems.add(shown, f"{where}{kind}{exc.problem or 'invalid YAML'}")
        return None
    except yaml.YAMLError as exc:
        problems.add(shown, f"YAML error: {type(exc).__name__}")
        return None
    if data is None:
        problems.add(shown, f"file is empty (a {what} needs at least {_REQUIRED[what]})")
        return None
    if not isinstance(data, dict):
        problems.add(shown, f"expected a mapping of keys at the top level, got {_yaml_kind(data)}")
        return None
    return data


_REQUIRED = {"robot file": "database and shops", "shop file": "name and platform"}


def _yaml_kind(data: Any) -> str:
    if isinstance(data, list):
        return "a list"
    if isinstance(data, str):
        return "a string"
    return f"a {type(data).__name__}"


# --------------------------------------------------------------------------- loader


def _substitute_env(value: str) -> str:
    def repl(match: re.Match[str]) -> str:
        return env_value(match.group(1))

    return ENV_REF_RE.sub(repl, value)


_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")


def _resolve_database(raw: str, base: Path) -> str:
    """Expand ``${ENV}`` and make a relative SQLite path absolute; raise ConfigError."""
    try:
        url = _substitute_env(raw)
    except PydanticCustomError as exc:
        raise ConfigError(f"database: {exc.message()}") from None
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"database: not a database URL: {safe_url(url)!r}") from None
    backend = parsed.get_backend_name()
    if backend not in _BACKENDS:
        raise ConfigError(
            f"database: unsupported backend {backend!r}{_did_you_mean(backend, _BACKENDS)}; "
            f"use one of: {', '.join(_BACKENDS)}"
        )
    try:
        normalize_url(url)  # picks our drivers; raises ConfigError naming the field
    except NoSuchModuleError:
        raise ConfigError(
            f"database: unknown driver in {safe_url(url)!r}; "
            "leave the driver out (e.g. postgresql://...) and the robot picks it"
        ) from None
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser()
        if not path.is_absolute():
            parsed = parsed.set(database=str(base / path))
            return parsed.render_as_string(hide_password=False)
    return url


def _has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _shop_files(spec: list[str], robot_file: Path, problems: _Problems) -> list[Path]:
    base = robot_file.parent
    where = problems.rel(robot_file)
    found: list[Path] = []
    for i, entry in enumerate(spec):
        label = f"{where}: shops" + (f"[{i}]" if len(spec) > 1 else "")
        pattern = Path(entry).expanduser()
        full = pattern if pattern.is_absolute() else base / pattern
        if _has_magic(entry):
            pattern_text = (
                entry if pattern.is_absolute() else os.path.join(glob.escape(str(base)), entry)
            )
            matches = sorted(Path(p) for p in glob.glob(pattern_text, recursive=True))
            found.extend(p for p in matches if p.is_file() and p != robot_file)
        elif full.is_dir():
            problems.lines.append(
                f"{label}: {entry} is a directory; use a glob such as {entry.rstrip('/')}/*.yaml"
            )
        elif not full.exists():
            problems.lines.append(f"{label}: file {entry} does not exist")
        else:
            found.append(full)
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def _load_shop(
    path: Path,
    defaults: Defaults | None,
    registry: Mapping[str, ConnectorFactory],
    load_errors: Mapping[str, str],
    problems: _Problems,
) -> tuple[str | None, ShopConfig | None]:
    """Validate one shop file; returns its name (if readable) and the shop (if valid)."""
    shown = problems.rel(path)
    raw = _read_yaml(path, shown, problems, what="shop file")
    if raw is None:
        return None, None
    name = raw.get("name") if isinstance(raw.get("name"), str) else None
    where = f"{shown}: shop {name!r}" if name else shown
    before = len(problems.lines)
    shop_file: ShopFile | None = None
    try:
        shop_file = ShopFile.model_validate(raw, context={_BASE_DIR: path.parent})
    except ValidationError as exc:
        for line in _explain(exc, ShopFile, raw):
            problems.add(where, line)

    platform_config: BaseModel | None = None
    platform = raw.get("platform")
    if isinstance(platform, str) and platform:
        factory = registry.get(platform)
        if factory is None:
            if platform in load_errors:
                problems.add(
                    where,
                    f"platform: the {platform!r} connector failed to load: {load_errors[platform]}",
                )
            else:
                known = sorted(registry)
                hint = _did_you_mean(platform, known)
                listed = ", ".join(known) if known else "none"
                problems.add(
                    where, f"platform: unknown platform {platform!r}{hint}; registered: {listed}"
                )
        elif isinstance(raw.get("platform_config", {}), dict):
            platform_config = _validate_platform_config(
                factory, raw.get("platform_config") or {}, path, where, problems
            )

    for line in _duplicate_skus(raw.get("items")):
        problems.add(where, line)

    if len(problems.lines) > before or shop_file is None or platform_config is None:
        return name, None
    if defaults is None:  # the robot file is broken; its problems are reported already
        return name, None
    shop = ShopConfig(
        name=shop_file.name,
        platform=shop_file.platform,
        enabled=shop_file.enabled,
        file=path,
        poll_interval_seconds=shop_file.poll_interval or defaults.poll_interval,
        unmapped=shop_file.unmapped or defaults.unmapped,
        memo_template=(
            shop_file.memo_template if shop_file.memo_template is not None
            else defaults.memo_template
        ),
        item_desc=shop_file.item_desc if shop_file.item_desc is not None else defaults.item_desc,
        items=shop_file.items,
        platform_config=platform_config,
        pickup=shop_file.pickup,
        delivery_api_token=shop_file.delivery_api_token,
        risk=defaults.risk.merged(shop_file.risk),
    )
    return name, shop


def _validate_platform_config(
    factory: ConnectorFactory, raw: dict[str, Any], path: Path, where: str, problems: _Problems
) -> BaseModel | None:
    model = factory.config_model
    prefix: tuple[int | str, ...] = ("platform_config",)
    result: BaseModel | None = None
    try:
        result = model.model_validate(raw, context={_BASE_DIR: path.parent})
    except ValidationError as exc:
        for line in _explain(exc, model, raw, prefix):
            problems.add(where, line)
    except Exception as exc:  # noqa: BLE001 - a connector's validator bug must not hide other problems
        problems.add(
            where,
            f"platform_config: the {factory.platform!r} connector's config model failed: "
            f"{type(exc).__name__}",
        )
    # A model that ignores unknown keys would hide typos: report them anyway.
    if model.model_config.get("extra") in (None, "ignore"):
        known = _known_keys(model)
        for key in raw:
            if key not in known and key not in model.model_fields:
                hint = _did_you_mean(str(key), known)
                problems.add(where, f"platform_config.{key}: unknown key{hint}")
                result = None
    return result


def _duplicate_skus(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    first: dict[tuple[str, str], int] = {}
    lines: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        for kind in _ID_KEYS:
            value = item.get(kind)
            if isinstance(value, bool) or not isinstance(value, str | int):
                continue
            key = (kind, str(value))
            if key in first:
                lines.append(
                    f"items[{i}].{kind}: {kind} {key[1]!r} is already mapped by items[{first[key]}]"
                )
            else:
                first[key] = i
    return lines


def load_config(
    path: Path | str, *, registry: Mapping[str, ConnectorFactory] | None = None
) -> RobotConfig:
    """Load and validate the robot file and its shop files; every problem in one ConfigError.

    ``registry`` maps platform names to connector factories (default: the installed ones).
    """
    load_errors: dict[str, str] = {}
    if registry is None:
        found = discover()
        registry = found.factories
        load_errors = {p.name: p.error for p in found.problems}

    robot_file = Path(path).expanduser().absolute()
    base = robot_file.parent
    problems = _Problems(base=base)
    shown = problems.rel(robot_file)
    if not robot_file.exists():
        raise ConfigError(
            f"{path}: file not found (create it from config.example.yaml, or pass -c FILE)"
        )
    raw = _read_yaml(robot_file, shown, problems, what="robot file")
    if raw is None:
        raise ConfigError(problems.lines)

    robot: RobotFile | None = None
    try:
        robot = RobotFile.model_validate(raw, context={_BASE_DIR: base})
    except ValidationError as exc:
        for line in _explain(exc, RobotFile, raw):
            problems.add(shown, line)

    database: str | None = None
    raw_db = raw.get("database", RobotFile.model_fields["database"].default)
    if isinstance(raw_db, str):
        try:
            database = _resolve_database(raw_db, base)
        except ConfigError as exc:
            for line in exc.problems:
                problems.add(shown, line)

    spec = robot.shops if robot is not None else _shops_spec_fallback(raw.get("shops"))
    shops: list[ShopConfig] = []
    seen: dict[str, Path] = {}
    for shop_path in _shop_files(spec, robot_file, problems):
        name, shop = _load_shop(
            shop_path, robot.defaults if robot else None, registry, load_errors, problems
        )
        if name is not None:
            if name in seen:
                problems.add(
                    f"{problems.rel(shop_path)}: shop {name!r}",
                    f"name: duplicate shop name, also used by {problems.rel(seen[name])}",
                )
            else:
                seen[name] = shop_path
        if shop is not None:
            shops.append(shop)

    if problems.lines or robot is None or database is None:
        raise ConfigError(problems.lines)
    key_file = Path(robot.key_file).expanduser()
    return RobotConfig(
        path=robot_file,
        database=database,
        key_file=key_file if key_file.is_absolute() else base / key_file,
        timezone=robot.timezone,
        http=robot.http,
        alerts=robot.alerts,
        intake=robot.intake,
        defaults=robot.defaults,
        log=robot.log,
        shops=shops,
    )


def _shops_spec_fallback(value: Any) -> list[str]:
    """Shop files are still checked when the robot file has other problems."""
    if value is None:
        return list(RobotFile.model_fields["shops"].get_default(call_default_factory=True))
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return []


# --------------------------------------------------------------------------- checks and display


def _pool_loc(index: int, mapping: SkuMapping, share_index: int) -> str:
    if len(mapping.pools) == 1:
        return f"items[{index}].pool"
    return f"items[{index}].pools[{share_index}].pool"


def check_pools(config: RobotConfig, existing: set[str]) -> list[str]:
    """Problems for shop mappings that name pools not in ``existing``."""
    problems = _Problems(base=config.path.parent)
    for shop in config.shops:
        where = f"{problems.rel(shop.file)}: shop {shop.name!r}"
        for i, mapping in enumerate(shop.items):
            for j, share in enumerate(mapping.pools):
                if share.pool in existing:
                    continue
                # Pool names share suffixes ("-month"): only suggest a really close one.
                hint = _did_you_mean(share.pool, sorted(existing), cutoff=0.8)
                problems.add(
                    where,
                    f"{_pool_loc(i, mapping, j)}: pool {share.pool!r} does not exist{hint}; "
                    f"create it with: robot pools create {share.pool}",
                )
    return problems.lines


def _plain(value: Any) -> Any:
    """JSON-able data with every secret replaced by the mask."""
    if isinstance(value, SecretStr | SecretBytes):
        return MASK
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def effective_dict(config: RobotConfig) -> dict[str, Any]:
    """The effective configuration (defaults applied) as plain data, secrets masked."""
    data: dict[str, Any] = _plain(config)
    data["database"] = safe_url(config.database).replace(":***@", f":{MASK}@")
    for shop_data in data["shops"]:
        shop_data["items"] = [
            {k: v for k, v in item.items() if v is not None} for item in shop_data["items"]
        ]
    return data
