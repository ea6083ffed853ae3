"""Which platform item or SKU takes codes from which pools, or is bought from which suppliers
(a shop file's ``items:``).

A mapping's goods come from, in order: its pools (codes in stock), then its ``suppliers:``
(codes bought for the order, into the mapping's one pool); or, for a top-up (``account:``
says where the buyer's account is), from the suppliers only. Each supplier entry names the
supplier's product and the most the merchant pays for one unit (``max_cost``, yuan).

Also the checks on mappings that need more than one entry (a SKU mapped twice), the database
(every pool a mapping names exists) or the robot file (every supplier named is configured).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from robot.config.problems import Problems, did_you_mean
from robot.config.types import ID_KEYS, PlatformId, StrictModel, Yuan

if TYPE_CHECKING:  # only a type here: robot_file imports this module
    from robot.config.robot_file import RobotConfig


class PoolShare(StrictModel):
    """Codes from one pool per unit sold."""

    pool: str = Field(min_length=1, max_length=64)
    quantity: int = Field(default=1, ge=1)


def _product_id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class SupplierRoute(StrictModel):
    """One supplier to buy a unit from: its product, and the most the merchant pays for one
    unit (yuan, like every price in the files). The robot never buys above ``max_cost``."""

    supplier: str = Field(min_length=1, max_length=64)  # a name under the robot file's suppliers:
    product: Annotated[str, BeforeValidator(_product_id), Field(min_length=1, max_length=64)]
    max_cost: Yuan


#: Where a top-up's account is read: the buyer's message to the seller, an order field the
#: connector passes in ``Order.extra`` (``extra.NAME``), or a property of the ordered SKU
#: (``property.NAME``, e.g. the "充值号码" the buyer typed on the item page).
_SOURCE_RE = re.compile(r"^(buyer_message|extra\.[\w.-]{1,64}|property\.[^\s]{1,64})$")


class AccountRule(StrictModel):
    """Where a top-up's account comes from and what it must look like: a mainland mobile
    number, a QQ number, or ``pattern`` (a regular expression the whole account matches)."""

    source: str = "buyer_message"
    format: Literal["mobile", "qq", "regex"] = "mobile"
    pattern: str | None = Field(default=None, max_length=200)
    #: Where the game area / server / game name / role are read, for products that need
    #: them (same forms as ``source``); a 闲管家 top-up reads them from 闲管家's request.
    area: str | None = None
    server: str | None = None
    game: str | None = None
    role: str | None = None

    @field_validator("source", "area", "server", "game", "role")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and not _SOURCE_RE.match(value):
            raise PydanticCustomError(
                "account_source",
                "expected buyer_message, extra.NAME (an order field) or property.NAME "
                "(a SKU property)")
        return value

    @model_validator(mode="after")
    def _pattern(self) -> AccountRule:
        if self.format == "regex":
            if not self.pattern:
                raise PydanticCustomError("account_pattern", "format regex needs a pattern")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise PydanticCustomError("account_pattern_bad",
                                          "pattern is not a regular expression: {why}",
                                          {"why": str(exc)}) from None
        elif self.pattern is not None:
            raise PydanticCustomError("account_pattern_unused",
                                      "pattern is only for format: regex")
        return self


#: Where a 闲管家 top-up's account, game area, server, game name and role are (the line
#: properties the gateway writes from the request's ``biz_content``: robot.supply).
GATEWAY_ACCOUNT = {"source": "property.account", "area": "property.game_area",
                   "server": "property.game_server", "game": "property.game_name",
                   "role": "property.game_role"}


def _gateway_account(given: Any) -> dict[str, Any]:
    """A recharge goods' account rule: its form as written, its places the request's."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise PydanticCustomError("account_rule", "account is a mapping (format, pattern)")
    placed = sorted(k for k in GATEWAY_ACCOUNT if k in given)
    if placed:
        raise PydanticCustomError(
            "recharge_account_source",
            "a recharge goods' account comes from 闲管家's request: leave out {keys}",
            {"keys": ", ".join(placed)})
    return {**given, **GATEWAY_ACCOUNT}


class SkuMapping(StrictModel):
    """Which platform item/SKU takes codes from which pools, or is bought from suppliers.

    Exactly one of ``item_id`` / ``sku_id`` / ``outer_id``. ``pool:`` + ``quantity:`` is
    shorthand for a one-pool ``pools:`` list. ``suppliers:`` with one pool: codes from the
    pool, else bought (card purchase) into it; ``suppliers:`` with ``account:`` and no pool:
    a top-up, bought for every unit.

    A shop that sells to its platform as a supplier (闲管家) names its goods ``goods_no:``
    (our goods number, i.e. the merchant's own code: stored as ``outer_id``) with the
    ``price:`` (yuan per unit) the platform pays and an optional ``goods_name:``.
    ``goods_type: recharge`` is a top-up 闲管家 buys: ``suppliers:`` and no pool; the account
    (and game area / server) come from 闲管家's request, and ``account:`` says only what the
    account must look like (``format``, ``pattern``; a mobile number unless told).
    """

    item_id: PlatformId = None
    sku_id: PlatformId = None
    outer_id: PlatformId = None
    pools: list[PoolShare]  # required unless suppliers: are given (a top-up has none)
    suppliers: list[SupplierRoute] = Field(default_factory=list, max_length=8)
    account: AccountRule | None = None
    price: Yuan | None = None
    goods_name: str | None = Field(default=None, min_length=1, max_length=128)
    #: A top-up's face value (yuan), shown to the buyer beside its status ("· 50元").
    face_value: Yuan | None = None

    @staticmethod
    def _goods(data: Any) -> Any:
        """``goods_no`` / ``goods_type`` (a supplier shop's words) as the mapping's own."""
        if not isinstance(data, Mapping) or not ("goods_no" in data or "goods_type" in data):
            return data
        kind = data.get("goods_type", "card")
        if kind not in ("card", "recharge"):
            raise PydanticCustomError("goods_type", "goods_type is 'card' or 'recharge'")
        rest = {k: v for k, v in data.items() if k not in ("goods_no", "goods_type")}
        if kind == "recharge":
            rest["account"] = _gateway_account(data.get("account"))
        elif "account" in data:
            raise PydanticCustomError(
                "card_account", "card goods carry no account: a top-up is goods_type: recharge")
        if "goods_no" in data:
            if "outer_id" in data:
                raise PydanticCustomError(
                    "goods_no_and_outer_id", "goods_no is the outer_id: give one of them")
            rest["outer_id"] = data["goods_no"]
        return rest

    @model_validator(mode="after")
    def _route(self) -> SkuMapping:
        if not self.pools and not self.suppliers:
            raise PydanticCustomError(
                "no_source", "give pools (codes in stock) or suppliers (bought per order)")
        if self.account is not None:
            if self.pools:
                raise PydanticCustomError(
                    "topup_pools", "a top-up (account:) is bought from suppliers only: "
                    "remove pool/pools")
            if not self.suppliers:
                raise PydanticCustomError("topup_suppliers",
                                          "a top-up (account:) needs suppliers")
        elif self.face_value is not None:
            raise PydanticCustomError("face_value_card",
                                      "face_value is a top-up's (account:); card codes have none")
        elif self.suppliers and len(self.pools) != 1:
            raise PydanticCustomError(
                "card_pool", "cards bought from suppliers go into one pool: give exactly one "
                "pool (or account: for a top-up)")
        return self

    @property
    def topup(self) -> bool:
        """Whether the mapping is a top-up (bought for every unit into the buyer's account)."""
        return self.account is not None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        data = cls._goods(data)
        if isinstance(data, Mapping) and data.get("suppliers") and not (
                "pool" in data or "quantity" in data or "pools" in data):
            return {**data, "pools": []}
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
        for kind in ID_KEYS:
            value = getattr(self, kind)
            if value is not None:
                return kind, value
        raise AssertionError("a validated SkuMapping has exactly one id")  # pragma: no cover


def duplicate_skus(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    first: dict[tuple[str, str], int] = {}
    lines: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        for kind in (*ID_KEYS, "goods_no"):
            value = item.get(kind)
            if isinstance(value, bool) or not isinstance(value, str | int):
                continue
            key = ("outer_id" if kind == "goods_no" else kind, str(value))
            if key in first:
                lines.append(
                    f"items[{i}].{kind}: {kind} {key[1]!r} is already mapped by items[{first[key]}]"
                )
            else:
                first[key] = i
    return lines


def _pool_loc(index: int, mapping: SkuMapping, share_index: int) -> str:
    if len(mapping.pools) == 1:
        return f"items[{index}].pool"
    return f"items[{index}].pools[{share_index}].pool"


def check_suppliers(config: RobotConfig) -> list[str]:
    """Problems for shop mappings that name suppliers the robot file does not configure."""
    problems = Problems(base=config.path.parent)
    known = sorted(s.name for s in config.suppliers)
    for shop in config.shops:
        where = f"{problems.rel(shop.file)}: shop {shop.name!r}"
        for i, mapping in enumerate(shop.items):
            for j, route in enumerate(mapping.suppliers):
                if route.supplier in known:
                    continue
                hint = did_you_mean(route.supplier, known)
                listed = ", ".join(known) if known else "none"
                problems.add(where, f"items[{i}].suppliers[{j}].supplier: supplier "
                             f"{route.supplier!r} is not configured{hint}; the robot file's "
                             f"suppliers: {listed}")
    shown = problems.rel(config.path)
    for pool, rule in config.restock.items():
        if rule.supplier not in known:
            hint = did_you_mean(rule.supplier, known)
            problems.add(shown, f"restock.{pool}.supplier: supplier {rule.supplier!r} is not "
                         f"configured{hint}; the robot file's suppliers: "
                         f"{', '.join(known) if known else 'none'}")
    return problems.lines


def check_pools(config: RobotConfig, existing: set[str]) -> list[str]:
    """Problems for shop mappings that name pools not in ``existing``."""
    problems = Problems(base=config.path.parent)
    for shop in config.shops:
        where = f"{problems.rel(shop.file)}: shop {shop.name!r}"
        for i, mapping in enumerate(shop.items):
            for j, share in enumerate(mapping.pools):
                if share.pool in existing:
                    continue
                # Pool names share suffixes ("-month"): only suggest a really close one.
                hint = did_you_mean(share.pool, sorted(existing), cutoff=0.8)
                problems.add(
                    where,
                    f"{_pool_loc(i, mapping, j)}: pool {share.pool!r} does not exist{hint}; "
                    f"create it with: robot pools create {share.pool}",
                )
    for pool in config.restock:
        if pool not in existing:
            hint = did_you_mean(pool, sorted(existing), cutoff=0.8)
            problems.add(problems.rel(config.path),
                         f"restock.{pool}: pool {pool!r} does not exist{hint}; create it "
                         f"with: robot pools create {pool}")
    return problems.lines


def price_problems(items: Any, *, priced: bool) -> list[str]:
    """``price`` / ``goods_no`` where they do not belong, or missing where they must be: a
    shop whose platform buys from it as a supplier (``priced``) gives each goods its
    ``goods_no`` and ``price``; any other shop gives neither."""
    if not isinstance(items, list):
        return []
    lines: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        if priced:
            for key in ("goods_no", "price"):
                if key not in item and not (key == "goods_no" and "outer_id" in item):
                    lines.append(f"items[{i}].{key}: required for goods this shop sells to "
                                 f"its platform as a supplier")
        else:
            for key in ("goods_no", "price", "goods_name", "goods_type"):
                if key in item:
                    lines.append(f"items[{i}].{key}: only for a shop its platform buys from "
                                 f"as a supplier (platform goofish)")
    return lines
