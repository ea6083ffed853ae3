"""An in-memory platform and its connector, shipped for tests and for trying the robot.

:class:`MemoryPlatform` keeps orders, shipments and memos like a real platform would: a
shipped order cannot be shipped again (the answer is "already shipped"), a closed or
refunding order cannot be shipped at all, and every applied shipment is counted so tests can
prove "shipped exactly once". Faults can be injected per call kind.

With ``state_file`` set the platform lives in a JSON file, replaced atomically under an
exclusive ``flock`` of a lock file beside it, so several processes (a robot that is killed
and restarted, and the test that checks it) see one platform. Pushes are signed with
HMAC-SHA256 over the raw body (``X-Memory-Sign``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr

from connectors.base import (
    CheckReport,
    Connector,
    Order,
    OrderLine,
    PlatformStatus,
    PollResult,
    PushBatch,
    PushEvent,
    PushKind,
    RefundState,
    Shipment,
    ShipOutcome,
    ShopContext,
)
from connectors.errors import AuthError, NotShippable, PushRejected, Throttled, Unavailable

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from connectors.plugin import DemoDriver
    from connectors.testing.harness import ChannelHarness

FAULT_KINDS = ("poll", "fetch", "ship", "memo")
# The in-memory platform is for tests and trials; its push secret is public on purpose.
TEST_PUSH_SECRET = "memory-push-secret"  # noqa: S105


def order_to_json(order: Order) -> dict[str, Any]:
    data = dataclasses.asdict(order)
    for key in ("paid_at", "modified_at"):
        value = data[key]
        data[key] = value.isoformat() if value is not None else None
    data["extra"] = dict(order.extra)
    return data


def order_from_json(data: Mapping[str, Any]) -> Order:
    lines = tuple(
        OrderLine(**{**line, "refund": RefundState(line.get("refund", "none")),
                     "properties": tuple((str(k), str(v))
                                         for k, v in line.get("properties") or ())})
        for line in data["lines"]
    )
    return Order(
        platform_order_id=str(data["platform_order_id"]),
        status=PlatformStatus(data["status"]),
        lines=lines,
        total_cents=int(data.get("total_cents", 0)),
        currency=str(data.get("currency", "CNY")),
        paid_at=datetime.fromisoformat(data["paid_at"]) if data.get("paid_at") else None,
        modified_at=(datetime.fromisoformat(data["modified_at"])
                     if data.get("modified_at") else None),
        buyer_id=data.get("buyer_id"),
        buyer_ip=data.get("buyer_ip"),
        buyer_email=data.get("buyer_email"),
        buyer_phone=data.get("buyer_phone"),
        buyer_message=data.get("buyer_message"),
        extra=dict(data.get("extra") or {}),
        shipped_on_platform=data.get("shipped_on_platform"),
    )


def _empty_state() -> dict[str, Any]:
    return {"seq": 0, "orders": {}, "changes": {}, "shipments": {}, "memos": {}, "faults": {}}


class MemoryPlatform:
    """The platform's side: orders and what was applied to them."""

    _named: ClassVar[dict[str, MemoryPlatform]] = {}
    _named_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, state_file: Path | None = None, *, tells_shipments: bool = True) -> None:
        self._file = state_file
        #: Whether order reads say if the order was ever shipped (``shipped_on_platform``),
        #: as most platforms' order details do; False plays one that shows only a status.
        self.tells_shipments = tells_shipments
        self._lock = threading.Lock()
        self._state = _empty_state()

    @classmethod
    def named(cls, name: str) -> MemoryPlatform:
        """One shared in-process platform per name."""
        with cls._named_lock:
            if name not in cls._named:
                cls._named[name] = MemoryPlatform()
            return cls._named[name]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            if self._file is None:
                yield self._state
                return
            # The lock lives in a file of its own: the state file is replaced whole (write a
            # temporary file, then rename), so a process SIGKILLed mid-write leaves the old
            # state or the new one, never a truncated file that reads as an empty platform.
            fd = os.open(f"{self._file}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    raw = self._file.read_bytes()
                except FileNotFoundError:
                    raw = b""
                state = json.loads(raw) if raw else _empty_state()
                yield state
                data = json.dumps(state).encode()
                if data != raw:
                    tmp = self._file.with_name(f"{self._file.name}.{os.getpid()}.tmp")
                    with tmp.open("wb") as out:
                        out.write(data)
                        out.flush()
                        os.fsync(out.fileno())
                    os.replace(tmp, self._file)
            finally:
                os.close(fd)  # closing releases the flock

    # -- the merchant's / buyer's side (used by tests and the demo) --------------------------
    def put_order(self, order: Order) -> None:
        """Create or replace an order (a payment, a close, a refund...)."""
        with self._locked() as st:
            st["seq"] += 1
            st["orders"][order.platform_order_id] = order_to_json(order)
            st["changes"][order.platform_order_id] = st["seq"]

    def set_status(self, order_id: str, status: PlatformStatus,
                   refund: RefundState | None = None) -> None:
        with self._locked() as st:
            data = st["orders"][order_id]
            data["status"] = status.value
            if refund is not None:
                for line in data["lines"]:
                    line["refund"] = refund.value
            st["seq"] += 1
            st["changes"][order_id] = st["seq"]

    def inject(self, kind: str, error: str, times: int = 1,
               retry_after: float | None = None) -> None:
        """Make the next ``times`` calls of ``kind`` fail with ``error`` (unavailable |
        throttled | auth)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._locked() as st:
            st["faults"][kind] = {"error": error, "times": times, "retry_after": retry_after}

    def shipments(self, order_id: str) -> int:
        with self._locked() as st:
            return int(st["shipments"].get(order_id, 0))

    def all_shipments(self) -> dict[str, int]:
        with self._locked() as st:
            return {k: int(v) for k, v in st["shipments"].items()}

    def memo(self, order_id: str) -> str | None:
        with self._locked() as st:
            value = st["memos"].get(order_id)
            return str(value) if value is not None else None

    def order(self, order_id: str) -> Order:
        with self._locked() as st:
            return order_from_json(st["orders"][order_id])

    # -- the platform API (called by the connector) -------------------------------------------
    def _fault(self, st: dict[str, Any], kind: str) -> None:
        fault = st["faults"].get(kind)
        if not fault or fault["times"] <= 0:
            return
        fault["times"] -= 1
        if fault["error"] == "throttled":
            raise Throttled("memory platform throttled", retry_after=fault["retry_after"])
        if fault["error"] == "auth":
            raise AuthError("memory platform: authorization expired")
        raise Unavailable("memory platform unavailable")

    def changed_after(self, seq: int, kind: str) -> tuple[list[Order], int]:
        with self._locked() as st:
            self._fault(st, kind)
            changed = sorted((s, oid) for oid, s in st["changes"].items() if s > seq)
            return [order_from_json(st["orders"][oid]) for _, oid in changed], int(st["seq"])

    def get(self, order_id: str) -> Order:
        with self._locked() as st:
            self._fault(st, "fetch")
            if order_id not in st["orders"]:
                raise NotShippable(f"order {order_id} not found on the platform")
            order = order_from_json(st["orders"][order_id])
            if not self.tells_shipments:
                return order
            return dataclasses.replace(order, shipped_on_platform=order_id in st["shipments"])

    def ship(self, order_id: str) -> ShipOutcome:
        with self._locked() as st:
            self._fault(st, "ship")
            data = st["orders"].get(order_id)
            if data is None:
                raise NotShippable(f"order {order_id} not found on the platform")
            status = PlatformStatus(data["status"])
            if status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED):
                return ShipOutcome.ALREADY_SHIPPED
            refunding = any(line["refund"] in ("requested", "refunded") for line in data["lines"])
            if status is not PlatformStatus.PAID or refunding:
                raise NotShippable(f"order {order_id} is {status.value} on the platform")
            data["status"] = PlatformStatus.SHIPPED.value
            st["shipments"][order_id] = int(st["shipments"].get(order_id, 0)) + 1
            st["seq"] += 1
            st["changes"][order_id] = st["seq"]
            return ShipOutcome.SHIPPED

    def write_memo(self, order_id: str, memo: str) -> None:
        with self._locked() as st:
            self._fault(st, "memo")
            st["memos"][order_id] = memo


class MemoryConfig(BaseModel):
    """Shop settings for the in-memory platform."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"  # which in-process platform (MemoryPlatform.named)
    state_file: str | None = None  # share the platform across processes through this file
    push_secret: SecretStr = SecretStr(TEST_PUSH_SECRET)


def sign_push(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class MemoryConnector:
    """The connector for :class:`MemoryPlatform`."""

    platform: ClassVar[str] = "memory"
    receives_push: ClassVar[bool] = True

    def __init__(self, platform: MemoryPlatform, push_secret: str = TEST_PUSH_SECRET) -> None:
        self.backend = platform
        self._push_secret = push_secret

    async def poll(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        seq = int((cursor or {}).get("seq", 0))
        changed, head = self.backend.changed_after(seq, "poll")
        paid = tuple(o for o in changed if o.status is PlatformStatus.PAID)
        return PollResult(orders=paid, cursor={"seq": head})

    async def fetch_order(self, platform_order_id: str) -> Order:
        return self.backend.get(platform_order_id)

    async def poll_refunds(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        seq = int((cursor or {}).get("seq", 0))
        changed, head = self.backend.changed_after(seq, "poll")
        hit = tuple(
            o for o in changed
            if o.status is PlatformStatus.CLOSED
            or any(line.refund is not RefundState.NONE for line in o.lines)
        )
        return PollResult(orders=hit, cursor={"seq": head})

    def parse_push(self, headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
        lowered = {k.lower(): v for k, v in headers.items()}
        given = lowered.get("x-memory-sign", "")
        if not hmac.compare_digest(given, sign_push(self._push_secret, body)):
            raise PushRejected("bad or missing X-Memory-Sign")
        try:
            payload = json.loads(body)
            order = order_from_json(payload["order"])
            message_id = str(payload["message_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PushRejected("push body is not a memory order message") from exc
        kind = PushKind.PAID if order.status is PlatformStatus.PAID else PushKind.CLOSED
        event = PushEvent(kind=kind, platform_order_id=order.platform_order_id,
                          message_id=message_id, order=order)
        return PushBatch(events=(event,), reply_body=b'{"ok":true}')

    async def ship(self, shipment: Shipment) -> ShipOutcome:
        return self.backend.ship(shipment.order.platform_order_id)

    async def write_memo(self, order: Order, memo: str) -> None:
        self.backend.write_memo(order.platform_order_id, memo)

    async def check(self) -> CheckReport:
        return CheckReport(ok=True, checks=(("platform reachable", True, "in-memory"),))

    async def aclose(self) -> None:
        return None


class MemoryConnectorFactory:
    platform: ClassVar[str] = "memory"
    config_model: ClassVar[type[BaseModel]] = MemoryConfig

    def create(self, config: BaseModel, context: ShopContext) -> Connector:
        assert isinstance(config, MemoryConfig)
        if config.state_file:
            backend = MemoryPlatform(Path(config.state_file))
        else:
            backend = MemoryPlatform.named(config.name)
        return MemoryConnector(backend, config.push_secret.get_secret_value())

    def demo_driver(self) -> DemoDriver:
        """The driver ``robot demo`` runs this platform's fake with."""
        from connectors.memory.demo import driver

        return driver()

    def contract_harness(self) -> AbstractContextManager[ChannelHarness]:
        """The contract suite's harness: the connector wired to the fake."""
        from connectors.memory.harness import make_harness

        return make_harness()
