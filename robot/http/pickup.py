"""The buyer's pickup page: ``/p/{token}``, ``/p/{token}/reveal`` and the lookup form ``/p``.

* ``GET /p/{token}`` shows the order with its codes masked (logged as a ``view``);
* ``POST /p/{token}/reveal`` (a form with a CSRF token derived from the link, accepted only
  from the same origin) marks the codes seen, logs a ``reveal`` and appends ``pickup_reveal``
  to the audit log, all committed before the codes are decrypted and shown;
* ``GET /p`` / ``POST /p``: platform order number plus the shop's check (see
  :class:`robot.config.PickupConfig`); a match redirects to the order's link.

Against enumeration: every request spends from a per-IP bucket and a per-link (or per order
number) bucket *before* anything is looked up, and every failure — unknown, expired or
revoked link, order not (or no longer) deliverable, wrong check — is the same neutral page
with the same status, byte for byte. Tokens and checks are compared in constant time. IPs are
stored only as HMAC-SHA256 under a key derived from the vault (see :mod:`robot.http.links`).

This module must never log a token, an IP or a code, and never show a plaintext code before
the reveal that shows it is committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from robot import audit
from robot.clock import utcnow
from robot.config import PickupConfig, ShopConfig
from robot.db import transaction
from robot.http import handover, links, pages
from robot.http.address import client_of
from robot.http.context import MAX_FORM_BODY, HttpContext
from robot.http.hooks import BodyTooLarge, read_body
from robot.http.pages import CodeView
from robot.log import get_logger
from robot.schema import orders, pickup_views

log = get_logger(__name__)

NOT_FOUND = 404
USER_AGENT_MAX = 255


# ------------------------------------------------------------------ helpers


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=pages.HEADERS)


def lookup_shops(ctx: HttpContext, only: str | None = None) -> dict[str, ShopConfig]:
    return {name: shop for name, shop in ctx.shops.items()
            if shop.pickup.enabled and shop.pickup.lookup_check != "none"
            and (only is None or name == only)}


def neutral(ctx: HttpContext) -> HTMLResponse:
    """The one answer for everything that opens nothing."""
    lookup_url = f"{ctx.public_url.rstrip('/')}/p" if lookup_shops(ctx) else None
    return _html(pages.neutral_page(lookup_url=lookup_url), NOT_FOUND)


def _unavailable() -> HTMLResponse:
    return _html(pages.busy_page(), 503)


def ip_hash(ctx: HttpContext, ip: str) -> str:
    return hmac.new(ctx.ip_key, ip.encode(), hashlib.sha256).hexdigest()


def client_hashes(ctx: HttpContext, request: Request) -> tuple[str, str]:
    """The client's hashed address (for the view log) and hashed network (for the per-IP
    bucket), from :func:`robot.http.address.client_of`."""
    client = client_of(request)
    return ip_hash(ctx, client.address), ip_hash(ctx, "net|" + client.network)


def csrf_for(ctx: HttpContext, token: str) -> str:
    return hmac.new(ctx.csrf_key, token.encode("utf-8", "surrogatepass"),
                    hashlib.sha256).hexdigest()[:32]


def same_text(a: str, b: str) -> bool:
    """Constant-time equality of two strings of any lengths."""
    return hmac.compare_digest(hashlib.sha256(a.encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(b.encode("utf-8", "surrogatepass")).digest())


def _spend(ctx: HttpContext, net_digest: str, subject: str) -> bool:
    """One request's share of both budgets; both are spent even when the first is empty."""
    ip_ok = ctx.per_ip.allow("ip:" + net_digest)
    subject_ok = ctx.per_order.allow(hashlib.sha256(subject.encode("utf-8", "surrogatepass"))
                                     .hexdigest())
    return ip_ok and subject_ok


def same_origin(request: Request, public_url: str) -> bool:
    """A POST that came from our own page (not a form on another site)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:  # set by the browser itself; a page cannot forge it
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True  # old browsers send neither header; the CSRF token still must match
    netloc = urlsplit(origin).netloc
    return netloc in (request.headers.get("host", ""), urlsplit(public_url).netloc)


def _user_agent(request: Request) -> str:
    return request.headers.get("user-agent", "")[:USER_AGENT_MAX]


async def _form(request: Request) -> dict[str, str] | None:
    try:
        raw = await read_body(request, MAX_FORM_BODY)
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=10,
                          strict_parsing=False)
    except (BodyTooLarge, UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in fields.items() if v}


# ------------------------------------------------------------------ data (blocking)


def _log_view(conn: Connection, link: links.LinkedOrder, kind: str, ip_digest: str, ua: str,
              now: datetime) -> int:
    inserted = conn.execute(insert(pickup_views).values(
        link_id=link.link_id, order_id=link.order_id, kind=kind, at=now, ip_hash=ip_digest,
        user_agent=ua)).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def open_link(ctx: HttpContext, token: str, ip_digest: str,
              ua: str) -> tuple[links.LinkedOrder, list[CodeView]] | None:
    """The masked view of a link's order (logged), or None."""
    now = utcnow()
    with transaction(ctx.engine) as conn:
        link = links.resolve_tx(conn, ctx.link_key, token, now)
        if link is None:
            return None
        rows = handover.code_rows(conn, link.order_id)
        if not rows:
            return None
        _log_view(conn, link, "view", ip_digest, ua, now)
    return link, handover.views(ctx.vault, rows, masked=True)


def reveal_link(ctx: HttpContext, token: str, ip_digest: str,
                ua: str) -> tuple[links.LinkedOrder, list[CodeView]] | None:
    """Mark the codes seen, log and audit the reveal, commit; then decrypt."""
    now = utcnow()
    with transaction(ctx.engine) as conn:
        link = links.resolve_tx(conn, ctx.link_key, token, now)
        if link is None:
            return None
        rows = handover.code_rows(conn, link.order_id)
        if not rows:
            return None
        view_id = _log_view(conn, link, "reveal", ip_digest, ua, now)
        handover.mark_seen(conn, link.order_id, now)
        audit.append(conn, actor="buyer:pickup", action="pickup_reveal",
                     subject=f"order:{link.order_id}",
                     details={"link_id": link.link_id, "view_id": view_id,
                              "code_ids": [r.code_id for r in rows]})
    return link, handover.views(ctx.vault, rows, masked=False)


def parse_amount(text: str) -> int | None:
    """Cents from what a buyer types as an amount (``29.9``, ``¥29.90``, ``29.90元``)."""
    cleaned = text.strip().replace(",", "").replace(" ", "")
    cleaned = cleaned.removeprefix("¥").removeprefix("￥").removesuffix("元")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or exponent < -2 or value < 0:  # NaN/inf, or sub-cent
        return None
    return int(value * 100)


def check_matches(cfg: PickupConfig, buyer_id: str | None, total_cents: int,
                  given: str) -> bool:
    """Whether ``given`` is the shop's check for this order (constant time)."""
    given = given.strip()
    if cfg.lookup_check == "buyer_id_suffix":
        n = cfg.suffix_length
        usable = buyer_id is not None and len(buyer_id) >= n
        expected = buyer_id[-n:] if buyer_id is not None and usable else "\x00"
        return same_text(given.casefold(), expected.casefold()) and usable
    if cfg.lookup_check == "paid_amount":
        cents = parse_amount(given)
        return same_text(str(cents), str(total_cents)) and cents is not None
    return False


def find_by_lookup(engine: Engine, key: bytes, shops: dict[str, ShopConfig], order_no: str,
                   given: str) -> str | None:
    """The token of the matching order's link (made if needed), or None."""
    if not shops or not order_no:
        return None
    with engine.connect() as conn:
        rows = conn.execute(
            select(orders.c.id, orders.c.shop, orders.c.buyer_id, orders.c.total_cents,
                   orders.c.state)
            .where(orders.c.platform_order_id == order_no, orders.c.shop.in_(sorted(shops)))
            .order_by(orders.c.id)
        ).all()
    for row in rows:
        shop = shops[row.shop]
        if (check_matches(shop.pickup, row.buyer_id, int(row.total_cents), given)
                and row.state in links.VISIBLE_STATES):
            link = links.ensure_link(engine, key, int(row.id), ttl=links.ttl_of(shop))
            return link.token
    return None


# ------------------------------------------------------------------ endpoints


async def page(request: Request) -> Response:
    ctx: HttpContext = request.app.state.ctx
    token = request.path_params["token"]
    digest, net = client_hashes(ctx, request)
    if not _spend(ctx, net, "t:" + token):
        return _html(pages.busy_page(), 429)
    try:
        found = await asyncio.to_thread(open_link, ctx, token, digest, _user_agent(request))
    except DBAPIError:
        return _unavailable()
    if found is None:
        return neutral(ctx)
    link, codes = found
    return _html(pages.masked_page(link.platform_order_id, codes, csrf=csrf_for(ctx, token),
                                   action=f"{token}/reveal"))


async def reveal(request: Request) -> Response:
    ctx: HttpContext = request.app.state.ctx
    token = request.path_params["token"]
    digest, net = client_hashes(ctx, request)
    if not _spend(ctx, net, "t:" + token):
        return _html(pages.busy_page(), 429)
    form = await _form(request)
    # The CSRF token depends on the link token alone, so this answer says nothing about
    # whether the link exists.
    if (form is None or not same_origin(request, ctx.public_url)
            or not same_text(form.get("csrf", ""), csrf_for(ctx, token))):
        return _html(pages.refused_page(), 403)
    try:
        found = await asyncio.to_thread(reveal_link, ctx, token, digest, _user_agent(request))
    except DBAPIError:
        return _unavailable()
    if found is None:
        return neutral(ctx)
    link, codes = found
    log.info("pickup_revealed", order_id=link.order_id, shop=link.shop, count=len(codes))
    return _html(pages.revealed_page(link.platform_order_id, codes))


async def lookup(request: Request) -> Response:
    ctx: HttpContext = request.app.state.ctx
    only = request.query_params.get("shop") or None
    if request.method == "GET":
        shops = lookup_shops(ctx, only)
        if not shops:
            return neutral(ctx)
        checks = {(s.pickup.lookup_check, s.pickup.suffix_length) for s in shops.values()}
        check, length = next(iter(checks)) if len(checks) == 1 else (None, 4)
        return _html(pages.lookup_page(check=check, suffix_length=length, shop=only))
    form = await _form(request)
    if form is None:
        return neutral(ctx)
    order_no = form.get("order", "").strip()[:64]
    _, net = client_hashes(ctx, request)
    if not _spend(ctx, net, "o:" + order_no.casefold()):
        return _html(pages.busy_page(), 429)
    shops = lookup_shops(ctx, form.get("shop") or only)
    try:
        token = await asyncio.to_thread(find_by_lookup, ctx.engine, ctx.link_key, shops,
                                        order_no, form.get("check", ""))
    except DBAPIError:
        return _unavailable()
    if token is None:
        return neutral(ctx)
    # Relative to ".../p": resolves to ".../p/<token>" whatever prefix the robot is served
    # under, without trusting the Host header.
    return RedirectResponse(f"p/{token}", status_code=303, headers=pages.HEADERS)
