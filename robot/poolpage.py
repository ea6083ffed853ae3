"""What the pickup page shows beside a pool's codes: usage instructions and a redemption link.

Per pool, in the ``pools`` table (``robot pools set``): how to use the codes (使用说明), in
Chinese and English, as plain text with line breaks (the page escapes it), and an optional
redemption link template. A template with ``{code}`` gets the card number, percent-encoded
(``https://vip.example.com/exchange?code={code}``); one without a placeholder is the site's
redemption page, opened after the page copied the code. Only ``https:`` and ``http:``
templates are accepted; ``{{`` and ``}}`` stand for literal braces.

The settings are sealed: ``page_mac`` is an HMAC over the pool id and the three values, under
a key derived from the key file (:func:`page_key`). Someone who can write the database but
has no key file could otherwise point the redeem button at a site of their own and collect
the codes buyers reveal; a setting whose seal does not match is not shown (logged
``pool_page_refused``), so only ``robot pools page``, run with the key file, changes the page.

This module owns these four columns of ``pools`` (:mod:`robot.pools` owns the rest). It
must never store, log or audit a code: a link with a code in it is made only for the page
that shows the revealed code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import string
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import Connection, Engine, select, update

from robot import audit
from robot.config.types import WEB_SCHEMES, link_problem, text_problem
from robot.errors import UserError
from robot.log import get_logger
from robot.schema import pools
from robot.vault import Vault

log = get_logger(__name__)

PLACEHOLDER = "code"
INSTRUCTIONS_MAX = 2000
_SAMPLE = "CODE"


@dataclass(frozen=True)
class PoolPage:
    """One pool's settings for the pickup page (None: not set)."""

    instructions_zh: str | None = None
    instructions_en: str | None = None
    redeem_url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fields(template: str) -> list[tuple[str, str, str | None]]:
    """``(name, format spec, conversion)`` of each placeholder (ValueError: bad braces)."""
    return [(name, spec or "", conv) for _, name, spec, conv in string.Formatter().parse(template)
            if name is not None]


def redeem_problem(template: str) -> str | None:
    """Why ``template`` is no usable redemption link template (None: it is one)."""
    try:
        fields = _fields(template)
    except ValueError:
        return "unbalanced braces: write {code} for the code, {{ and }} for literal braces"
    for name, spec, conv in fields:
        if name != PLACEHOLDER or spec or conv:
            return "the only placeholder is {code} (the card number, URL-encoded)"
    if "{" in urlsplit(template).netloc:
        return "{code} may stand in the path or the query, not in the host"
    problem = link_problem(template.format(code=_SAMPLE) if fields else template.format(),
                           WEB_SCHEMES)
    return None if problem is None else problem.replace("links are", "redemption links are")


def takes_code(template: str) -> bool:
    """Whether the site takes the code in its link (else: copy, then open)."""
    return bool(_fields(template))


def redeem_link(template: str, card_no: str) -> str:
    """The link for one code: ``{code}`` replaced by the card number, every character that
    is not a letter, digit or ``-._~`` percent-encoded (so a code cannot change the link's
    path, query or host)."""
    return template.format(code=quote(card_no, safe=""))


def page_key(vault: Vault) -> bytes:
    """The key that seals pool page settings, derived from the vault's fingerprint key (which
    never rotates). The label starts with NUL, which no imported code holds, so the key can
    never equal a stored fingerprint."""
    return vault.fingerprint("\x00robot-pool-page-v1\x00")


def _seal(key: bytes, pool_id: int, page: PoolPage) -> str:
    data = json.dumps([pool_id, page.instructions_zh, page.instructions_en, page.redeem_url],
                      ensure_ascii=False, separators=(",", ":"))
    return hmac.new(key, data.encode("utf-8"), hashlib.sha256).hexdigest()


def page_settings(conn: Connection, pool_ids: Iterable[int], key: bytes) -> dict[int, PoolPage]:
    """The settings of the given pools whose seal holds (pools without any are left out)."""
    ids = sorted(set(pool_ids))
    if not ids:
        return {}
    rows = conn.execute(
        select(pools.c.id, pools.c.name, pools.c.instructions_zh, pools.c.instructions_en,
               pools.c.redeem_url, pools.c.page_mac)
        .where(pools.c.id.in_(ids))).all()
    out = {}
    for r in rows:
        page = PoolPage(r.instructions_zh, r.instructions_en, r.redeem_url)
        if page == PoolPage():
            continue
        seal = _seal(key, int(r.id), page)
        if not hmac.compare_digest((r.page_mac or "").encode(), seal.encode()):
            log.error("pool_page_refused", pool=r.name,
                      reason="its settings do not match their seal: set them again with "
                             "robot pools page")
            continue
        out[int(r.id)] = page
    return out


def show(engine: Engine, vault: Vault, name: str) -> tuple[PoolPage, bool]:
    """A pool's settings as stored, and whether their seal holds (else the page ignores
    them)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(pools.c.id, pools.c.instructions_zh, pools.c.instructions_en,
                   pools.c.redeem_url, pools.c.page_mac)
            .where(pools.c.name == name)).first()
    if row is None:
        raise UserError(f"no pool named '{name}' (robot pools list shows them)")
    page = PoolPage(row.instructions_zh, row.instructions_en, row.redeem_url)
    seal = _seal(page_key(vault), int(row.id), page)
    return page, page == PoolPage() or hmac.compare_digest(
        (row.page_mac or "").encode(), seal.encode())


def _checked(changes: dict[str, str | None]) -> dict[str, str | None]:
    """``changes`` cleaned (``""`` clears a setting), or UserError naming each problem."""
    out: dict[str, str | None] = {}
    problems = []
    for key, value in changes.items():
        text = (value or "").replace("\r\n", "\n").strip()
        if not text:
            out[key] = None
            continue
        problem = (redeem_problem(text) if key == "redeem_url"
                   else text_problem(text, INSTRUCTIONS_MAX, lines=True))
        if problem is not None:
            problems.append(f"{key.replace('_', '-')}: {problem}")
        out[key] = text
    if problems:
        raise UserError("; ".join(problems))
    return out


def set_page(engine: Engine, vault: Vault, name: str, changes: dict[str, str | None], *,
             actor: str) -> PoolPage:
    """Change some of a pool's page settings (keys of :class:`PoolPage`; ``""`` or None
    clears one) and seal them. Audited ``pool_page_set`` with what changed; returns the new
    settings."""
    unknown = set(changes) - set(PoolPage.__dataclass_fields__)
    if unknown:
        raise UserError(f"unknown pool page settings: {', '.join(sorted(unknown))}")
    values = _checked(changes)
    missing = UserError(f"no pool named '{name}' (robot pools list shows them)")
    with engine.begin() as conn:
        row = conn.execute(
            select(pools.c.id, pools.c.instructions_zh, pools.c.instructions_en,
                   pools.c.redeem_url).where(pools.c.name == name).with_for_update()).first()
        if row is None:
            raise missing
        page = PoolPage(**{**PoolPage(row.instructions_zh, row.instructions_en,
                                      row.redeem_url).as_dict(), **values})
        conn.execute(update(pools).where(pools.c.id == row.id).values(
            **page.as_dict(), page_mac=_seal(page_key(vault), int(row.id), page)))
        audit.append(conn, actor=actor, action="pool_page_set", subject=f"pool:{name}",
                     details={"pool": name, **values})
    return page
