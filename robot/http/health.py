"""``/healthz``: 200 when the robot is doing its job, 503 with the reasons when it is not.

Unhealthy when: the database does not answer ``SELECT 1`` within ``db_timeout``, or its
writes are failing (:mod:`robot.writes`: a full disk or an I/O error that reads do not
show); an enabled, unpaused shop has not polled successfully for ``max(3 × poll interval,
120 s)`` (counted from the process start when it never has); a shop's connector failed to
build; ship jobs wait more than five minutes past their due time. Paused shops are reported
but do not make the robot unhealthy: the robot paused them itself on a credentials error,
alerted, and only a person can resume them (a restart would not help).

Degraded (503 too, ``"status": "degraded"`` when nothing else is wrong): a platform's clock
is further from ours than ``intake.max_clock_offset``. Orders still flow (windows follow the
platform's clock), but something needs a person: usually this machine's NTP.

The body may be seen by anyone who can reach the listener: it names shops and counts, never
error texts (they can quote platform answers). This module only reads; it must never write,
decrypt or block the event loop.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text
from starlette.requests import Request
from starlette.responses import JSONResponse

from robot.clock import utcnow
from robot.display import format_time_json
from robot.http import queries
from robot.http.context import HttpContext
from robot.writes import signal_of

MIN_POLL_AGE = 120.0


def _facts(engine: Engine, now: datetime) -> dict[str, Any]:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1")).scalar_one()
        return {"shops": queries.shop_states(conn), "backlog": queries.outbox_backlog(conn, now)}


def _check_writes(ctx: HttpContext, now: datetime, body: dict[str, Any],
                  reasons: list[str]) -> None:
    """Writes failing (robot.writes): unhealthy from the first failed write to the next
    successful one, however well ``SELECT 1`` answers meanwhile."""
    state = signal_of(ctx.engine).state()
    if not state.failing:
        return
    since = state.failed_at or now
    body["database_writes"] = {"ok": False,
                               "failing_since": format_time_json(since, ctx.zone)}
    reasons.append(f"database writes failing for {(now - since).total_seconds():.0f}s")


async def report(ctx: HttpContext, now: datetime | None = None) -> tuple[bool, dict[str, Any]]:
    now = now or utcnow()
    reasons: list[str] = []
    body: dict[str, Any] = {}
    try:
        facts = await asyncio.wait_for(asyncio.to_thread(_facts, ctx.engine, now),
                                       ctx.db_timeout)
    except TimeoutError:
        facts = None
        body["database"] = {"ok": False, "error": f"no answer within {ctx.db_timeout:g}s"}
    except Exception as exc:  # noqa: BLE001 - any failure to read means: database unreachable
        facts = None
        body["database"] = {"ok": False, "error": type(exc).__name__}
    if facts is None:
        reasons.append("database unreachable")
    else:
        body["database"] = {"ok": True}
        shops: dict[str, Any] = {}
        for name, shop in sorted(ctx.shops.items()):
            ok_at, paused, _reason = facts["shops"].get(name, (None, False, None))
            limit = max(3 * shop.poll_interval_seconds, MIN_POLL_AGE)
            age = (now - (ok_at or ctx.started_at)).total_seconds()
            entry: dict[str, Any] = {
                "last_poll_ok_age_s": round(age, 1) if ok_at else None,
                "paused": paused,
            }
            if not paused and age > limit:
                entry["stale"] = True
                reasons.append(f"shop {name}: no successful poll for {age:.0f}s "
                               f"(limit {limit:.0f}s)")
            shops[name] = entry
        body["shops"] = shops
        body["outbox_backlog"] = facts["backlog"]
        if facts["backlog"]:
            reasons.append(f"{facts['backlog']} ship job(s) overdue by more than 5 minutes")
    _check_writes(ctx, now, body, reasons)
    broken = dict(ctx.broken_shops())
    if broken:
        body["broken_shops"] = sorted(broken)
        reasons.extend(f"shop {name} is broken (its connector failed to start; see the log)"
                       for name in sorted(broken))
    degraded = _clock_reasons(ctx, body)
    healthy = not reasons and not degraded
    status = "ok" if healthy else "unhealthy" if reasons else "degraded"
    return healthy, {"status": status, "reasons": reasons + degraded, **body}


def _clock_reasons(ctx: HttpContext, body: dict[str, Any]) -> list[str]:
    """Shops whose platform clock is past the limit (offsets added to ``body``)."""
    skewed = dict(ctx.clock_skewed())
    if skewed:
        body["clock_offset_s"] = {name: round(offset, 1) for name, offset in sorted(skewed.items())}
    return [f"shop {name}: the platform's clock is {abs(offset):.0f}s "
            f"{'ahead of' if offset > 0 else 'behind'} ours (limit "
            f"{ctx.max_clock_offset:.0f}s)" for name, offset in sorted(skewed.items())]


async def healthz(request: Request) -> JSONResponse:
    ctx: HttpContext = request.app.state.ctx
    healthy, body = await report(ctx)
    return JSONResponse(body, status_code=200 if healthy else 503,
                        headers={"Cache-Control": "no-store"})
