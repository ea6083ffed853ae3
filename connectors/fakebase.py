"""The one base every platform fake stands on: its control API, its faults, its call log.

Every fake serves the same control API under ``/__fake__/`` (JSON in, JSON out), built here
by :func:`control_routes` from a :class:`FakeBase`:

==========================  ============================================================
``GET  /__fake__/state``    the fake's state: platform, platform time, clock offset,
                            faults, catalogue, the ship/memo record (``write_backs``) and
                            what the platform keeps (orders, tokens, messages)
``POST /__fake__/orders``   a paid order: ``{"sku", "quantity", "buyer", "paid_at",
                            "message", "properties"}``
                            (``robot fake order`` posts this); answers ``order_id``
``GET  /__fake__/catalog``  the SKUs the fake sells (what its seeded orders carry)
``GET|POST /__fake__/faults``  the faults armed now / arm some (see :class:`Faults`)
``GET|POST /__fake__/clock/offset``  the platform's clock offset from ours
``POST /__fake__/clock``    move a settable clock forward (``{"advance_seconds": N}``)
``GET  /__fake__/calls``    every API call received, in order, with its payload
                            (credentials and signatures redacted) and the answer given
==========================  ============================================================

Faults come from one place: :class:`Faults` (latency, an HTML 5xx page, a call that never
answers, the platform's own throttling answer, token expiry, and duplicate and out-of-order
pushes) and :meth:`FakeBase.set_faults`; a platform adds only the faults that exist on it
alone (a subclass of :class:`Faults`). The platform-specific part of each fake is its API,
its signing and its state.

A fake is a test double: nothing here may ever hold credentials for, or be pointed at, a
real platform, and its app must only ever listen on loopback (it has no auth).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from connectors.fakekit import (
    HANG_LIMIT_SECONDS,
    FakeClock,
    WriteBackLog,
    check_clock_offset,
    clock_route,
    json_object,
    platform_dated,
    platform_now,
)

#: The most calls a fake remembers (the oldest are dropped first).
CALL_LOG_SIZE = 5_000
#: No fault counter or latency goes beyond these (a typo must not hang a test for a day).
MAX_FAULT_COUNT = 1_000_000
MAX_LATENCY_MS = 60_000
#: The most units one control-API order may hold.
MAX_QUANTITY = 999
#: Parameter names whose values the call log never keeps.
CREDENTIALS = frozenset({
    "sign", "signature", "access_token", "session", "secret", "app_secret", "client_secret",
    "refresh_token", "code", "password", "apiv3_key",
})
_LONGEST_VALUE = 1_000  # characters of one logged value


@dataclass
class Faults:
    """Faults every fake injects the same way; counters count down as they fire.

    A platform's subclass adds the faults only it has (e.g. Pinduoduo's ``unavailable``).
    """

    latency_ms: int = 0  # every call waits this long first
    http_500: int = 0  # the next N calls answer an HTML 5xx page (the gateway's, not the API's)
    hang: int = 0  # the next N calls never answer (until release_hangs(): the client times out)
    throttle: int = 0  # the next N API calls answer the platform's own throttling error
    duplicate_pushes: int = 0  # the next N pushes are delivered twice
    reorder_pushes: int = 0  # the next N pushes are delivered after the one that follows them


#: The push faults (refused by a fake that pushes nothing).
PUSH_FAULTS = frozenset({"duplicate_pushes", "reorder_pushes"})
#: Faults that are actions rather than counters: ``{"expire_tokens": true}`` expires every
#: token (or, on Taobao, the seller's session) now.
ACTIONS = frozenset({"expire_tokens"})


@dataclass(frozen=True)
class CatalogItem:
    """One SKU a fake sells: what ``robot fake order --sku`` and a shop mapping name."""

    sku: str  # the value a shop file's mapping names
    mapping: str  # which mapping key names it: sku_id, outer_id or item_id
    title: str
    price: str  # yuan, two decimals

    def to_json(self) -> dict[str, str]:
        return {"sku": self.sku, "mapping": self.mapping, "title": self.title,
                "price": self.price}


@dataclass(frozen=True)
class OrderRequest:
    """A paid order asked for through the control API (``POST /__fake__/orders``)."""

    sku: str
    quantity: int = 1
    buyer: str | None = None
    paid_at: datetime | None = None  # aware; None: now (the platform's time)
    #: The buyer's message to the seller (留言) and the SKU's properties the buyer chose or
    #: typed, carried in the platform's own fields (a top-up's account, e.g.).
    message: str | None = None
    properties: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OrderRequest:
        """Read a control body; ValueError naming the field for anything malformed."""
        unknown = sorted(set(data) - {"sku", "quantity", "buyer", "paid_at", "message",
                                      "properties"})
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        sku = data.get("sku")
        if not isinstance(sku, str) or not sku.strip() or len(sku) > 64:
            raise ValueError("sku: a non-empty string of at most 64 characters")
        quantity = data.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) \
                or not 1 <= quantity <= MAX_QUANTITY:
            raise ValueError(f"quantity: a whole number from 1 to {MAX_QUANTITY}")
        buyer = data.get("buyer")
        if buyer is not None and (not isinstance(buyer, str) or not buyer.strip()
                                  or len(buyer) > 64):
            raise ValueError("buyer: a non-empty string of at most 64 characters")
        return cls(sku.strip(), quantity, buyer.strip() if buyer else None,
                   parse_paid_at(data.get("paid_at")), _message(data.get("message")),
                   _properties(data.get("properties")))


def _message(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValueError("message: a non-empty string of at most 200 characters")
    return value.strip()


def _properties(value: Any) -> tuple[tuple[str, str], ...]:
    """``{"name": "value", …}`` as pairs (at most 10, names and values short text)."""
    if value is None:
        return ()
    if not isinstance(value, dict) or len(value) > 10 or not all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 32
            and 0 < len(v) <= 64 and not set(k + v) & set(":;,")
            for k, v in value.items()):
        raise ValueError("properties: an object of at most 10 names to short texts "
                         "(no ':', ';' or ',')")
    return tuple(value.items())


def parse_paid_at(value: Any) -> datetime | None:
    """An ISO 8601 time with its offset (``2024-01-02T11:04:05+08:00``, or ``Z``) as aware
    UTC; None for None; ValueError for anything else (a time without an offset is refused:
    it would be read in some zone nobody chose)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("paid_at: an ISO 8601 time with its offset, e.g. "
                         "2024-01-02T11:04:05+08:00")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"paid_at: not an ISO 8601 time: {value[:40]!r}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("paid_at: give the offset too, e.g. 2024-01-02T11:04:05+08:00")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class CallRecord:
    """One API call as the fake received it, and what it answered."""

    seq: int
    received_at: float  # wall time (``time.time()``)
    http_method: str
    path: str
    api: str  # the API named (method, type or path)
    payload: Mapping[str, Any]  # query and body parameters, credentials redacted
    status: int  # the HTTP status answered
    outcome: str  # "ok", or the platform's error as the fake answered it

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "received_at": self.received_at,
                "http_method": self.http_method, "path": self.path, "api": self.api,
                "payload": dict(self.payload), "status": self.status, "outcome": self.outcome}


class CallLog:
    """Every API call a fake received (the last :data:`CALL_LOG_SIZE`), in order."""

    def __init__(self, size: int = CALL_LOG_SIZE) -> None:
        self._calls: collections.deque[CallRecord] = collections.deque(maxlen=size)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def record(self, http_method: str, path: str, api: str, payload: Mapping[str, Any],
               status: int, outcome: str, *, received_at: float | None = None) -> CallRecord:
        with self._lock:
            call = CallRecord(next(self._seq), time.time() if received_at is None
                              else received_at, http_method, path, api, redact(payload),
                              status, outcome)
            self._calls.append(call)
            return call

    def since(self, seq: int = 0) -> list[CallRecord]:
        with self._lock:
            return [c for c in self._calls if c.seq > seq]

    def __len__(self) -> int:
        with self._lock:
            return len(self._calls)


def redact(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` with every credential's value replaced and long values cut."""
    shown: dict[str, Any] = {}
    for key, value in payload.items():
        name = str(key)
        if name.lower() in CREDENTIALS:
            shown[name] = "<redacted>"
        elif isinstance(value, Mapping):
            shown[name] = redact(value)
        elif isinstance(value, str) and len(value) > _LONGEST_VALUE:
            shown[name] = value[:_LONGEST_VALUE] + "…"
        else:
            shown[name] = value
    return shown


def request_payload(query: Mapping[str, str], content_type: str, raw: bytes) -> dict[str, Any]:
    """What a call carried: its query parameters and its body (a JSON object's members, a
    form's fields, or the first characters of anything else)."""
    payload: dict[str, Any] = dict(query)
    if not raw.strip():
        return payload
    text = raw.decode("utf-8", errors="replace")
    if "json" in content_type:
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            body = None
        if isinstance(body, dict):
            payload.update({str(k): v for k, v in body.items()})
            return payload
    elif "x-www-form-urlencoded" in content_type:
        payload.update(parse_qsl(text, keep_blank_values=True))
        return payload
    payload["<body>"] = text[:200]
    return payload


class FakeBase:
    """What every platform fake is: a lock, a platform clock with its offset, the common
    faults, the call log and the ship/memo record, and the control operations the control
    API serves. A platform's fake mixes it in, calls :meth:`_init_base` when it is built,
    and supplies :meth:`catalog`, :meth:`create_paid_order`, :meth:`expire_tokens` and
    :meth:`platform_snapshot` (and, for the call log, :meth:`call_outcome`)."""

    #: The platform's name (``taobao``...), as ``robot fake <name>`` calls it.
    platform: ClassVar[str] = ""
    #: Whether the fake pushes (or queues) messages, so push faults mean something.
    pushes: ClassVar[bool] = False
    #: Older fault names a fake still takes, and the fault each stands for.
    fault_aliases: ClassVar[Mapping[str, str]] = {}
    #: The values a text fault may take.
    fault_choices: ClassVar[Mapping[str, frozenset[str]]] = {}

    lock: threading.RLock
    faults: Faults
    clock_offset: float
    writebacks: WriteBackLog
    call_log: CallLog
    _hang_release: threading.Event
    _local_clock: Callable[[], datetime]

    def _init_base(self, clock: Callable[[], datetime], clock_offset: float) -> None:
        self.lock = threading.RLock()
        self._hang_release = threading.Event()
        self._local_clock = clock
        self.clock_offset = check_clock_offset(clock_offset)
        self.call_log = CallLog()

    # -- the platform's clock -------------------------------------------------------------

    def now(self) -> datetime:
        """The platform's time: our clock shifted by ``clock_offset``."""
        return platform_now(self._local_clock, self.clock_offset)

    def set_clock_offset(self, seconds: float) -> None:
        """Set the platform's clock to run ``seconds`` ahead of ours (negative: behind)."""
        with self.lock:
            self.clock_offset = check_clock_offset(seconds)

    def advance_clock(self, seconds: float) -> datetime:
        """Move a settable clock forward; ValueError on the real clock or a bad step."""
        owner = getattr(self._local_clock, "__self__", None)
        if not isinstance(owner, FakeClock):
            raise LookupError("this fake runs on the real clock")
        step = check_clock_offset(seconds)
        if step < 0:
            raise ValueError("a clock only moves forward")
        owner.advance(timedelta(seconds=step))
        return self.now()

    # -- faults ---------------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> Faults:
        """Arm faults (all or none): counters and settings by name, ``expire_tokens``.
        KeyError for a fault this fake does not know; ValueError for a bad value."""
        plan: dict[str, Any] = {}
        actions: list[str] = []
        known = {f.name: f for f in dataclasses.fields(self.faults)}
        for raw_name, value in changes.items():
            name = self.fault_aliases.get(raw_name, raw_name)
            if name in ACTIONS:
                if _as_bool(name, value):
                    actions.append(name)
                continue
            if name not in known:
                raise KeyError(raw_name)
            if name in PUSH_FAULTS and not self.pushes:
                raise ValueError(f"{name}: the {self.platform} fake sends no pushes")
            plan[name] = self._fault_value(name, getattr(self.faults, name), value)
        with self.lock:
            for name, value in plan.items():
                setattr(self.faults, name, value)
            for name in actions:
                if name == "expire_tokens":
                    self.expire_tokens()
            return self.faults

    def _fault_value(self, name: str, current: Any, value: Any) -> Any:
        if isinstance(current, bool):
            return _as_bool(name, value)
        if isinstance(current, int):
            limit = MAX_LATENCY_MS if name == "latency_ms" else MAX_FAULT_COUNT
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
                raise ValueError(f"{name}: a whole number from 0 to {limit}")
            return value
        text = str(value)
        choices = self.fault_choices.get(name)
        if choices is not None and text not in choices:
            raise ValueError(f"{name}: one of {', '.join(sorted(choices))}")
        return text

    def fault_flags(self) -> dict[str, Any]:
        """What the fake's faults answer adds to the armed faults (e.g. a token state)."""
        return {}

    def take_fault(self, name: str) -> bool:
        """Whether the counter ``name`` fires for this call (and count it down)."""
        with self.lock:
            left = getattr(self.faults, name)
            if left > 0:
                setattr(self.faults, name, left - 1)
                return True
            return False

    def take_transport_fault(self) -> tuple[float, str | None]:
        """(latency seconds, "hang" | "http_500" | None) for the call arriving now."""
        with self.lock:
            latency = self.faults.latency_ms / 1000
        if self.take_fault("hang"):
            return latency, "hang"
        if self.take_fault("http_500"):
            return latency, "http_500"
        return latency, None

    def release_hangs(self) -> None:
        """Let hanging calls finish (tests call this before stopping the server)."""
        self._hang_release.set()

    def wait_hang(self, timeout: float) -> None:
        self._hang_release.wait(timeout)

    def push_order(self, items: list[Any]) -> list[Any]:
        """The pushes due now in the order they go out, duplicated and reordered as the
        armed push faults say (one place for every fake that pushes)."""
        sent: list[Any] = []
        held: Any = None
        for item in items:
            if held is None and self.take_fault("reorder_pushes"):
                held = item  # goes out after the next one
                continue
            sent.append(item)
            if self.take_fault("duplicate_pushes"):
                sent.append(item)
            if held is not None:
                sent.append(held)
                held = None
        if held is not None:
            sent.append(held)  # nothing followed it: it still goes out
        return sent

    # -- what a platform supplies -----------------------------------------------------------

    #: What the fake sells, each SKU with the platform's own fields an order line of it
    #: carries; :meth:`catalog` and :meth:`catalog_entry` read it (or a fake overrides them).
    catalog_entries: ClassVar[tuple[tuple[CatalogItem, Mapping[str, Any]], ...]] = ()

    def catalog(self) -> Sequence[CatalogItem]:
        """The SKUs this fake sells (seeded orders carry them)."""
        return [item for item, _ in self.catalog_entries]

    def create_paid_order(self, request: OrderRequest) -> str:
        """A paid order for ``request`` (a SKU outside the catalogue is sold too, as an item
        nobody mapped); its platform order id. ValueError for what the platform cannot
        carry."""
        raise NotImplementedError

    def expire_tokens(self) -> None:
        """Every access token (Taobao: the seller's session) expires now."""
        raise NotImplementedError

    def platform_snapshot(self) -> dict[str, Any]:
        """The platform's own state for ``/__fake__/state`` (orders, tokens, messages)."""
        raise NotImplementedError

    def call_outcome(self, status: int, document: Any) -> str:
        """How the call log names an answer: "ok" or the platform's error."""
        return "ok" if status == 200 else f"http {status}"

    def call_api(self, path: str, payload: Mapping[str, Any]) -> str:
        """The API a call named (the call log's ``api``)."""
        return path

    # -- what every fake does alike ---------------------------------------------------------

    def catalog_item(self, sku: str) -> CatalogItem | None:
        return next((item for item in self.catalog() if item.sku == sku), None)

    def catalog_entry(self, sku: str) -> tuple[CatalogItem | None, Mapping[str, Any] | None]:
        """The catalogue's item for ``sku`` and its platform fields; ``(None, None)`` for a SKU
        the fake does not sell."""
        return next(((item, fields) for item, fields in self.catalog_entries
                     if item.sku == sku), (None, None))

    def seed(self, count: int, *, rng: random.Random | None = None) -> list[str]:
        """Add ``count`` paid orders of catalogue SKUs (``robot fake <platform>``)."""
        rng = rng or random.Random(0)  # noqa: S311 - demo data, not security
        items = list(self.catalog())
        return [self.create_paid_order(OrderRequest(rng.choice(items).sku,
                                                    rng.randint(1, 2)))
                for _ in range(count)]

    def snapshot(self) -> dict[str, Any]:
        """What tests and demos assert on: the common part, then the platform's."""
        with self.lock:
            return {
                "platform": self.platform,
                "now": self.now().isoformat(),
                "clock_offset_seconds": self.clock_offset,
                "faults": dataclasses.asdict(self.faults),
                "catalog": [item.to_json() for item in self.catalog()],
                "calls": len(self.call_log),
                "write_backs": self.writebacks.to_json(),
                **self.platform_snapshot(),
            }

    def banner(self, base_url: str) -> list[str]:
        """The lines ``robot fake <platform>`` prints under its credentials: the SKUs it
        sells and the control commands, ready to paste."""
        lines = ["SKUs this fake sells (map them in your shop file):"]
        lines += [f"  {item.mapping}: {item.sku}  ({item.title}, {item.price} yuan)"
                  for item in self.catalog()]
        first = self.catalog()[0].sku
        lines += [
            "create a paid order:",
            f"  robot fake order --url {base_url} --sku {first} --quantity 1",
            f"state: curl {base_url}/__fake__/state",
            f"calls received: curl {base_url}/__fake__/calls",
            f"faults: curl -X POST {base_url}/__fake__/faults -d '{{\"http_500\": 1}}'",
        ]
        return lines


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    if value in (0, 1) and not isinstance(value, float):
        return bool(value)
    raise ValueError(f"{name}: true or false")


Endpoint = Callable[[Request], Awaitable[Response]]
TransportFault = Callable[[], tuple[float, str | None]]


def api_endpoint(state: FakeBase, answer: Endpoint, *, error_page: str, error_status: int,
                 fault: TransportFault | None = None) -> Endpoint:
    """Wrap a platform API endpoint: apply the transport fault due now (latency, a hang
    answered 504 once released, or ``error_page`` with ``error_status``), then let
    ``answer`` answer, and record the call in the fake's call log either way."""
    take = fault or state.take_transport_fault

    async def endpoint(request: Request) -> Response:
        received_at = time.time()
        raw = await request.body()  # starlette keeps it for ``answer`` to read again
        payload = request_payload(request.query_params,
                                  request.headers.get("content-type", ""), raw)
        latency, due = take()
        if latency:
            await asyncio.sleep(latency)
        if due == "hang":
            await asyncio.to_thread(state.wait_hang, HANG_LIMIT_SECONDS)
            response: Response = Response(error_page, status_code=504, media_type="text/html")
            outcome = "fault: hang"
        elif due == "http_500":
            response = Response(error_page, status_code=error_status, media_type="text/html")
            outcome = f"fault: http {error_status}"
        else:
            response = await answer(request)
            outcome = state.call_outcome(response.status_code, _document(response))
        state.call_log.record(request.method, request.url.path,
                              state.call_api(request.url.path, payload), payload,
                              response.status_code, outcome, received_at=received_at)
        return response

    return endpoint


def _document(response: Response) -> Any:
    try:
        return json.loads(bytes(response.body))
    except (ValueError, UnicodeDecodeError):
        return None


def error_outcome(error: Any, code_key: str, message_key: str) -> str:
    """``"error CODE MESSAGE"`` from an error object (the call log's outcome)."""
    if not isinstance(error, Mapping):
        return "error"
    return f"error {error.get(code_key)} {error.get(message_key)}".strip()


def control_routes(state: FakeBase) -> list[BaseRoute]:  # noqa: C901 - mccabe sums the nested route handlers; each is under 5 paths
    """The control API every fake serves (see the module docstring)."""

    async def snapshot(request: Request) -> Response:
        return JSONResponse(state.snapshot())

    async def catalog(request: Request) -> Response:
        return JSONResponse([item.to_json() for item in state.catalog()])

    async def orders(request: Request) -> Response:
        try:
            order = OrderRequest.from_json(await json_object(request))
            if order.paid_at is not None and order.paid_at > state.now() + timedelta(minutes=1):
                raise ValueError("paid_at: a payment cannot lie in the platform's future")
            order_id = state.create_paid_order(order)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        item = state.catalog_item(order.sku)
        return JSONResponse({"platform": state.platform, "order_id": order_id,
                             "sku": order.sku, "quantity": order.quantity,
                             "in_catalog": item is not None})

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                state.set_faults(**await json_object(request))
            except KeyError as exc:
                return JSONResponse({"error": f"unknown fault {exc}"}, status_code=400)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        with state.lock:
            return JSONResponse({**dataclasses.asdict(state.faults), **state.fault_flags()})

    async def advance(request: Request) -> Response:
        try:
            data = await json_object(request)
            moved = state.advance_clock(data.get("advance_seconds", 0))
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        except ValueError as exc:
            return JSONResponse({"error": f"expected {{'advance_seconds': N}} ({exc})"},
                                status_code=400)
        return JSONResponse({"now": moved.isoformat()})

    async def calls(request: Request) -> Response:
        since = request.query_params.get("since", "0")
        if not since.isdigit() or len(since) > 18:
            return JSONResponse({"error": "since: a call number"}, status_code=400)
        return JSONResponse([c.to_json() for c in state.call_log.since(int(since))])

    return [
        Route("/__fake__/state", snapshot, methods=["GET"]),
        Route("/__fake__/catalog", catalog, methods=["GET"]),
        Route("/__fake__/orders", orders, methods=["POST"]),
        Route("/__fake__/faults", faults, methods=["GET", "POST"]),
        Route("/__fake__/clock", advance, methods=["POST"]),
        Route("/__fake__/calls", calls, methods=["GET"]),
        clock_route(state),
    ]


def fake_middleware(state: FakeBase) -> list[Middleware]:
    """The middleware every fake's app runs (answers dated by the platform's clock)."""
    return platform_dated(state)


__all__ = [
    "ACTIONS",
    "CALL_LOG_SIZE",
    "PUSH_FAULTS",
    "CallLog",
    "CallRecord",
    "CatalogItem",
    "FakeBase",
    "Faults",
    "OrderRequest",
    "api_endpoint",
    "control_routes",
    "error_outcome",
    "fake_middleware",
    "parse_paid_at",
    "redact",
    "request_payload",
]
