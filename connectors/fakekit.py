"""Pieces every platform fake shares: a settable clock and its offset from ours (the
platform's clock running ahead or behind: its order times, windows and ``Date`` header all
follow it), JSON control bodies, the sender (and its background loop)
that delivers a fake's pushes, and the record of every ship and memo call a fake received
(:class:`WriteBackLog`). The base every fake is built on (control API, faults, call log) is
:mod:`connectors.fakebase`.

Only logic that is the same for every fake that uses it lives here; what a platform answers
stays in its own ``fake_state.py``/``fake.py``. Like the fakes themselves, nothing here may
ever hold credentials for, or be pointed at, a real platform.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

import httpx
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Where a fake's clock starts when the test does not say.
DEFAULT_START = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
#: How long a "hang" fault holds a request at most (tests release it sooner).
HANG_LIMIT_SECONDS = 120.0


def wall_now() -> datetime:
    """The real time, aware UTC (a fake's clock when no test clock is given)."""
    return datetime.now(UTC)


class FakeClock:
    """A settable clock for the fake (and for the connector under test): aware UTC."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or DEFAULT_START).astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        with self._lock:
            self._now += step
            return self._now


Endpoint = Callable[[Request], Awaitable[Response]]

#: The largest clock offset a fake accepts (seconds either way).
MAX_CLOCK_OFFSET = 7 * 86400.0


def check_clock_offset(value: Any) -> float:
    """A fake's clock offset in seconds (negative: the platform is behind); ValueError if it
    is not a finite number within :data:`MAX_CLOCK_OFFSET`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("clock offset must be a number of seconds")
    seconds = float(value)
    if not math.isfinite(seconds) or abs(seconds) > MAX_CLOCK_OFFSET:
        raise ValueError(f"clock offset must be within ±{MAX_CLOCK_OFFSET:.0f} seconds")
    return seconds


def platform_now(clock: Callable[[], datetime], offset_seconds: float) -> datetime:
    """The platform's time: ``clock()`` (ours) shifted by the fake's clock offset, aware UTC."""
    return clock().astimezone(UTC) + timedelta(seconds=offset_seconds)


class PlatformDate:
    """ASGI middleware: every answer's ``Date`` header is the fake platform's time, as a
    real gateway's is its own (the server's own ``Date`` must be turned off)."""

    def __init__(self, app: ASGIApp, now: Callable[[], datetime]) -> None:
        self.app = app
        self.now = now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                stamp = format_datetime(self.now().astimezone(UTC), usegmt=True)
                message = {**message, "headers": [*headers, (b"date", stamp.encode())]}
            await send(message)

        await self.app(scope, receive, dated)


class ClockedFake(Protocol):
    """A fake whose platform clock runs ``clock_offset`` seconds from ours."""

    clock_offset: float

    def now(self) -> datetime: ...

    def set_clock_offset(self, seconds: float) -> None: ...


def clock_route(state: ClockedFake) -> Route:
    """``GET|POST /__fake__/clock/offset``: the fake platform's time and its offset from
    ours; POST ``{"offset_seconds": N}`` sets the offset (400 for anything else)."""

    async def clock(request: Request) -> Response:
        if request.method == "POST":
            try:
                data = await json_object(request)
                state.set_clock_offset(check_clock_offset(data["offset_seconds"]))
            except (ValueError, KeyError) as exc:
                return JSONResponse({"error": f"expected {{'offset_seconds': N}} ({exc})"},
                                    status_code=400)
        return JSONResponse({"now": state.now().isoformat(),
                             "offset_seconds": state.clock_offset})

    return Route("/__fake__/clock/offset", clock, methods=["GET", "POST"])


def platform_dated(state: ClockedFake) -> list[Middleware]:
    """The middleware that dates a fake's answers by its platform clock (see
    :class:`PlatformDate`)."""
    return [Middleware(PlatformDate, now=state.now)]


def same_text(sent: str, expected: str) -> bool:
    """Whether ``sent`` equals ``expected``, compared in constant time (as a gateway compares
    keys, tokens and signatures); any text is fine, non-ASCII too."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"),
                               expected.encode("utf-8", "surrogatepass"))


async def json_object(request: Request) -> dict[str, Any]:
    """A control endpoint's JSON object body (empty body: ``{}``); ValueError otherwise."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


#: A masked code as the robot writes it (``12****89``; a short code is all stars). Plaintext
#: never matches: the record keeps what was sent, and a fake is never sent plaintext.
MASKED_CODE = re.compile(r"[^\s*/]{0,2}\*{4,}[^\s*/]{0,2}")
#: A pickup link (an absolute http(s) URL whose path ends in ``/p/<token>``); other links,
#: such as a pool's redemption link handed with each code, are not pickup links.
LINK = re.compile(r"https?://[^\s<>\"']*/p/[^\s<>\"'/?#]+")


def masked_codes_in(text: str) -> tuple[str, ...]:
    """The masked codes in ``text``, in order (a card/password pair counts as two)."""
    return tuple(MASKED_CODE.findall(text))


def links_in(text: str) -> tuple[str, ...]:
    return tuple(LINK.findall(text))


@dataclass(frozen=True)
class WriteBackCall:
    """One ship or memo call as the fake received it, whatever it answered."""

    seq: int  # receipt order within this fake
    #: real wall time of receipt (``time.time()``), not the fake's settable clock: the
    #: chaos harness orders it against the robot's own timestamps
    received_at: float
    kind: Literal["ship", "memo"]
    order_id: str  # the platform order id the call was for
    payload: Mapping[str, str]  # the business fields sent (never credentials or signatures)
    outcome: str  # "applied", or the refusal the fake answered with
    masked_codes: tuple[str, ...] = ()  # found in the payload's text
    links: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "received_at": self.received_at, "kind": self.kind,
                "order_id": self.order_id, "payload": dict(self.payload),
                "outcome": self.outcome, "masked_codes": list(self.masked_codes),
                "links": list(self.links)}


@dataclass
class WriteBackLog:
    """Every ship and memo call a fake received, in order, with its payload and the fake's
    answer: refused second shipments too, so "shipped twice" can be seen (a shipment counter
    alone never passes 1, because the platform refuses the second). Shared by every fake;
    served in each fake's ``/__fake__/state`` under ``write_backs``."""

    calls: list[WriteBackCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = itertools.count(1)

    def record(self, kind: Literal["ship", "memo"], order_id: object,
               payload: Mapping[str, object], outcome: str = "applied", *,
               received_at: float | None = None) -> WriteBackCall:
        """Record one call (received now unless ``received_at`` says when); ``payload``
        values are kept as text (None dropped)."""
        sent = {k: str(v) for k, v in payload.items() if v is not None}
        text = " ".join(sent.values())
        when = time.time() if received_at is None else received_at
        with self._lock:
            call = WriteBackCall(next(self._seq), when, kind, str(order_id), sent,
                                 outcome, masked_codes_in(text), links_in(text))
            self.calls.append(call)
        return call

    def to_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [c.to_json() for c in self.calls]


class RecordsWriteBacks(Protocol):
    """A fake whose ship and memo handlers are wrapped by :func:`records`."""

    writebacks: WriteBackLog


Fake = TypeVar("Fake", bound=RecordsWriteBacks)
Sent = TypeVar("Sent")
Answer = TypeVar("Answer")


def sent_fields(id_field: str, *fields: str) -> Callable[[Any, Mapping[str, Any]],
                                                          tuple[object, Mapping[str, object]]]:
    """For :func:`records` on flat parameters: the order id is ``id_field``; the payload is
    ``id_field`` and ``fields`` (those present)."""

    def describe(_fake: Any, params: Mapping[str, Any]) -> tuple[object, Mapping[str, object]]:
        return params.get(id_field, ""), {f: params.get(f) for f in (id_field, *fields)}

    return describe


def records(kind: Literal["ship", "memo"],
            describe: Callable[[Fake, Sent], tuple[object, Mapping[str, object]]], *,
            refusal: Callable[[Answer], str | None] | None = None,
            ) -> Callable[[Callable[[Fake, Sent], Answer]], Callable[[Fake, Sent], Answer]]:
    """Wrap a fake's ship or memo handler so that every call it receives lands in the fake's
    :class:`WriteBackLog`: ``applied`` when it answers, ``refused: ...`` when it raises the
    platform's error (re-raised) or when ``refusal`` reads a refusal in its answer (platforms
    that answer errors as data). ``describe`` names the order and the payload sent."""

    def wrap(handler: Callable[[Fake, Sent], Answer]) -> Callable[[Fake, Sent], Answer]:
        @functools.wraps(handler)
        def recorded(fake: Fake, sent: Sent) -> Answer:
            received_at = time.time()
            order_id, payload = describe(fake, sent)
            try:
                answer = handler(fake, sent)
            except Exception as exc:
                detail = " ".join(str(a) for a in exc.args) or type(exc).__name__
                fake.writebacks.record(kind, order_id, payload, f"refused: {detail}",
                                       received_at=received_at)
                raise
            refused = refusal(answer) if refusal is not None else None
            fake.writebacks.record(kind, order_id, payload,
                                   f"refused: {refused}" if refused else "applied",
                                   received_at=received_at)
            return answer

        return recorded

    return wrap


Item = TypeVar("Item")


class Deliverable(Protocol):
    """A message a fake pushes: delivered, or given up after its retries."""

    delivered: bool
    given_up: bool


def push_summary(url: str | None, messages: Iterable[Deliverable]) -> dict[str, Any]:
    """A fake's pushes for its ``/__fake__/state``: where they go and how many are pending,
    delivered and given up."""
    items = list(messages)
    return {"url": url,
            "pending": sum(1 for m in items if not m.delivered and not m.given_up),
            "delivered": sum(1 for m in items if m.delivered),
            "given_up": sum(1 for m in items if m.given_up)}


class HttpSender(Generic[Item]):
    """Posts a fake's due pushes, in order, to the URL it is configured with, and reports
    each attempt back to the fake (which schedules the retries). Blocking: call it from a
    worker thread. The fake's lock is never held while a request is in flight (the receiver
    may call the fake's API before it answers).

    A platform's sender says where to post (:meth:`_url`), what is due (:meth:`_due`), how an
    item is sent (:meth:`_request`), what answer accepts it (:meth:`_accepted`) and how an
    attempt is recorded (:meth:`_record`).
    """

    def __init__(self, *, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(timeout=timeout, transport=transport)
        self._sending = threading.Lock()  # one delivery round at a time keeps order
        self.answers: list[tuple[str, int]] = []  # (item id, HTTP status or 0), for tests

    def close(self) -> None:
        self._client.close()

    def deliver_due(self) -> int:
        """Post every item due now (in order); returns how many were accepted."""
        url = self._url()
        if not url:
            return 0
        delivered = 0
        with self._sending:
            for item in self._order(self._due()):
                ok = self._post(url, item)
                self._record(item, ok)
                delivered += ok
        return delivered

    def _post(self, url: str, item: Item) -> bool:
        item_id, body, headers = self._request(item)
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            self.answers.append((item_id, 0))
            return False
        self.answers.append((item_id, response.status_code))
        return self._accepted(response)

    def _url(self) -> str | None:
        raise NotImplementedError

    def _due(self) -> list[Item]:
        raise NotImplementedError

    def _order(self, due: list[Item]) -> list[Item]:
        """The due items in the order they go out (a fake's push faults duplicate and
        reorder them here)."""
        return due

    def _request(self, item: Item) -> tuple[str, bytes, Mapping[str, str]]:
        """(the item's id, the body, the headers) for one attempt."""
        raise NotImplementedError

    def _accepted(self, response: httpx.Response) -> bool:
        raise NotImplementedError

    def _record(self, item: Item, ok: bool) -> None:
        raise NotImplementedError


def deliver_endpoint(sender: HttpSender[Any] | None,
                     make_sender: Callable[[], HttpSender[Any]]) -> Endpoint:
    """``POST /__fake__/.../deliver``: one delivery round now, by ``sender`` (or one made by
    ``make_sender`` on the first call); answers how many items were accepted."""
    senders: list[HttpSender[Any]] = [sender] if sender is not None else []

    async def deliver(request: Request) -> Response:
        if not senders:
            senders.append(make_sender())
        delivered = await asyncio.to_thread(senders[0].deliver_due)
        return JSONResponse({"delivered": delivered})

    return deliver


class DeliveryLoop:
    """Runs ``deliver`` (a sender's ``deliver_due``) every ``interval`` seconds in a daemon
    thread, until :meth:`stop`."""

    def __init__(self, deliver: Callable[[], object], *, name: str,
                 interval: float = 1.0) -> None:
        self._deliver = deliver
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._deliver()


__all__ = [
    "DEFAULT_START",
    "HANG_LIMIT_SECONDS",
    "MAX_CLOCK_OFFSET",
    "ClockedFake",
    "Deliverable",
    "DeliveryLoop",
    "FakeClock",
    "HttpSender",
    "PlatformDate",
    "RecordsWriteBacks",
    "WriteBackCall",
    "WriteBackLog",
    "check_clock_offset",
    "clock_route",
    "deliver_endpoint",
    "json_object",
    "links_in",
    "masked_codes_in",
    "platform_dated",
    "platform_now",
    "push_summary",
    "records",
    "same_text",
    "sent_fields",
    "wall_now",
]
