"""What a buyer types on the lookup form (``POST /p``), read safely, and how it is checked.

Every value here comes from the network. Each is bounded in length and held to a strict
pattern of ASCII digits and separators *before* anything converts it, so nothing a request
sends costs more than a regular expression over a few dozen characters (an amount such as
``1e999000`` once cost 25 seconds of a Decimal-to-int conversion under the GIL).

* :func:`order_number`: the platform order number, normalized (NFKC, so full-width digits
  become ASCII; spaces, control and format characters such as U+200B removed; dash
  look-alikes read as ``-``) and held to :data:`ORDER_RE`. The result is both what the
  database compares (binary on every backend: ``orders.platform_order_id`` is
  ``utf8mb4_bin`` on MySQL/MariaDB) and the rate-limit key, so every input that finds an
  order shares that order's bucket, and no variant opens a fresh one.
* :data:`CHECKS`: each lookup check (``robot.config.LookupCheckName``) as a parser of what
  the buyer types and a comparison with the order's :class:`OrderFacts`. A new check (the
  recharge account's last 4 for top-up orders) is a field on :class:`OrderFacts`, one class
  here and its name in ``robot.config.LookupCheckName``.

This module must never log what a buyer typed, and never convert a value it has not matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Protocol

from robot.clock import to_zone

#: Platform order numbers: Taobao's tid is digits, Pinduoduo's order_sn digits and ``-``
#: (``201205-123456789012345``), Youzan's tid ``E`` and digits, a WeChat mini-program's
#: out_trade_no the merchant's own letters, digits, ``_`` and ``-``. One alphabet holds them
#: all; the column is 64 characters wide.
ORDER_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Longest raw value read from a form field (before normalization); longer is malformed.
RAW_MAX = 128
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58"), "-")
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def _nfkc(text: str, *, spaces: bool = False) -> str | None:
    """``text`` NFKC-normalized with invisible characters removed (with ``spaces``, runs of
    spaces become one and the ends are stripped instead); None when too long."""
    if len(text) > RAW_MAX:
        return None
    normal = unicodedata.normalize("NFKC", text)  # at most 18 characters per input character
    if spaces:
        normal = " ".join("".join(" " if c.isspace() else c for c in normal).split())
    return "".join(c for c in normal
                   if unicodedata.category(c) not in _INVISIBLE or (spaces and c == " "))


def order_number(text: str) -> str | None:
    """The order number a buyer typed, normalized; None when it cannot be one."""
    normal = _nfkc(text)
    if normal is None:
        return None
    normal = normal.translate(_DASHES)
    return normal if ORDER_RE.fullmatch(normal) else None


def order_key(normal: str) -> str:
    """The rate-limit key of a normalized order number (hashed: keys stay small)."""
    return hashlib.sha256(normal.encode()).hexdigest()


@dataclass(frozen=True)
class OrderFacts:
    """What the checks compare with: one order's row."""

    buyer_id: str | None
    total_cents: int
    paid_at: datetime | None  # naive UTC, as stored


@dataclass(frozen=True)
class Rules:
    """A shop's settings the checks need."""

    suffix_length: int
    zone: tzinfo


@dataclass(frozen=True)
class PaidAt:
    """A payment minute as typed: the date parts are None when the buyer gave only a time."""

    year: int | None
    month: int | None
    day: int | None
    hour: int
    minute: int


Given = int | str | PaidAt


class Check(Protocol):
    """One lookup check: what the buyer typed, parsed (None: malformed), and compared."""

    def parse(self, text: str) -> Given | None: ...

    def matches(self, given: Given, order: OrderFacts, rules: Rules) -> bool: ...


def same_text(a: str, b: str) -> bool:
    """Constant-time equality of two strings of any lengths."""
    return hmac.compare_digest(hashlib.sha256(a.encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(b.encode("utf-8", "surrogatepass")).digest())


# ------------------------------------------------------------------ paid_amount

_AMOUNT_RE = re.compile(r"(?P<yuan>[0-9]{1,10})(?:\.(?P<fen>[0-9]{1,2}))?")


def parse_amount(text: str) -> int | None:
    """Cents from what a buyer types as an amount (``29.9``, ``¥29.90``, ``29.90元``,
    ``１,029.90``); None for anything else, exponents and more than two decimals included."""
    normal = _nfkc(text)
    if normal is None:
        return None
    normal = normal.replace(",", "").removeprefix("¥").removesuffix("元")
    match = _AMOUNT_RE.fullmatch(normal)
    if match is None:
        return None
    return int(match["yuan"]) * 100 + int((match["fen"] or "0").ljust(2, "0"))


class PaidAmount:
    """The amount paid. Public (it is the price): never a check on its own."""

    def parse(self, text: str) -> Given | None:
        return parse_amount(text)

    def matches(self, given: Given, order: OrderFacts, rules: Rules) -> bool:
        return isinstance(given, int) and same_text(str(given), str(order.total_cents))


# ------------------------------------------------------------------ paid_at

# 2026-12-05 14:03, 2026/12/05 14:03:27, 2026年12月5日 14:03, 12-05 14:03, 14:03, 14时03分
_PAID_AT_RE = re.compile(
    r"(?:(?:(?P<year>[0-9]{4})[-/.年])?(?P<month>[0-9]{1,2})[-/.月](?P<day>[0-9]{1,2})"
    r"(?:日 ?| |T))?"
    r"(?P<hour>[0-9]{1,2})[:时点](?P<minute>[0-9]{2})(?:[:分](?P<second>[0-9]{2})秒?|分)?"
)
_TOLERANCE = timedelta(minutes=1)
_DAY = 24 * 60


def parse_paid_at(text: str) -> PaidAt | None:
    """A payment minute as a buyer copies it from their order page (see :data:`_PAID_AT_RE`;
    full-width digits and colons are fine, seconds are ignored); None for anything else."""
    normal = _nfkc(text, spaces=True)
    if normal is None:
        return None
    match = _PAID_AT_RE.fullmatch(normal)
    if match is None:
        return None
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        return None
    parts = [int(match[k]) if match[k] else None for k in ("year", "month", "day")]
    return PaidAt(parts[0], parts[1], parts[2], hour, minute)


def _wall_minute(year: int, month: int, day: int, given: PaidAt) -> datetime | None:
    try:
        return datetime(year, month, day, given.hour, given.minute)
    except ValueError:  # 2 30, 13 1: not a date
        return None


class PaidAtCheck:
    """The minute the buyer paid, in the shops' time zone, ±1 minute. With a date, the
    date must match too; without one, only the time of day is compared."""

    def parse(self, text: str) -> Given | None:
        return parse_paid_at(text)

    def matches(self, given: Given, order: OrderFacts, rules: Rules) -> bool:
        if not isinstance(given, PaidAt) or order.paid_at is None:
            return False
        local = to_zone(order.paid_at, rules.zone).replace(tzinfo=None, second=0,
                                                           microsecond=0)
        if given.month is None or given.day is None:
            apart = abs(given.hour * 60 + given.minute - (local.hour * 60 + local.minute))
            return min(apart, _DAY - apart) <= 1
        years = ([given.year] if given.year is not None
                 else [local.year - 1, local.year, local.year + 1])  # 12-31 23:59 in January
        for year in years:
            typed = _wall_minute(year, given.month, given.day, given)
            if typed is not None and abs(typed - local) <= _TOLERANCE:
                return True
        return False


# ------------------------------------------------------------------ buyer_id_suffix


class BuyerIdSuffix:
    """The last ``suffix_length`` characters of the platform buyer id (case-insensitive)."""

    def parse(self, text: str) -> Given | None:
        normal = _nfkc(text)
        return normal if normal else None

    def matches(self, given: Given, order: OrderFacts, rules: Rules) -> bool:
        n = rules.suffix_length
        buyer = order.buyer_id
        usable = buyer is not None and len(buyer) >= n
        expected = buyer[-n:] if buyer is not None and usable else "\x00"
        return isinstance(given, str) and same_text(given.casefold(), expected.casefold()) \
            and usable


#: Every check by its name in ``pickup.lookup_check`` (robot.config.LookupCheckName).
CHECKS: Mapping[str, Check] = {
    "buyer_id_suffix": BuyerIdSuffix(),
    "paid_at": PaidAtCheck(),
    "paid_amount": PaidAmount(),
}


def read_checks(names: tuple[str, ...], form: Mapping[str, str]) -> dict[str, Given] | None:
    """The shop's checks parsed from the form (field = check name; a lone check may also
    come as ``check``); None when one is missing or malformed."""
    found: dict[str, Given] = {}
    for name in names:
        text = form.get(name)
        if not text and len(names) == 1:
            text = form.get("check")
        parsed = CHECKS[name].parse(text) if text else None
        if parsed is None:
            return None
        found[name] = parsed
    return found


def all_match(names: tuple[str, ...], given: Mapping[str, Given], order: OrderFacts,
              rules: Rules) -> bool:
    """Whether every check matches; all are compared, whatever the first one says."""
    results = [CHECKS[name].matches(given[name], order, rules) for name in names]
    return bool(names) and all(results)
