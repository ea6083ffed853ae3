"""``POST /hooks/{shop}``: push intake for platforms that send us their order messages.

Order of work, so that a reply never promises more than is durable:

1. unknown shop (or one whose connector takes no pushes) → 404; body over the limit → 413;
2. ``connector.parse_push`` verifies the request with no side effects; a rejection answers
   401 (verification failed) or 400 (the body is not a message), and nothing is written;
3. :func:`robot.poller.apply_events` (shared with pulled messages): each event is skipped if
   ``(shop, message_id)`` is in ``push_seen``; otherwise the order is fetched when the
   message is thin, taken in through :func:`robot.pipeline.intake` (idempotent) and the
   message id recorded, each step committed;
4. only then the platform's expected reply (``PushBatch.reply_status`` / ``reply_body``).
   Any failure in step 3 answers 503 so the platform retries; redoing step 3 is harmless.

Every push is answered within its platform's window (the connector's ``push_window``, see
:func:`connectors.base.push_window`): steps 1-3 get :data:`ANSWER_SHARE` of it, counted from
the request's arrival. A slow database or platform fetch that runs past that answers 503
(the platform sends the push again later). Work already handed to a database thread may
still commit after that answer; the retry then finds the message (``push_seen``) or the order
(intake is idempotent on the order), so the push is taken in exactly once either way — it is
never acknowledged without being stored.

Status for a rejection: a connector may set ``http_status`` on the
:class:`robot.errors.PushRejected` it raises; otherwise 400 when the rejection was caused by
a parse error (``raise PushRejected(...) from ValueError/KeyError/TypeError``), else 401.

Every refusal answers ``{"error": <kind>, "reason": <one short line>}`` so whoever set up the
push (or reads the platform's delivery log) sees why; a rejection's reason is the
connector's :class:`~robot.errors.PushRejected` message, which by contract carries no secret.

This module must never write anything for a request that failed verification, and never
answer 2xx before the events are committed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectors.base import push_window
from robot.errors import PushRejected
from robot.http.context import HttpContext
from robot.log import get_logger
from robot.pipeline import IntakeResult
from robot.poller import apply_events

log = get_logger(__name__)

#: Share of the platform's window spent before answering; the rest is for the network both
#: ways and for the platform's own measuring.
ANSWER_SHARE = 0.7
MAX_REASON = 200  # characters of a rejection's message sent back


class BodyTooLarge(Exception):
    """The request body is over the limit."""


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (without reading on) once it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def rejection_status(exc: PushRejected) -> int:
    explicit = getattr(exc, "http_status", None)
    if isinstance(explicit, int) and 400 <= explicit < 500:
        return explicit
    if isinstance(exc.__cause__, ValueError | KeyError | TypeError):
        return 400  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
    return 401


def _error(status: int, error: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason[:MAX_REASON]}, status_code=status)


async def push(request: Request) -> Response:
    ctx: HttpContext = request.app.state.ctx
    loop = asyncio.get_running_loop()
    name = request.path_params["shop"]
    shop = ctx.shops.get(name)
    connector = ctx.connectors.get(name)
    if shop is None or connector is None or not connector.receives_push:
        return _error(404, "not_found", "no shop of that name takes pushes")
    budget = push_window(connector) * ANSWER_SHARE
    deadline = loop.time() + budget
    bound = log.bind(shop=name)
    try:
        async with asyncio.timeout_at(deadline):
            body = await read_body(request, ctx.max_push_body)
    except BodyTooLarge:
        return _error(413, "too_large", f"body over {ctx.max_push_body} bytes")
    except TimeoutError:
        bound.warning("push_body_too_slow", budget_s=round(budget, 2))
        return _error(408, "timeout", "the body did not arrive in time")
    try:
        batch = connector.parse_push(request.headers, body, datetime.now(UTC))
    except PushRejected as exc:
        status = rejection_status(exc)
        bound.warning("push_rejected", error=exc.message, status_code=status)
        return _error(status, "rejected", exc.message)
    except Exception as exc:  # noqa: BLE001 - a connector bug on odd input is a bad request
        bound.error("push_parse_crashed", error=type(exc).__name__)
        return _error(400, "rejected", "the message could not be read")
    left = deadline - loop.time()
    try:
        async with asyncio.timeout_at(deadline):
            taken: list[IntakeResult] = []
            changed = await apply_events(ctx.engine, shop, connector, batch.events, zone=ctx.zone,
                                         fetch_timeout=max(left, 0.001), group=ctx.group,
                                         taken=taken)
    except TimeoutError:
        # Not stored within the platform's window: refuse, so the platform sends it again.
        bound.warning("push_deferred", events=len(batch.events), budget_s=round(budget, 2))
        return _error(503, "retry", "not stored in time; send it again later")
    except Exception as exc:  # noqa: BLE001 - anything unapplied: let the platform retry
        bound.error("push_apply_failed", error=type(exc).__name__, events=len(batch.events))
        return _error(503, "retry", "not stored yet; send it again later")
    if changed:
        # An order allocated at intake needs the shipper only: no empty allocator or
        # sourcing round per push.
        if ctx.wake_for is not None:
            ctx.wake_for(taken)
        else:
            ctx.wake()
    bound.info("push_applied", events=len(batch.events), changed=changed)
    return Response(batch.reply_body, status_code=batch.reply_status,
                    media_type=batch.reply_content_type)
