"""``POST /suppliers/{name}/callback``: verified by the plugin, then only a nudge for the
sourcing worker (which queries); refused callbacks write nothing."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from sqlalchemy import Engine, select

from connectors.memsupplier import MemorySupplier, MemorySupplierBackend
from robot import pipeline
from robot.clock import utcnow
from robot.config import SkuMapping
from robot.schema import outbox, supplier_attempts
from robot.vault import Vault
from tests.factories import Shop, paid_order
from tests.http.conftest import make_http

TOPUP = SkuMapping.model_validate({
    "sku_id": "t50", "account": {"source": "buyer_message"},
    "suppliers": [{"supplier": "ms", "product": "topup-mobile-50", "max_cost": "49.90"}]})


def test_a_verified_callback_makes_the_order_due_and_a_forged_one_is_refused(
        engine: Engine, vault: Vault) -> None:
    """A genuine callback answers the supplier's expected reply and makes the source job due
    now; a forged one is refused with 401 and changes nothing."""
    backend = MemorySupplierBackend()
    woken: list[int] = []
    h = make_http(engine, vault, suppliers={"ms": MemorySupplier(backend)},
                  wake_sourcing=lambda: woken.append(1))
    order = dataclasses.replace(paid_order("CB1", ("t50", 1)), buyer_message="13812345678")
    result = pipeline.intake(engine, Shop(items=(TOPUP,)), order,  # type: ignore[arg-type]
                             allocate=True)
    assert result.order_id is not None and result.state == "sourcing"
    later = utcnow() + timedelta(hours=1)
    with engine.begin() as conn:
        conn.execute(outbox.update().where(outbox.c.kind == "source").values(due_at=later))
    with engine.connect() as conn:
        key = conn.execute(select(supplier_attempts.c.key)).scalar_one()
    import asyncio

    from connectors.supplier import PurchaseRequest

    asyncio.run(MemorySupplier(backend).place(PurchaseRequest(key, "topup-mobile-50",
                                                              account="13812345678")))
    headers, body = backend.callback(key)
    with h.client:
        forged = h.client.post("/suppliers/ms/callback", content=body,
                               headers={**headers, "X-Memsupplier-Sign": "0" * 64})
        assert forged.status_code == 401 and woken == []
        with engine.connect() as conn:
            assert conn.execute(select(outbox.c.due_at)
                                .where(outbox.c.kind == "source")).scalar_one() == later
        ok = h.client.post("/suppliers/ms/callback", content=body, headers=headers)
        assert ok.status_code == 200 and ok.content == b"success" and woken == [1]
        assert h.client.post("/suppliers/nobody/callback", content=body).status_code == 404
    with engine.connect() as conn:
        assert conn.execute(select(outbox.c.due_at)
                            .where(outbox.c.kind == "source")).scalar_one() < later
