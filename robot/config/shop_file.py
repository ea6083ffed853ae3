"""The shop file as written (:class:`ShopFile`) and resolved (:class:`ShopConfig`), with the
per-shop settings the robot file's ``defaults:`` gives (risk rules, write-back, pickup page)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from connectors.config import Secret
from robot.config.mappings import SkuMapping
from robot.config.notify import NotifyConfig, NotifyFile
from robot.config.types import (
    DEFAULT_ITEM_DESC,
    DEFAULT_MEMO_TEMPLATE,
    MIN_API_TOKEN,
    ContactLink,
    ContactText,
    Duration,
    FooterText,
    ItemDescTemplate,
    MemoTemplate,
    PlatformId,
    ShopDisplayName,
    ShopName,
    StrictModel,
    Unmapped,
    Yuan,
    one_id,
)


class RateRule(StrictModel):
    """At most ``max_orders`` orders within ``window``; the order that would go over is held."""

    max_orders: int = Field(ge=1)
    window: Duration


class ReviewSku(StrictModel):
    """An item / SKU / outer id whose orders always wait for a person (exactly one key)."""

    item_id: PlatformId = None
    sku_id: PlatformId = None
    outer_id: PlatformId = None

    @model_validator(mode="after")
    def _one_key(self) -> ReviewSku:
        one_id(self)
        return self


class RiskRules(StrictModel):
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


class Defaults(StrictModel):
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


class PickupConfig(StrictModel):
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
    #: Plain text at the foot of the shop's pickup pages (line breaks kept).
    footer: FooterText | None = None

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


class Contact(StrictModel):
    """How buyers reach the shop's customer service: a line of text (``客服微信 abc123``) and
    optionally a link (``https:``, ``http:``, ``mailto:`` or ``tel:``)."""

    text: ContactText
    url: ContactLink | None = None


class ShopFile(StrictModel):
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
    #: The shop's name as buyers know it (the pickup page's heading); unset: none shown.
    display_name: ShopDisplayName | None = None
    contact: Contact | None = None
    notify: NotifyFile | None = None  # buyer notifications (robot.config.notify); off if unset

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


class ShopConfig(StrictModel):
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
    display_name: ShopDisplayName | None = None
    contact: Contact | None = None
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
