"""Reading code files for import: one streaming pass that yields a verdict per line.

Three formats, chosen by the file's extension unless the caller names one:

``.txt``
    One code per line.

``.csv``
    A header row is required (the first line that is not blank). Columns: ``code`` *or*
    ``card_no`` (+ optional ``password``; an empty password means the card number alone is
    the code), optional ``expires_at`` and optional ``cost``. Suppliers' Chinese headers are
    the same columns: ``卡号`` = card_no, ``密码`` = password, ``卡密`` = password beside a
    card number and the code alone otherwise, ``有效期``/``过期时间`` = expires_at,
    ``成本``/``进价`` = cost. Any other column makes the whole file fail (line 1).

``.xlsx``
    The same columns in the first sheet (or a named one) of an Excel workbook, read by
    :mod:`robot.spreadsheet`; "line" means the sheet's row number.

Text files are UTF-8 (with or without a byte-order mark) or GBK/GB18030, the legacy encoding
of Chinese Windows exports: a file that is not UTF-8 throughout is read as GB18030 when every
line reads as GB18030 and no line is UTF-8 beyond ASCII (a mixed file is read as UTF-8 and
each other line is refused, naming the likely cause). The caller may force the encoding.

``expires_at`` accepts ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS]`` (``/`` and ``.`` work as
the date separator too, ``2025年3月1日`` and ``20250301`` as well) and ISO 8601 with a UTC
offset; ``永久``/``长期`` mean no expiry. Values without an offset are local time in the
robot's ``timezone:`` (the caller passes the zone; Asia/Shanghai when it names none). **A
date alone means the code is valid through that day**: it expires at the last second of that
local day, 23:59:59 (``2025-03-01`` in Asia/Shanghai → ``2025-03-01 23:59:59 +08:00``,
stored as ``2025-03-01 15:59:59`` UTC; a code is sold while its expiry is still ahead).
``cost`` is in yuan with at most two decimals.

Every line is a :class:`ParsedLine`, a :class:`BlankLine` (skipped and counted, never a
rejection) or a :class:`RejectedLine` with a short reason (see the ``R_*`` constants;
:func:`reason_kind` groups reasons for a summary); problems with the file as a whole (binary,
empty, a bad header, UTF-16, a workbook that cannot be read) raise
:class:`~robot.errors.ImportRejected`. Lines are read one at a time with a length cap, so
memory stays bounded whatever the file holds; duplicates are *not* detected here (the
database step does that).

This module never touches the database and never puts a code into a reason, an exception
or a ``repr`` (values echoed in reasons are shown as written unless they could be a code,
then masked).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Literal

from robot.clock import DEFAULT_ZONE, NEVER, day_end, local_to_utc, to_naive_utc
from robot.errors import ImportRejected
from robot.spreadsheet import cell_text, column_letter
from robot.vault import join_pair, mask

Format = Literal["txt", "csv", "xlsx"]
FORMATS: tuple[Format, ...] = ("txt", "csv", "xlsx")
# What the reader decodes text files with: GBK files are read as GB18030, its superset.
Encoding = Literal["utf-8", "gb18030"]
ENCODING_NAMES: dict[str, Encoding] = {
    "utf-8": "utf-8", "utf8": "utf-8", "utf-8-sig": "utf-8",
    "gbk": "gb18030", "gb2312": "gb18030", "gb18030": "gb18030", "cp936": "gb18030",
}

MAX_CHARS = 512
# Bytes a line may take before it is certainly too long (4 bytes per UTF-8 character, + CR).
MAX_LINE_BYTES = MAX_CHARS * 4 + 1
SNIFF_BYTES = 4096
# Upper bound of a cost in cents: the column is a 32-bit integer.
MAX_COST_CENTS = 2_147_483_647

R_TOO_LONG = f"too long (max {MAX_CHARS} characters)"
R_CONTROL = "control character"
R_NOT_UTF8 = "not valid UTF-8"
R_NOT_UTF8_CUT = "not valid UTF-8: the line ends inside a character (file cut short?)"
R_NOT_UTF8_GBK = ("not valid UTF-8 (it reads as GBK/GB18030 but other lines are UTF-8: save "
                  "the file in one encoding, or give --encoding gbk)")
R_NOT_GBK = "not valid GBK/GB18030"
R_COLUMNS = "wrong number of columns"
R_QUOTING = "bad CSV quoting"
R_MISSING_CODE = "missing code"
R_BINARY = "binary file"
R_EMPTY = "empty file: no codes"
R_UTF16 = "not valid UTF-8 (the file is UTF-16: save it as UTF-8)"

CSV_COLUMNS = ("code", "card_no", "password", "expires_at", "cost")
# Header names suppliers use, by column. ``卡密`` (card secret) is the password beside a card
# number and the whole code without one (see _columns).
HEADER_ALIASES = {
    "卡号": "card_no", "密码": "password", "卡密": "password", "有效期": "expires_at",
    "过期时间": "expires_at", "成本": "cost", "进价": "cost",
}
_ALIASES_HELP = "卡号, 密码/卡密, 有效期/过期时间, 成本/进价"
# Written in an expiry column, these mean the code does not expire.
NO_EXPIRY = frozenset({"永久", "永久有效", "长期", "长期有效"})

BOM = b"\xef\xbb\xbf"
# Trimmed from both ends of every line and field (the ideographic space comes from IMEs).
_TRIM = " \t\r\n\u3000"
# Control bytes that do not occur in text files (tab, LF, VT, FF, CR and ESC are tolerated).
_CONTROL_BYTES = frozenset(set(range(0x20)) - {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1B}) | {0x7F}
# What a date or a cost as a person writes it is made of (see echo).
_LOOSE_DATE = re.compile(r"[0-9年月日号时分秒:./\-+ TZ]{1,40}")
_LOOSE_COST = re.compile(r"[-+0-9.,¥￥元 ]{1,16}")
_CN_DATE = re.compile(r"(\d{4})年(\d{1,2})月(\d{1,2})[日号]?(.*)")
_DOTTED_DATE = re.compile(r"(\d{4})\.(\d{1,2})\.(\d{1,2})(.*)")
_COMPACT_DATE = re.compile(r"((?:19|20)\d{2})(\d{2})(\d{2})")
_COST = re.compile(r"(\d{1,9})(?:\.(\d{1,2}))?")


@dataclass(frozen=True)
class ParsedLine:
    """A line that holds a code (``secret`` is the plaintext: never log or print it)."""

    line_no: int
    secret: str = field(repr=False)
    expires_at: datetime | None = None  # naive UTC
    cost_cents: int | None = None
    expires_text: str | None = None  # the expiry as written in the file, for messages


@dataclass(frozen=True)
class RejectedLine:
    """A line that cannot be imported, and why."""

    line_no: int
    reason: str


@dataclass(frozen=True)
class BlankLine:
    """An empty line (or a row of empty cells): skipped and counted, never a rejection."""

    line_no: int


Verdict = ParsedLine | BlankLine | RejectedLine


def reason_kind(reason: str) -> str:
    """A reason without its particulars, for counting by reason: ``bad date: 2025-02-30`` →
    ``bad date``, ``duplicate in pool (batch 1 line 3)`` → ``duplicate in pool``."""
    return reason.split(":", 1)[0].split(" (", 1)[0]


def file_sha256(path: Path) -> str:
    """SHA-256 of the file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path: Path, fmt: Format | None = None) -> Format:
    """The format named by the caller, else the one the extension says."""
    if fmt is not None:
        return fmt
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return "txt"
    if suffix == ".csv":
        return "csv"
    if suffix in (".xlsx", ".xlsm"):
        return "xlsx"
    if suffix in (".xls", ".et", ".wps"):
        why = (f"{suffix} is an old spreadsheet format: save it as .xlsx (Excel workbook) or "
               ".csv (UTF-8)")
        raise ImportRejected([(1, why)], f"{path.name}: {why}")
    raise ImportRejected(
        [(1, f"unknown file type {suffix or '(none)'!r}: name it .txt, .csv or .xlsx, or give "
             "--format")],
        f"{path.name}: cannot tell the format from the extension; name it .txt, .csv or .xlsx",
    )


def encoding_named(name: str) -> Encoding:
    """The reader's encoding for a name a person gives (``gbk`` → GB18030, its superset)."""
    try:
        return ENCODING_NAMES[name.strip().lower()]
    except KeyError:
        raise ValueError(name) from None


# Pure functions of the text; a file repeats the same few costs and expiries on every line.
@lru_cache(maxsize=4096)
def parse_cost(value: str) -> int:
    """Yuan with at most two decimals (``12``, ``12.5``, ``¥12.50``) → cents.

    Raises ``ValueError`` for negatives, more decimals, garbage or absurd amounts.
    """
    text = value.strip(_TRIM).lstrip("¥￥").removesuffix("元").strip()
    match = _COST.fullmatch(text)
    if match is None:
        raise ValueError(value)
    cents = int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))
    if cents > MAX_COST_CENTS:
        raise ValueError(value)
    return cents


@lru_cache(maxsize=4096)
def parse_expiry(value: str, zone: tzinfo = DEFAULT_ZONE) -> datetime:
    """An expiry as written by a merchant, local time in ``zone`` → naive UTC (see the
    module docstring).

    Raises ``ValueError`` when it is not a date this module accepts.
    """
    try:
        return _checked(_parse_expiry(_usual_date(value.strip(_TRIM)), zone))
    except OverflowError:  # a date at the very end of the calendar
        raise ValueError(value) from None


def _usual_date(text: str) -> str:
    """The Chinese, dotted and compact ways of writing a date, as ``YYYY-MM-DD`` (the rest of
    the text, a time say, is kept)."""
    for shape in (_CN_DATE, _DOTTED_DATE):
        m = shape.fullmatch(text)
        if m:
            return f"{m.group(1)}-{m.group(2)}-{m.group(3)}{m.group(4)}"
    m = _COMPACT_DATE.fullmatch(text)
    if m:
        return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"
    return text


def _parse_expiry(text: str, zone: tzinfo) -> datetime:
    normalized = text.replace("/", "-")
    try:
        day = datetime.strptime(normalized, "%Y-%m-%d")
    except ValueError:
        pass
    else:
        return day_end(day.date(), zone)  # valid through that local day
    for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            local = datetime.strptime(normalized, pattern)
        except ValueError:
            continue
        return local_to_utc(local, zone)
    parsed = datetime.fromisoformat(text)  # ValueError propagates
    return local_to_utc(parsed, zone) if parsed.tzinfo is None else to_naive_utc(parsed)


def _checked(value: datetime) -> datetime:
    # NEVER is the stock table's "no expiry" sentinel: real expiries must sort before it.
    if value >= NEVER or value.year < 2000:
        raise ValueError(str(value))
    return value


def echo(value: str) -> str:
    """A field value safe to show in a reason: as written when it cannot be a code (a bad
    date or cost is what the merchant must find in the file), masked otherwise (a column
    mix-up puts codes where dates belong).

    Shown: up to 5 characters; date-like text (digits and date/time separators, at most 14
    digits, at most 8 when there is nothing but digits); cost-like text with at most 10
    digits; words without a digit or a Latin letter (``明天``, ``永久有效期``).
    """
    value = value.strip(_TRIM)
    if _has_control(value):
        return mask(value)
    digits = sum(ch.isdigit() for ch in value)
    if (len(value) <= 5
            or (_LOOSE_DATE.fullmatch(value) and digits <= (8 if value.isdigit() else 14))
            or (_LOOSE_COST.fullmatch(value) and digits <= 10)
            or not any(ch.isdigit() or (ch.isascii() and ch.isalpha()) for ch in value)):
        return value
    return mask(value)


def _has_control(text: str) -> bool:
    # Cc: C0/C1 controls (NUL, tab inside a code, ...); Cf: invisible format characters such
    # as zero-width spaces that make a code look right and fail; Zl/Zp: line separators.
    # str.isprintable() is False for every one of those (and for a few harmless characters
    # such as U+3000), so a printable line, nearly every line, skips the per-character look.
    if text.isprintable():
        return False
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def check_text(text: str) -> str | None:
    """Why a (trimmed, non-empty) value cannot be a code's text, or None."""
    if len(text) > MAX_CHARS:
        return R_TOO_LONG
    if _has_control(text):
        return R_CONTROL
    return None


def _sniff(head: bytes, name: str) -> None:
    """Refuse files that are not text at all (or are UTF-16) before reading them line by line."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportRejected([(1, R_UTF16)], f"{name}: {R_UTF16}")
    if head.startswith(b"PK\x03\x04"):
        why = "a zip archive (an Excel workbook?): name it .xlsx, or export .csv or .txt"
        raise ImportRejected([(1, why)], f"{name}: {why}")
    body = head.removeprefix(BOM)
    if not body:
        raise ImportRejected([(1, R_EMPTY)], f"{name}: {R_EMPTY}")
    controls = sum(1 for b in body if b in _CONTROL_BYTES)
    invalid = 0
    if not _decodes(body, "utf-8") and not _decodes(body, "gb18030"):
        # Neither UTF-8 nor the usual Chinese legacy encoding: count the undecodable bytes.
        decoded = body.decode("utf-8", errors="surrogateescape")
        invalid = sum(1 for ch in decoded if "\udc80" <= ch <= "\udcff")
    if (controls + invalid) * 2 > len(body):
        raise ImportRejected([(1, R_BINARY)],
                             f"{name}: {R_BINARY} (export the codes as .txt, .csv or .xlsx)")


def _decodes(data: bytes, encoding: str) -> bool:
    # The sniffed block may end inside a multi-byte character: allow up to 3 cut bytes.
    for cut in range(4):
        try:
            data[: len(data) - cut].decode(encoding)
        except UnicodeDecodeError:
            continue
        return True
    return False


def detect_encoding(path: Path) -> Encoding:
    """UTF-8, unless the file is GBK/GB18030 throughout (see the module docstring).

    A UTF-8 file, the usual case, costs one pass of the C decoder over it; only a file that
    is not UTF-8 is looked at line by line.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as fh:
        try:
            # Small blocks keep the decoded text small; ASCII blocks need no decoding at all.
            for block in iter(lambda: fh.read(1 << 16), b""):
                if not (block.isascii() and not decoder.getstate()[0]):
                    decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            pass
        else:
            return "utf-8"
        fh.seek(0)
        gbk_lines = 0
        for _, raw in _physical_lines(fh):
            if raw is None or raw.isascii():
                continue
            if _utf8_beyond_ascii(raw):
                return "utf-8"  # a UTF-8 line: a mixed file is not GBK
            try:
                raw.decode("gb18030")
            except UnicodeDecodeError:
                return "utf-8"  # no encoding reads it: UTF-8's reasons are the clearest
            gbk_lines += 1
    return "gb18030" if gbk_lines else "utf-8"


def _utf8_beyond_ascii(raw: bytes) -> bool:
    """Whether this line with non-ASCII bytes is UTF-8, or UTF-8 cut short at its end."""
    for cut in range(4):
        try:
            text = raw[: len(raw) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return not text.isascii()
    return False


def _physical_lines(fh: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """``(line_no, bytes without the line break)``; ``None`` for a line over the byte cap."""
    line_no = 0
    while True:
        raw = fh.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        line_no += 1
        if line_no == 1:
            raw = raw.removeprefix(BOM)
        if not raw.endswith(b"\n") and len(raw) > MAX_LINE_BYTES:
            while raw and not raw.endswith(b"\n"):  # skip the rest without holding it
                raw = fh.readline(1 << 16)
            yield line_no, None
            continue
        yield line_no, raw.rstrip(b"\n").rstrip(b"\r")


def _why_not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    """The reason for a line that is not UTF-8, with the likely cause when there is one."""
    if exc.reason == "unexpected end of data" and exc.end == len(raw):
        return R_NOT_UTF8_CUT  # good UTF-8 up to a character cut in half at the end
    try:
        raw.decode("gb18030")
    except UnicodeDecodeError:
        return R_NOT_UTF8
    return R_NOT_UTF8_GBK  # the usual legacy encoding of Chinese Windows exports


def _text_lines(fh: BinaryIO, encoding: Encoding) -> Iterator[tuple[int, str | Verdict]]:
    """Decoded, trimmed lines, or what a line that is no usable text is."""
    for line_no, raw in _physical_lines(fh):
        if raw is None:
            yield line_no, RejectedLine(line_no, R_TOO_LONG)
            continue
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            why = _why_not_utf8(raw, exc) if encoding == "utf-8" else R_NOT_GBK
            yield line_no, RejectedLine(line_no, why)
            continue
        text = text.strip(_TRIM)
        if line_no == 1:
            text = text.lstrip("\ufeff")  # GB18030's own byte-order mark
        if not text:
            yield line_no, BlankLine(line_no)
        elif len(text) > MAX_CHARS:
            yield line_no, RejectedLine(line_no, R_TOO_LONG)
        elif _has_control(text):
            yield line_no, RejectedLine(line_no, R_CONTROL)
        else:
            yield line_no, text


def parse_file(path: Path, *, fmt: Format | None = None, encoding: Encoding | None = None,
               sheet: str | None = None, zone: tzinfo = DEFAULT_ZONE) -> Iterator[Verdict]:
    """Yield one verdict per data line of ``path``, in order, streaming.

    ``encoding`` forces how a text file is decoded (default: detected); ``sheet`` names the
    sheet of a workbook (default: the first); ``zone`` is the time zone of expiries written
    without an offset (the robot's ``timezone:``). Raises :class:`ImportRejected` (line 1) when
    the file as a whole is unusable.
    """
    kind = detect_format(path, fmt)
    if kind == "xlsx":
        from robot.spreadsheet import sheet_rows  # openpyxl is loaded only for workbooks

        yield from _useful(_cell_items(sheet_rows(path, sheet), path.name, zone), path.name)
        return
    if sheet is not None:
        raise ImportRejected([(1, "--sheet is for .xlsx workbooks")],
                             f"{path.name}: --sheet is for .xlsx workbooks")
    with path.open("rb") as fh:
        _sniff(fh.read(SNIFF_BYTES), path.name)
    chosen = encoding or detect_encoding(path)
    with path.open("rb") as fh:
        lines = _text_lines(fh, chosen)
        items = _txt_items(lines) if kind == "txt" else _csv_items(lines, path.name, zone)
        yield from _useful(items, path.name)


def _useful(items: Iterator[Verdict], name: str) -> Iterator[Verdict]:
    """The items, and a refusal at the end when not one of them held anything."""
    useful = False
    for item in items:
        useful = useful or not isinstance(item, BlankLine)
        yield item
    if not useful:
        raise ImportRejected([(1, R_EMPTY)], f"{name}: {R_EMPTY}")


def _txt_items(lines: Iterator[tuple[int, str | Verdict]]) -> Iterator[Verdict]:
    for line_no, text in lines:
        yield ParsedLine(line_no, text) if isinstance(text, str) else text


@dataclass(frozen=True)
class _Header:
    width: int
    code: int | None
    card_no: int | None
    password: int | None
    expires_at: int | None
    cost: int | None


def parse_header(cells: list[str], name: str) -> _Header:
    """The columns of a header row (English or Chinese names); refuses the file (line 1)
    when a column is unknown, repeated or the code column is missing."""
    written = [c.strip(_TRIM).lower() for c in cells]
    while len(written) > 1 and not written[-1]:  # spreadsheets pad rows with empty cells
        written.pop()
    names = _columns(written)
    problems = [f"unknown column {w!r}" for w, n in zip(written, names, strict=True)
                if n not in CSV_COLUMNS]
    for column in CSV_COLUMNS:
        same = [w for w, n in zip(written, names, strict=True) if n == column]
        if len(same) > 1:
            problems.append(f"column {column!r} appears twice ({', '.join(same)})"
                            if len(set(same)) > 1 else f"column {column!r} appears twice")
    if "code" in names and ("card_no" in names or "password" in names):
        problems.append("use either 'code' or 'card_no,password', not both")
    elif "code" not in names and "card_no" not in names:
        problems.append("no 'code' (or 'card_no') column")
    if problems:
        reason = ("bad header: " + "; ".join(problems) + f" (allowed: {', '.join(CSV_COLUMNS)}"
                  f"; or {_ALIASES_HELP})")
        raise ImportRejected([(1, reason)], f"{name}: {reason}")

    def col(column: str) -> int | None:
        return names.index(column) if column in names else None

    return _Header(len(names), col("code"), col("card_no"), col("password"), col("expires_at"),
                   col("cost"))


def _columns(written: list[str]) -> list[str]:
    """Each header cell's column name: English as written, Chinese through the aliases."""
    names = [HEADER_ALIASES.get(w, w) for w in written]
    if "卡密" in written and "card_no" not in names:
        # 卡密 alone is the whole code (a card secret without a card number).
        names[written.index("卡密")] = "code"
    return names


def _csv_header(text: str | Verdict, name: str) -> _Header:
    if not isinstance(text, str):
        assert isinstance(text, RejectedLine)  # blank lines before the header are skipped
        raise ImportRejected([(1, f"bad header: {text.reason}")], f"{name}: bad CSV header")
    try:
        cells = next(csv.reader([text], strict=True))
    except csv.Error:
        cells = []
    return parse_header(cells, name)


def _csv_items(lines: Iterator[tuple[int, str | Verdict]], name: str,
               zone: tzinfo) -> Iterator[Verdict]:
    header: _Header | None = None
    for line_no, text in lines:
        if header is None:
            if isinstance(text, BlankLine):
                yield text
            else:
                header = _csv_header(text, name)
            continue
        if not isinstance(text, str):
            yield text
            continue
        if '"' in text:
            try:
                cells = [c.strip(_TRIM) for c in next(csv.reader([text], strict=True))]
            except csv.Error:
                yield RejectedLine(line_no, R_QUOTING)
                continue
        else:  # no quotes: what the csv module would make of it (the line holds no breaks)
            cells = [c.strip(_TRIM) for c in text.split(",")]
        if not any(cells):  # a row of empty cells (spreadsheets export these)
            yield BlankLine(line_no)
            continue
        if len(cells) != header.width:
            yield RejectedLine(line_no, R_COLUMNS)
            continue
        yield row_verdict(line_no, cells, header, zone)


def row_verdict(line_no: int, cells: list[str], header: _Header,
                zone: tzinfo = DEFAULT_ZONE) -> ParsedLine | RejectedLine:
    """The verdict on one data row whose cells are trimmed text, ``header.width`` of them
    (expiries without an offset are local time in ``zone``)."""
    if header.code is not None:
        secret = cells[header.code]
    else:
        assert header.card_no is not None  # the header check guarantees one of the two
        card_no = cells[header.card_no]
        password = cells[header.password] if header.password is not None else ""
        secret = join_pair(card_no, password) if card_no else ""
    if not secret:
        return RejectedLine(line_no, R_MISSING_CODE)
    expires_at: datetime | None = None
    expires_text: str | None = None
    if header.expires_at is not None and cells[header.expires_at] not in ("", *NO_EXPIRY):
        expires_text = cells[header.expires_at]
        try:
            expires_at = parse_expiry(expires_text, zone)
        except ValueError:
            return RejectedLine(line_no, f"bad date: {echo(expires_text)}")
    cost: int | None = None
    if header.cost is not None and cells[header.cost]:
        try:
            cost = parse_cost(cells[header.cost])
        except ValueError:
            return RejectedLine(line_no, f"bad cost: {echo(cells[header.cost])}")
    return ParsedLine(line_no, secret, expires_at, cost, expires_text)


def _cell_items(rows: Iterator[tuple[int, tuple[object, ...]]], name: str,
                zone: tzinfo) -> Iterator[Verdict]:
    """Verdicts on a sheet's rows of cell values (see :mod:`robot.spreadsheet`)."""
    header: _Header | None = None
    for row_no, values in rows:
        if all(v is None or (isinstance(v, str) and not v.strip(_TRIM)) for v in values):
            yield BlankLine(row_no)
            continue
        if header is None:
            header = parse_header([cell_text(v, "header")[0] for v in values], name)
            roles = _roles(header)
            continue
        extra = next((i for i in range(header.width, len(values)) if values[i] is not None
                      and str(values[i]).strip(_TRIM)), None)
        if extra is not None:
            yield RejectedLine(row_no, f"a value in column {column_letter(extra)}, which has "
                                       "no header")
            continue
        cells: list[str] = []
        problem: str | None = None
        for i, role in enumerate(roles):
            text, problem = cell_text(values[i] if i < len(values) else None, role)
            if problem is not None:
                break
            cells.append(text)
        if problem is None and not any(cells):
            yield BlankLine(row_no)  # e.g. cells holding only spaces in columns we read
            continue
        if problem is None:
            problem = next((p for p in map(check_text, cells) if p), None)
        yield (RejectedLine(row_no, problem) if problem
               else row_verdict(row_no, cells, header, zone))


def _roles(header: _Header) -> list[str]:
    """What each column holds: ``code`` (code, card number, password), ``expires_at``,
    ``cost``."""
    roles = ["code"] * header.width
    if header.expires_at is not None:
        roles[header.expires_at] = "expires_at"
    if header.cost is not None:
        roles[header.cost] = "cost"
    return roles


__all__ = [
    "ENCODING_NAMES",
    "FORMATS",
    "MAX_CHARS",
    "BlankLine",
    "Encoding",
    "Format",
    "ParsedLine",
    "RejectedLine",
    "Verdict",
    "detect_encoding",
    "detect_format",
    "encoding_named",
    "file_sha256",
    "parse_cost",
    "parse_expiry",
    "parse_file",
    "reason_kind",
]
