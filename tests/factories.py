"""Test builders: shops without YAML, pools seeded directly, platform orders.

Seeding writes rows the same way an import does (encrypted, fingerprinted, one batch) but
without reading a file, so allocation tests stay fast. Codes are synthetic ("T-…").
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import Engine, insert, select

from connectors.base import Order, OrderLine, PlatformStatus, RefundState
from robot.clock import NEVER, utcnow
from robot.pools import reserve_code_ids
from robot.schema import batches, codes, pools, stock
from robot.vault import AAD_CURRENT, Vault

_counter = itertools.count(1)


@dataclass(frozen=True)
class Share:
    pool: str
    quantity: int = 1


@dataclass(frozen=True)
class Mapping:
    pools: tuple[Share, ...]
    item_id: str | None = None
    sku_id: str | None = None
    outer_id: str | None = None


@dataclass(frozen=True)
class Shop:
    name: str = "shop-a"
    platform: str = "memory"
    unmapped: Literal["hold", "ignore"] = "hold"
    items: tuple[Mapping, ...] = field(default_factory=tuple)
    memo_template: str = "[robot] {masked_codes} {pickup_url}"
    item_desc: str = "{title} x{quantity}"


def sku(sku_id: str, *shares: tuple[str, int]) -> Mapping:
    return Mapping(pools=tuple(Share(p, q) for p, q in shares), sku_id=sku_id)


def ensure_pool(engine: Engine, name: str) -> int:
    with engine.begin() as conn:
        row = conn.execute(select(pools.c.id).where(pools.c.name == name)).first()
        if row is not None:
            return int(row.id)
        return int(conn.execute(insert(pools).values(name=name, created_at=utcnow()))
                   .inserted_primary_key[0])


def seed_codes(engine: Engine, vault: Vault, pool: str, count: int, *,
               expires_at: datetime | None = None, prefix: str | None = None) -> list[str]:
    """Put ``count`` fresh synthetic codes into ``pool``; returns the plaintexts."""
    pid = ensure_pool(engine, pool)
    tag = prefix or f"T{next(_counter):04d}"
    secrets = [f"{tag}-{pool}-{i:07d}-ZZ" for i in range(count)]
    now = utcnow()
    with engine.begin() as conn:
        bid = conn.execute(insert(batches).values(
            pool_id=pid, state="active", file_name="seed", file_sha256="0" * 64,
            code_count=count, imported_by="test", created_at=now, updated_at=now,
        )).inserted_primary_key[0]
    ids = list(reserve_code_ids(engine, count))
    with engine.begin() as conn:
        rows = []
        for i, (cid, secret) in enumerate(zip(ids, secrets, strict=True)):
            fp = vault.fingerprint(secret)
            kid, blob = vault.encrypt(secret, code_id=cid, pool_id=pid, fingerprint=fp)
            rows.append({"id": cid, "pool_id": pid, "batch_id": bid, "source_line": i + 1,
                         "fingerprint": fp, "key_id": kid, "ciphertext": blob,
                         "expires_at": expires_at, "created_at": now,
                         "aad_version": AAD_CURRENT})
        if rows:
            conn.execute(insert(codes), rows)
        conn.execute(insert(stock), [{"code_id": cid, "pool_id": pid,
                                      "expires_at": expires_at or NEVER} for cid in ids])
    return secrets


def paid_order(order_id: str, *lines: tuple[str, int], buyer: str = "buyer-1",
               status: PlatformStatus = PlatformStatus.PAID,
               refund: RefundState = RefundState.NONE) -> Order:
    """A platform order whose lines are (sku_id, quantity)."""
    return Order(
        platform_order_id=order_id,
        status=status,
        lines=tuple(OrderLine(line_id=f"{order_id}-{i}", quantity=q, sku_id=s, title=f"item {s}",
                              unit_price_cents=1000, refund=refund)
                    for i, (s, q) in enumerate(lines)),
        total_cents=1000 * sum(q for _, q in lines),
        buyer_id=buyer,
    )
