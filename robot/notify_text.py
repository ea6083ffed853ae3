"""The text of one buyer notification: the shop's template filled for one order.

Placeholders (robot.config.notify.PLACEHOLDERS): ``{order_id}`` (the platform's order
number), ``{pickup_url}``, ``{title}``, ``{quantity}``, ``{count}`` (codes), ``{shop}``,
``{masked_codes}`` and, only for a channel with ``include_codes: true``, ``{codes}``: the
plaintext codes. Filling ``{codes}`` marks the order's codes seen (they never return to
stock) and audits which codes went out, inside the caller's transaction, which commits
before the message is sent. This module never logs.
"""

from __future__ import annotations

import string
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection

from connectors.base import Order, RefundState
from connectors.notifier import Message
from robot import audit
from robot.config.notify import PLAINTEXT, ChannelFile, EmailFile, SmsFile, placeholders
from robot.http import handover
from robot.vault import Vault


class JobOrder(Protocol):
    """What the text needs of the outbox's job context."""

    @property
    def shop(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def order(self) -> Order: ...
    @property
    def platform_order_id(self) -> str: ...
    @property
    def masked_codes(self) -> tuple[str, ...]: ...
    @property
    def pickup_url(self) -> str | None: ...


class _Keep(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, values: dict[str, object]) -> str:
    return string.Formatter().vformat(template, (), _Keep(values)).strip()


def _templates(spec: ChannelFile, language: str) -> list[str]:
    if isinstance(spec, EmailFile):
        mail = spec.mail(language)
        return [mail.subject, mail.body]
    if isinstance(spec, SmsFile):
        return list(spec.params.values())
    return []


def _plaintext(conn: Connection, vault: Vault, order_id: int, now: datetime) -> str:
    """The order's codes in plain text, marked seen and audited first."""
    rows = handover.code_rows(conn, order_id)
    handover.mark_seen(conn, order_id, now)
    audit.append(conn, actor="robot", action="notify_codes", subject=f"order:{order_id}",
                 details={"code_ids": [r.code_id for r in rows]})
    shown = []
    for row in rows:
        card_no, password = handover.decrypt(vault, row)
        shown.append(f"{card_no} {password}" if password else card_no)
    return " ".join(shown)


def build_message(conn: Connection, vault: Vault, order_id: int, key: str, to: str,
                  language: str, ctx: JobOrder, spec: ChannelFile, now: datetime) -> Message:
    """The message for one notification (inside the caller's transaction)."""
    lines = [ln for ln in ctx.order.lines if ln.refund is RefundState.NONE] or \
        list(ctx.order.lines)
    values: dict[str, object] = {
        "order_id": ctx.platform_order_id, "pickup_url": ctx.pickup_url or "",
        "title": lines[0].title if lines else "",
        "quantity": sum(ln.quantity for ln in lines), "count": len(ctx.masked_codes),
        "shop": ctx.shop, "masked_codes": " ".join(ctx.masked_codes),
    }
    templates = _templates(spec, language)
    if spec.include_codes and any(PLAINTEXT in placeholders(t) for t in templates):
        values[PLAINTEXT] = _plaintext(conn, vault, order_id, now)
    if isinstance(spec, SmsFile):
        params = {name: fill(text, values) for name, text in spec.params.items()}
        return Message(key=key, to=to, language=language, subject="", text="", params=params)
    subject, body = templates if len(templates) == 2 else ("", "")
    return Message(key=key, to=to, language=language, subject=fill(subject, values),
                   text=fill(body, values))
