"""Which platform item or SKU takes codes from which pools (a shop file's ``items:``).

Also the checks on mappings that need more than one entry (a SKU mapped twice) or the database
(every pool a mapping names exists).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from robot.config.problems import Problems, did_you_mean
from robot.config.types import ID_KEYS, PlatformId, StrictModel, Yuan

if TYPE_CHECKING:  # only a type here: robot_file imports this module
    from robot.config.robot_file import RobotConfig


class PoolShare(StrictModel):
    """Codes from one pool per unit sold."""

    pool: str = Field(min_length=1, max_length=64)
    quantity: int = Field(default=1, ge=1)


class SkuMapping(StrictModel):
    """Which platform item/SKU takes codes from which pools.

    Exactly one of ``item_id`` / ``sku_id`` / ``outer_id``. ``pool:`` + ``quantity:`` is
    shorthand for a one-pool ``pools:`` list.

    A shop that sells to its platform as a supplier (闲管家) names its goods ``goods_no:``
    (our goods number, i.e. the merchant's own code: stored as ``outer_id``) with the
    ``price:`` (yuan per unit) the platform pays and an optional ``goods_name:``.
    ``goods_type: recharge`` (a top-up) needs supplier routing, which the robot has not got
    yet: such a mapping is refused with that reason.
    """

    item_id: PlatformId = None
    sku_id: PlatformId = None
    outer_id: PlatformId = None
    pools: list[PoolShare] = Field(min_length=1)
    price: Yuan | None = None
    goods_name: str | None = Field(default=None, min_length=1, max_length=128)

    @staticmethod
    def _goods(data: Any) -> Any:
        """``goods_no`` / ``goods_type`` (a supplier shop's words) as the mapping's own."""
        if not isinstance(data, Mapping) or not ("goods_no" in data or "goods_type" in data):
            return data
        kind = data.get("goods_type", "card")
        if kind == "recharge":
            raise PydanticCustomError(
                "needs_supplier_routing",
                "goods_type 'recharge' (a top-up) needs supplier routing, which this robot "
                "has not got yet; map card goods to a pool")
        if kind != "card":
            raise PydanticCustomError("goods_type", "goods_type is 'card' or 'recharge'")
        rest = {k: v for k, v in data.items() if k not in ("goods_no", "goods_type")}
        if "goods_no" in data:
            if "outer_id" in data:
                raise PydanticCustomError(
                    "goods_no_and_outer_id", "goods_no is the outer_id: give one of them")
            rest["outer_id"] = data["goods_no"]
        return rest

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        data = cls._goods(data)
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
