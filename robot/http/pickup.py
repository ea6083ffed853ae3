"""The buyer's pickup page: ``/p/{token}``, ``/p/{token}/reveal`` and the lookup form ``/p``.

* ``GET /p/{token}`` shows the order with its codes masked (logged as a ``view``);
* ``POST /p/{token}/reveal`` (a form with a CSRF token derived from the link, accepted only
  from the same origin) marks the codes seen, logs a ``reveal`` and appends ``pickup_reveal``
  to the audit log, all committed before the codes are decrypted and shown;
* an order with top-ups (bought from a supplier into the buyer's account) shows their status
  beside its codes, or alone when it has none; while its top-ups are bought (``sourcing``)
  or after they failed, its link and the lookup show the top-ups only, never its codes;
* ``GET /p`` / ``POST /p``: platform order number plus the shop's checks (see
  :class:`robot.config.PickupConfig` and :mod:`robot.http.checks`); a match redirects to the
  order's link.

Against enumeration: every request spends from a per-IP bucket *before* anything is looked
up, link pages also from a per-link bucket; lookups wait their turn in
:mod:`robot.http.guard` (growing delays per order number and, once failures pile up,
globally). Every value a lookup sends is held to its length and shape before anything
converts it. Every failure — unknown, expired or revoked link, order not (or no longer)
deliverable, wrong or malformed check — is the same neutral page with the same status,
byte for byte. Tokens and checks are compared in constant time. IPs are
stored only as HMAC-SHA256 under a key derived from the vault (see :mod:`robot.http.links`).

This module must never log a token, an IP or a code, and never show a plaintext code before
the reveal that shows it is committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from robot import audit
from robot.clock import utcnow
from robot.config import SHOP_NAME_RE, ShopConfig
from robot.db import transaction
from robot.errors import VaultError
from robot.http import checks, handover, links, pages, qr
from robot.http.address import client_of
from robot.http.context import MAX_FORM_BODY, HttpContext
from robot.http.hooks import BodyTooLarge, read_body
from robot.http.pages import CodeView, PageExtras, ShopFace, TopupView
from robot.log import get_logger
from robot.poolpage import PoolPage
from robot.schema import orders, pickup_views

log = get_logger(__name__)

NOT_FOUND = 404
USER_AGENT_MAX = 255


# ------------------------------------------------------------------ helpers


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=pages.HEADERS)


def lookup_shops(ctx: HttpContext, only: str | None = None) -> dict[str, ShopConfig]:
    return {name: shop for name, shop in ctx.shops.items()
            if shop.pickup.enabled and shop.pickup.lookup_check
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


def _spend(ctx: HttpContext, net_digest: str, token: str) -> bool:
    """One request's share of both budgets; both are spent even when the first is empty. A
    token that is not even shaped like one opens nothing: only the client's budget pays."""
    ip_ok = ctx.per_ip.allow("ip:" + net_digest)
    if not links.TOKEN_RE.fullmatch(token):
        return ip_ok
    subject_ok = ctx.per_order.allow(hashlib.sha256(b"t:" + token.encode()).hexdigest())
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
              ua: str) -> tuple[links.LinkedOrder, list[CodeView], PageExtras] | None:
    """The masked view of a link's order (logged), or None. An order still buying its
    top-ups (or whose top-ups failed) shows them alone: no code before it is allocated."""
    now = utcnow()
    with transaction(ctx.engine) as conn:
        link = links.resolve_tx(conn, ctx.link_key, token, now,
                                states=links.VISIBLE_STATES + links.TOPUP_STATES)
        if link is None:
            return None
        visible = link.state in links.VISIBLE_STATES
        rows = handover.code_rows(conn, link.order_id) if visible else []
        topups = handover.topups(conn, link.order_id, ctx.items_of(link.shop))
        if not rows and not topups:
            return None
        settings = handover.pool_pages(conn, rows, ctx.pool_page_key)
        _log_view(conn, link, "view", ip_digest, ua, now)
    views = handover.views(ctx.vault, rows, masked=True, zone=ctx.zone)
    return link, views, _extras(ctx, link, token, rows, settings, topups)


def reveal_link(ctx: HttpContext, token: str, ip_digest: str,
                ua: str) -> tuple[links.LinkedOrder, list[CodeView], PageExtras] | None:
    """Mark the codes seen, log and audit the reveal, commit; then decrypt."""
    now = utcnow()
    with transaction(ctx.engine) as conn:
        link = links.resolve_tx(conn, ctx.link_key, token, now)
        if link is None:
            return None
        rows = handover.code_rows(conn, link.order_id)
        if not rows:
            return None
        settings = handover.pool_pages(conn, rows, ctx.pool_page_key)
        topups = handover.topups(conn, link.order_id, ctx.items_of(link.shop))
        view_id = _log_view(conn, link, "reveal", ip_digest, ua, now)
        handover.mark_seen(conn, link.order_id, now)
        audit.append(conn, actor="buyer:pickup", action="pickup_reveal",
                     subject=f"order:{link.order_id}",
                     details={"link_id": link.link_id, "view_id": view_id,
                              "code_ids": [r.code_id for r in rows]})
    views = handover.views(ctx.vault, rows, masked=False, zone=ctx.zone, pages=settings)
    return link, views, _extras(ctx, link, token, rows, settings, topups)


def shop_face(shop: ShopConfig | None) -> ShopFace | None:
    """What the shop file says the page shows of the shop (name, contact, footer)."""
    if shop is None:
        return None
    contact = shop.contact
    return ShopFace(display_name=shop.display_name,
                    contact_text=contact.text if contact else None,
                    contact_url=contact.url if contact else None,
                    footer=shop.pickup.footer)


def _extras(ctx: HttpContext, link: links.LinkedOrder, token: str,
            rows: list[handover.CodeRow], settings: Mapping[int, PoolPage],
            topups: Sequence[TopupView] = ()) -> PageExtras:
    """The shop's face, the pools' instructions, the order's top-ups and the QR code of the
    page's own link (the same link the seller memo carries: ``http.public_url`` +
    ``/p/<token>``)."""
    return PageExtras(shop=shop_face(ctx.shops.get(link.shop)),
                      instructions=handover.instructions(rows, settings),
                      qr_svg=qr.svg(links.url_for(ctx.public_url, token)), topups=topups)


def find_by_lookup(engine: Engine, key: bytes, shops: dict[str, ShopConfig], order_no: str,
                   form: Mapping[str, str], zone: tzinfo) -> str | None:
    """The token of the matching order's link (made if needed), or None.

    ``order_no`` is normalized (:func:`robot.http.checks.order_number`); the comparison is
    binary on every backend, so only that exact number finds the row.
    """
    if not shops or not order_no:
        return None
    with engine.connect() as conn:
        rows = conn.execute(
            select(orders.c.id, orders.c.shop, orders.c.buyer_id, orders.c.total_cents,
                   orders.c.paid_at, orders.c.state)
            .where(orders.c.platform_order_id == order_no, orders.c.shop.in_(sorted(shops)))
            .order_by(orders.c.id)
        ).all()
    for row in rows:
        shop = shops[row.shop]
        names = shop.pickup.lookup_check
        given = checks.read_checks(names, form)
        facts = checks.OrderFacts(row.buyer_id, int(row.total_cents), row.paid_at)
        rules = checks.Rules(shop.pickup.suffix_length, zone)
        if (given is not None and checks.all_match(names, given, facts, rules)
                and _has_page(engine, int(row.id), row.state)):
            link = links.ensure_link(engine, key, int(row.id), ttl=links.ttl_of(shop))
            return link.token
    return None


def _has_page(engine: Engine, order_id: int, state: str) -> bool:
    """Whether the order's link would show something: its codes (allocated or shipped), or
    its top-ups while they are bought or after they failed."""
    if state in links.VISIBLE_STATES:
        return True
    if state not in links.TOPUP_STATES:
        return False
    with engine.connect() as conn:
        return bool(handover.topups(conn, order_id))


def _well_formed(shops: Mapping[str, ShopConfig], form: Mapping[str, str]) -> bool:
    """Whether some shop's checks can all be read from the form (cheap: patterns only)."""
    if any(len(v) > checks.RAW_MAX for v in form.values()):
        return False
    return any(checks.read_checks(s.pickup.lookup_check, form) is not None
               for s in shops.values())


# ------------------------------------------------------------------ endpoints


async def page(request: Request) -> Response:
    ctx: HttpContext = request.app.state.ctx
    token = request.path_params["token"]
    digest, net = client_hashes(ctx, request)
    if not _spend(ctx, net, token):
        return _html(pages.busy_page(), 429)
    try:
        found = await asyncio.to_thread(open_link, ctx, token, digest, _user_agent(request))
    except DBAPIError:
        return _unavailable()
    except VaultError as exc:  # a code refused by the vault (altered row) or a key missing
        log.error("pickup_code_refused", error=exc.message)
        return _unavailable()
    if found is None:
        return neutral(ctx)
    link, codes, extras = found
    return _html(pages.masked_page(link.platform_order_id, codes, csrf=csrf_for(ctx, token),
                                   action=f"{token}/reveal", extras=extras))


async def reveal(request: Request) -> Response:
    ctx: HttpContext = request.app.state.ctx
    token = request.path_params["token"]
    digest, net = client_hashes(ctx, request)
    if not _spend(ctx, net, token):
        return _html(pages.busy_page(), 429)
    form = await _form(request)
    # The CSRF token depends on the link token alone, so this answer says nothing about
    # whether the link exists.
    if (form is None or not same_origin(request, ctx.public_url)
            or not checks.same_text(form.get("csrf", ""), csrf_for(ctx, token))):
        return _html(pages.refused_page(), 403)
    try:
        found = await asyncio.to_thread(reveal_link, ctx, token, digest, _user_agent(request))
    except DBAPIError:
        return _unavailable()
    except VaultError as exc:  # a code refused by the vault (altered row) or a key missing
        log.error("pickup_code_refused", error=exc.message)
        return _unavailable()
    if found is None:
        return neutral(ctx)
    link, codes, extras = found
    log.info("pickup_revealed", order_id=link.order_id, shop=link.shop, count=len(codes))
    return _html(pages.revealed_page(link.platform_order_id, codes, extras=extras))


def _lookup_form_page(ctx: HttpContext, only: str | None) -> Response:
    shops = lookup_shops(ctx, only)
    if not shops:
        return neutral(ctx)
    sets = {(s.pickup.lookup_check, s.pickup.suffix_length) for s in shops.values()}
    if len(sets) == 1:
        names, length = next(iter(sets))
        return _html(pages.lookup_page(checks=names, suffix_length=length, shop=only))
    # Several shops with different checks: every check any of them asks, none required.
    union = tuple(sorted({n for s in shops.values() for n in s.pickup.lookup_check}))
    return _html(pages.lookup_page(checks=union, suffix_length=4, shop=only, required=False))


async def lookup(request: Request) -> Response:
    ctx: HttpContext = request.app.state.ctx
    only = request.query_params.get("shop") or None
    if only is not None and not SHOP_NAME_RE.fullmatch(only):
        return neutral(ctx)
    if request.method == "GET":
        return _lookup_form_page(ctx, only)
    form = await _form(request)
    if form is None:
        return neutral(ctx)
    _, net = client_hashes(ctx, request)
    if not ctx.per_ip.allow("ip:" + net):
        return _html(pages.busy_page(), 429)
    # Length and shape of every value first: nothing converts what it has not matched.
    order_no = checks.order_number(form.get("order", ""))
    shop_name = form.get("shop") or only
    shops = (lookup_shops(ctx, shop_name)
             if shop_name is None or SHOP_NAME_RE.fullmatch(shop_name) else {})
    if order_no is None or not _well_formed(shops, form):
        ctx.guard.record(checks.order_key(order_no) if order_no else None, found=False)
        return neutral(ctx)
    key = checks.order_key(order_no)
    wait = ctx.guard.admit(key)
    if wait is None:
        return _html(pages.busy_page(), 429)
    if wait > 0:
        await ctx.sleep(wait)
    try:
        token = await asyncio.to_thread(find_by_lookup, ctx.engine, ctx.link_key, shops,
                                        order_no, form, ctx.zone)
    except DBAPIError:
        return _unavailable()
    ctx.guard.record(key, found=token is not None)
    if token is None:
        return neutral(ctx)
    # Relative to ".../p": resolves to ".../p/<token>" whatever prefix the robot is served
    # under, without trusting the Host header.
    return RedirectResponse(f"p/{token}", status_code=303, headers=pages.HEADERS)
