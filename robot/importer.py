"""Reading code files for import: one streaming pass that yields a verdict per line.

Two formats, chosen by the file's extension unless the caller names one:

``.txt``
    One code per line.

``.csv``
    A header row is required. Columns: ``code`` *or* ``card_no`` (+ optional ``password``;
    an empty password means the card number alone is the code), optional ``expires_at`` and
    optional ``cost``. Any other column makes the whole file fail (line 1).

``expires_at`` accepts ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS]`` (``/`` works as the date
separator too) and ISO 8601 with a UTC offset. Values without an offset are local time in
China (UTC+8, the merchants' clock). **A date alone means the code is valid through that
day**: it expires at the next local midnight (``2025-03-01`` → ``2025-03-02 00:00 +08:00``,
stored as ``2025-03-01 16:00`` UTC). ``cost`` is in yuan with at most two decimals.

Every line is either a :class:`ParsedLine` or a :class:`RejectedLine` with a short reason
(see the ``R_*`` constants); problems with the file as a whole (binary, empty, a bad CSV
header, UTF-16) raise :class:`~robot.errors.ImportRejected`. Lines are read one at a time
with a length cap, so memory stays bounded whatever the file holds; duplicates are *not*
detected here (the database step does that).

This module never touches the database and never puts a code into a reason, an exception
or a ``repr`` (values echoed in reasons are masked unless they look like a date or a cost).
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Literal

from robot.clock import NEVER, to_naive_utc
from robot.errors import ImportRejected
from robot.vault import join_pair, mask

Format = Literal["txt", "csv"]

MAX_CHARS = 512
# Bytes a line may take before it is certainly too long (4 bytes per UTF-8 character, + CR).
MAX_LINE_BYTES = MAX_CHARS * 4 + 1
SNIFF_BYTES = 4096
# Upper bound of a cost in cents: the column is a 32-bit integer.
MAX_COST_CENTS = 2_147_483_647

# China has kept UTC+8 without daylight saving since 1991; a fixed offset needs no tz database.
LOCAL_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")

R_BLANK = "blank line"
R_TOO_LONG = f"too long (max {MAX_CHARS} characters)"
R_CONTROL = "control character"
R_NOT_UTF8 = "not valid UTF-8"
R_NOT_UTF8_CUT = "not valid UTF-8: the line ends inside a character (file cut short?)"
R_NOT_UTF8_GBK = "not valid UTF-8 (it reads as GBK/GB18030: save the file as UTF-8)"
R_COLUMNS = "wrong number of columns"
R_QUOTING = "bad CSV quoting"
R_MISSING_CODE = "missing code"
R_BINARY = "binary file"
R_EMPTY = "empty file: no codes"
R_UTF16 = "not valid UTF-8 (the file is UTF-16: save it as UTF-8)"

CSV_COLUMNS = ("code", "card_no", "password", "expires_at", "cost")

BOM = b"\xef\xbb\xbf"
# Trimmed from both ends of every line and field (the ideographic space comes from IMEs).
_TRIM = " \t\r\n\u3000"
# Control bytes that do not occur in text files (tab, LF, VT, FF, CR and ESC are tolerated).
_CONTROL_BYTES = frozenset(set(range(0x20)) - {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1B}) | {0x7F}
_DATE_SHAPE = re.compile(r"\d{4}[-/]\d{1,2}[-/]\d{1,2}([ T][0-9:.+\-Z ]*)?")
_COST_SHAPE = re.compile(r"[-+0-9.,¥￥元 ]{1,16}")
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
    raise ImportRejected(
        [(1, f"unknown file type {suffix or '(none)'!r}: name it .txt or .csv, or give --format")],
        f"{path.name}: cannot tell the format from the extension; name it .txt or .csv",
    )


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
def parse_expiry(value: str) -> datetime:
    """An expiry as written by a merchant → naive UTC (see the module docstring).

    Raises ``ValueError`` when it is not a date this module accepts.
    """
    try:
        return _checked(_parse_expiry(value.strip(_TRIM)))
    except OverflowError:  # a date at the very end of the calendar
        raise ValueError(value) from None


def _parse_expiry(text: str) -> datetime:
    normalized = text.replace("/", "-")
    try:
        # A local date; the offset is attached below.
        day = datetime.strptime(normalized, "%Y-%m-%d")
    except ValueError:
        pass
    else:
        # Valid through that day: expires at the next local midnight.
        return to_naive_utc((day + timedelta(days=1)).replace(tzinfo=LOCAL_TZ))
    for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            local = datetime.strptime(normalized, pattern)
        except ValueError:
            continue
        return to_naive_utc(local.replace(tzinfo=LOCAL_TZ))
    parsed = datetime.fromisoformat(text)  # ValueError propagates
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=LOCAL_TZ)
    return to_naive_utc(parsed)


def _checked(value: datetime) -> datetime:
    # NEVER is the stock table's "no expiry" sentinel: real expiries must sort before it.
    if value >= NEVER or value.year < 2000:
        raise ValueError(str(value))
    return value


def _echo(value: str, shape: re.Pattern[str]) -> str:
    """A field value safe to show in a reason: as written if it looks like what it should be
    (a date, a cost), masked otherwise (a column mix-up could put a code there)."""
    value = value.strip(_TRIM)
    if shape.fullmatch(value) and len(value) <= 40:
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


def _sniff(head: bytes, name: str) -> None:
    """Refuse files that are not text at all (or are UTF-16) before reading them line by line."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ImportRejected([(1, R_UTF16)], f"{name}: {R_UTF16}")
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
                             f"{name}: {R_BINARY} (export the codes as .txt or .csv)")


def _decodes(data: bytes, encoding: str) -> bool:
    # The sniffed block may end inside a multi-byte character: allow up to 3 cut bytes.
    for cut in range(4):
        try:
            data[: len(data) - cut].decode(encoding)
        except UnicodeDecodeError:
            continue
        return True
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


def _text_lines(fh: BinaryIO) -> Iterator[tuple[int, str | RejectedLine]]:
    """Decoded, trimmed lines, or the reason a line is unusable as text."""
    for line_no, raw in _physical_lines(fh):
        if raw is None:
            yield line_no, RejectedLine(line_no, R_TOO_LONG)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield line_no, RejectedLine(line_no, _why_not_utf8(raw, exc))
            continue
        text = text.strip(_TRIM)
        if not text:
            yield line_no, RejectedLine(line_no, R_BLANK)
        elif len(text) > MAX_CHARS:
            yield line_no, RejectedLine(line_no, R_TOO_LONG)
        elif _has_control(text):
            yield line_no, RejectedLine(line_no, R_CONTROL)
        else:
            yield line_no, text


def parse_file(path: Path, *, fmt: Format | None = None) -> Iterator[ParsedLine | RejectedLine]:
    """Yield one verdict per data line of ``path``, in order, streaming.

    Raises :class:`ImportRejected` (line 1) when the file as a whole is unusable.
    """
    kind = detect_format(path, fmt)
    with path.open("rb") as fh:
        _sniff(fh.read(SNIFF_BYTES), path.name)
        fh.seek(0)
        lines = _text_lines(fh)
        items = _txt_items(lines) if kind == "txt" else _csv_items(lines, path.name)
        useful = False
        for item in items:
            useful = useful or not (isinstance(item, RejectedLine) and item.reason == R_BLANK)
            yield item
        if not useful:
            raise ImportRejected([(1, R_EMPTY)], f"{path.name}: {R_EMPTY}")


def _txt_items(
    lines: Iterator[tuple[int, str | RejectedLine]],
) -> Iterator[ParsedLine | RejectedLine]:
    for line_no, text in lines:
        yield text if isinstance(text, RejectedLine) else ParsedLine(line_no, text)


@dataclass(frozen=True)
class _Header:
    width: int
    code: int | None
    card_no: int | None
    password: int | None
    expires_at: int | None
    cost: int | None


def _parse_header(text: str | RejectedLine, name: str) -> _Header:
    if isinstance(text, RejectedLine):
        raise ImportRejected([(1, f"bad header: {text.reason}")], f"{name}: bad CSV header")
    try:
        cells = next(csv.reader([text], strict=True))
    except csv.Error:
        cells = []
    names = [c.strip(_TRIM).lower() for c in cells]
    problems = [f"unknown column {n!r}" for n in names if n not in CSV_COLUMNS]
    problems += [f"column {n!r} appears twice" for n in CSV_COLUMNS if names.count(n) > 1]
    if "code" in names and ("card_no" in names or "password" in names):
        problems.append("use either 'code' or 'card_no,password', not both")
    elif "code" not in names and "card_no" not in names:
        problems.append("no 'code' (or 'card_no') column")
    if problems:
        reason = "bad header: " + "; ".join(problems) + f" (allowed: {', '.join(CSV_COLUMNS)})"
        raise ImportRejected([(1, reason)], f"{name}: {reason}")

    def col(column: str) -> int | None:
        return names.index(column) if column in names else None

    return _Header(len(names), col("code"), col("card_no"), col("password"), col("expires_at"),
                   col("cost"))


def _csv_items(lines: Iterator[tuple[int, str | RejectedLine]],
               name: str) -> Iterator[ParsedLine | RejectedLine]:
    first = next(lines, None)
    if first is None:
        return
    header = _parse_header(first[1], name)
    for line_no, text in lines:
        if isinstance(text, RejectedLine):
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
            yield RejectedLine(line_no, R_BLANK)
            continue
        if len(cells) != header.width:
            yield RejectedLine(line_no, R_COLUMNS)
            continue
        yield _csv_row(line_no, cells, header)


def _csv_row(line_no: int, cells: list[str], header: _Header) -> ParsedLine | RejectedLine:
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
    if header.expires_at is not None and cells[header.expires_at]:
        expires_text = cells[header.expires_at]
        try:
            expires_at = parse_expiry(expires_text)
        except ValueError:
            return RejectedLine(line_no, f"bad date: {_echo(expires_text, _DATE_SHAPE)}")
    cost: int | None = None
    if header.cost is not None and cells[header.cost]:
        try:
            cost = parse_cost(cells[header.cost])
        except ValueError:
            return RejectedLine(line_no, f"bad cost: {_echo(cells[header.cost], _COST_SHAPE)}")
    return ParsedLine(line_no, secret, expires_at, cost, expires_text)


__all__ = [
    "LOCAL_TZ",
    "MAX_CHARS",
    "Format",
    "ParsedLine",
    "RejectedLine",
    "detect_format",
    "file_sha256",
    "parse_cost",
    "parse_expiry",
    "parse_file",
]
