"""Value types of the configuration files: secrets, durations, names, templates, money, zones.

:data:`Secret` (anything confidential: a literal, a whole-value ``${ENV_VAR}`` or
``file:/path``; it prints as ``********``) and :class:`PlatformConfig` come from the ground
floor, :mod:`connectors.config`, where connectors take them too (:mod:`robot.config`
re-exports them). Every validator here raises ``PydanticCustomError`` with a message that
never quotes the value it refused.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

MASK = "********"
SHOP_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: Placeholders a memo template may use (the pipeline fills them in).
MEMO_PLACEHOLDERS = frozenset({"masked_codes", "pickup_url", "order_id"})
#: Placeholders an item description may use.
ITEM_DESC_PLACEHOLDERS = frozenset({"title", "quantity", "order_id"})
DEFAULT_MEMO_TEMPLATE = "[robot] {masked_codes} {pickup_url}"
DEFAULT_ITEM_DESC = "{title} x{quantity}"
#: Characters a delivery API token needs at least (``secrets.token_urlsafe(32)`` gives 43).
MIN_API_TOKEN = 32


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_HELP = "expected seconds or a duration like '30s', '5m', '1h'"
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a string such as ``"30"``, ``"30s"``, ``"5m"``, ``"1h30m"``."""
    if isinstance(value, bool):
        raise PydanticCustomError("duration", _DURATION_HELP)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            return float(text)
        except ValueError:
            pass
        parts = _DURATION_PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    raise PydanticCustomError("duration", _DURATION_HELP)


#: Seconds (> 0); YAML may say ``60``, ``"30s"``, ``"5m"``, ``"1h"``.
Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def _check_name(value: Any) -> Any:
    if isinstance(value, str) and not SHOP_NAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "shop_name",
            "must be 1-64 characters: lowercase letters, digits, '_' or '-', "
            "starting with a letter or digit",
        )
    return value


ShopName = Annotated[str, BeforeValidator(_check_name)]


def _template_checker(allowed: frozenset[str]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            raise PydanticCustomError(
                "template_syntax",
                "bad template: {reason} (write {{{{ and }}}} for literal braces)",
                {"reason": str(exc)},
            ) from exc
        unknown = sorted({f for f in fields if f not in allowed})
        if unknown:
            raise PydanticCustomError(
                "template_placeholder",
                "unknown placeholder {unknown}; use {allowed}",
                {
                    "unknown": ", ".join("{" + u + "}" for u in unknown),
                    "allowed": ", ".join("{" + a + "}" for a in sorted(allowed)),
                },
            )
        return value

    return check


MemoTemplate = Annotated[str, BeforeValidator(_template_checker(MEMO_PLACEHOLDERS))]
ItemDescTemplate = Annotated[str, BeforeValidator(_template_checker(ITEM_DESC_PLACEHOLDERS))]
Unmapped = Literal["hold", "ignore"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ID_KEYS = ("item_id", "sku_id", "outer_id")


def _id_to_str(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


PlatformId = Annotated[str | None, BeforeValidator(_id_to_str)]


def one_id(model: BaseModel) -> None:
    if sum(getattr(model, k) is not None for k in ID_KEYS) != 1:
        raise PydanticCustomError("sku_key", "give exactly one of item_id, sku_id, outer_id")


def _money(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("yuan", "expected an amount in yuan, e.g. 500 or 99.90")
    if isinstance(value, float):
        return str(value)  # 99.9 -> "99.9", not the float's binary expansion
    return value


#: An amount of money in yuan (元), at most two decimals; the risk rules compare it in cents.
Yuan = Annotated[Decimal, BeforeValidator(_money), Field(gt=0, max_digits=14, decimal_places=2)]


def cents(yuan: Decimal) -> int:
    """A :data:`Yuan` amount in cents (fen), as the database and the rules count money."""
    return int(yuan * 100)


#: The shops' time zone when the robot file names none (the platforms show Beijing time).
DEFAULT_TIMEZONE = "Asia/Shanghai"


def _zone_name(value: Any) -> Any:
    if not isinstance(value, str):
        raise PydanticCustomError("timezone_type",
                                  "expected an IANA time zone name, e.g. Asia/Shanghai")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: not a zone key at all ("../x")
        raise PydanticCustomError(
            "timezone", "unknown time zone {name}; use an IANA name, e.g. Asia/Shanghai",
            {"name": repr(value[:64])}) from None
    return value


#: An IANA time zone name (``Asia/Shanghai``), checked against the system's zone database.
TimeZoneName = Annotated[str, BeforeValidator(_zone_name)]


def zone(name: str) -> ZoneInfo:
    """The zone a validated :data:`TimeZoneName` names."""
    return ZoneInfo(name)


# ---------------------------------------------------------------- what buyers read and tap

#: Schemes a link a buyer taps may have (a contact link may also open mail or the dialler).
WEB_SCHEMES = ("https", "http")
CONTACT_SCHEMES = (*WEB_SCHEMES, "mailto", "tel")
LINK_MAX = 500
_LINK_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# Control characters, and the invisible ones that could make a link or text read differently
# from what it does (bidi overrides, zero-width joiners, BOM).
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def link_problem(value: str, schemes: tuple[str, ...]) -> str | None:
    """Why ``value`` is no safe link to show a buyer (None: it is one).

    Only the listed schemes (never ``javascript:`` or ``data:``), no spaces or control
    characters, and a host for web links. The message never quotes the value.
    """
    allowed = ", ".join(s + ":" for s in schemes)
    if len(value) > LINK_MAX:
        return f"too long (at most {LINK_MAX} characters)"
    if _INVISIBLE.search(value) or any(c.isspace() for c in value):
        return "spaces and control characters are not allowed in a link (write %20)"
    match = _LINK_SCHEME.match(value)
    if match is None or match.group(1).lower() not in schemes:
        return f"only {allowed} links are allowed"
    if match.group(1).lower() in WEB_SCHEMES:
        host = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)", value)
        if host is None or not host.group(1):
            return "expected a web address with a host, e.g. https://shop.example.com/help"
        if "@" in host.group(1):
            # https://bank.example.com@other.example.net goes to the second host.
            return "a user name before the host (user@host) is not allowed in a link"
    return None


def _link_checker(schemes: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, str):
            raise PydanticCustomError("link_type", "expected a link, e.g. https://example.com")
        problem = link_problem(value.strip(), schemes)
        if problem is not None:
            raise PydanticCustomError("link", "{problem}", {"problem": problem})
        return value.strip()

    return check


#: A link a buyer may tap to reach the shop's customer service.
ContactLink = Annotated[str, BeforeValidator(_link_checker(CONTACT_SCHEMES))]


def _text_checker(max_len: int, *, lines: bool) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise PydanticCustomError("text_type", "expected text")
        text = value.replace("\r\n", "\n").strip()
        if not text:
            raise PydanticCustomError("text_empty", "is empty (leave the key out instead)")
        if len(text) > max_len:
            raise PydanticCustomError("text_long", "too long (at most {n} characters)",
                                      {"n": max_len})
        if _INVISIBLE.search(text.replace("\n", "" if lines else "\x00")):
            what = "control characters" + ("" if lines else " and line breaks")
            raise PydanticCustomError("text_control", "{what} are not allowed here",
                                      {"what": what})
        return text

    return check


#: Plain text a buyer reads on the pickup page (HTML-escaped when shown).
ShopDisplayName = Annotated[str, BeforeValidator(_text_checker(64, lines=False))]
ContactText = Annotated[str, BeforeValidator(_text_checker(200, lines=False))]
#: Plain text with line breaks kept.
FooterText = Annotated[str, BeforeValidator(_text_checker(500, lines=True))]


def text_problem(value: str, max_len: int, *, lines: bool) -> str | None:
    """Why ``value`` cannot be shown to a buyer as plain text (None: it can)."""
    try:
        _text_checker(max_len, lines=lines)(value)
    except PydanticCustomError as exc:
        return exc.message()
    return None
