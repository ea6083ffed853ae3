"""Reading Excel workbooks (.xlsx) for import: the rows of one sheet, streamed, as cell values.

Suppliers send their codes as Excel files. openpyxl's read-only reader parses the sheet's XML
as a stream, so a workbook of a million rows is read in bounded memory (the shared-strings
table, which holds the sheet's distinct texts, is the one part loaded whole). Formulas are
read as the values Excel last computed.

:func:`cell_text` turns one cell into the text :mod:`robot.importer` parses, by what the
column holds, and refuses what a spreadsheet has already damaged: a card number stored as a
number with more digits than a spreadsheet keeps (Excel holds 15 significant digits, so the
last ones may already be zeros) or with decimals; a cost with more than two decimals.

Like the importer, this module never puts a cell of a code column into a reason or an
exception: numbers that cannot be codes are described, not shown.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from robot.errors import ImportRejected

# A workbook is a zip archive: refuse one that would inflate beyond this (a zip bomb) before
# openpyxl opens it. The shared strings are held in memory whole: a million codes take
# about 50 MB of them.
MAX_UNCOMPRESSED = 1 << 30
MAX_SHARED_STRINGS = 256 << 20
# Spreadsheets hold numbers as IEEE doubles and Excel keeps 15 significant digits of them.
EXACT_DIGITS = 15
_READ_AHEAD = 256  # rows read per warnings-silenced step
# Quoted text and escaped characters of a number format are not date/time codes.
_FORMAT_LITERALS = re.compile(r'"[^"]*"|\\.|\[[^\]]*\]')


def _refuse(name: str, why: str) -> ImportRejected:
    return ImportRejected([(1, why)], f"{name}: {why}")


def _check_archive(path: Path) -> None:
    """Refuse files that are no workbook, or that would inflate beyond reason."""
    if not zipfile.is_zipfile(path):
        raise _refuse(path.name, "not an .xlsx workbook (an old .xls, or another file renamed?):"
                                 " save it from Excel as .xlsx or .csv")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise _refuse(path.name, f"damaged .xlsx workbook ({exc})") from None
    inflated = sum(info.file_size for info in infos)
    strings = sum(i.file_size for i in infos if i.filename.lower().endswith("sharedstrings.xml"))
    if inflated > MAX_UNCOMPRESSED or strings > MAX_SHARED_STRINGS:
        raise _refuse(path.name, f"the workbook inflates to {inflated >> 20} MB "
                                 f"(more than {MAX_UNCOMPRESSED >> 20} MB): export it as .csv")


def sheet_rows(path: Path, sheet: str | None = None) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """``(row number, cell values)`` of the named sheet (default: the first), from row 1.

    Raises :class:`ImportRejected` (line 1) for a file that is no readable workbook or has
    no such sheet.
    """
    _check_archive(path)
    from openpyxl import load_workbook  # a heavy import, needed only for workbooks

    try:
        with warnings.catch_warnings():
            # openpyxl warns about styles and extensions it does not keep: nothing we read.
            warnings.simplefilter("ignore")
            book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many types on a bad workbook
        raise _refuse(path.name, f"cannot read the workbook ({type(exc).__name__})") from None
    try:
        if sheet is None:
            ws = book.worksheets[0]
        elif sheet in book.sheetnames:
            ws = book[sheet]
        else:
            raise _refuse(path.name, f"no sheet named {sheet!r} (sheets: "
                                     f"{', '.join(book.sheetnames)})")
        if not hasattr(ws, "reset_dimensions"):
            raise _refuse(path.name, f"sheet {ws.title!r} is a chart, not a table")
        # Some writers record a wrong size: read every row there is instead.
        ws.reset_dimensions()
        rows = ws.iter_rows(min_row=1)
        row_no = 0
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                batch = [row for _, row in zip(range(_READ_AHEAD), rows, strict=False)]
            for row in batch:
                row_no += 1
                yield row_no, tuple(_value(cell) for cell in row)
            if len(batch) < _READ_AHEAD:
                return
    finally:
        book.close()


class CellError(str):
    """An Excel error value (``#N/A``, ``#REF!``): what a broken formula left in a cell."""

    __slots__ = ()


def _value(cell: Any) -> Any:
    """A cell's value; a date whose format shows no time of day comes as a ``date``."""
    value = cell.value
    if getattr(cell, "data_type", None) == "e":
        return CellError(value)
    if isinstance(value, datetime) and not _shows_time(getattr(cell, "number_format", "")):
        return value.date()
    return value


def _shows_time(number_format: str) -> bool:
    """Whether a number format shows hours, minutes or seconds (``yyyy-mm-dd h:mm``)."""
    codes = _FORMAT_LITERALS.sub("", number_format or "").lower()
    return "h" in codes or "s" in codes


def declared_rows(path: Path, sheet: str | None = None) -> int | None:
    """The row count the sheet declares (for a progress bar; may be wrong), or None."""
    try:
        _check_archive(path)
        from openpyxl import load_workbook

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            book = load_workbook(path, read_only=True, data_only=True)
    except Exception:  # noqa: BLE001 - the import itself reports what is wrong
        return None
    try:
        ws = book[sheet] if sheet in book.sheetnames else book.worksheets[0]
        rows = getattr(ws, "max_row", None)
        return int(rows) if rows else None
    finally:
        book.close()


def cell_text(value: Any, role: str) -> tuple[str, str | None]:
    """``(text, None)`` for a cell of a column holding ``role`` (``code``, ``expires_at``,
    ``cost`` or ``header``), or ``("", reason)`` when the cell cannot be that."""
    if value is None:
        return "", None
    if isinstance(value, CellError):
        return "", f"an Excel error cell ({value[:16]}) where {_what(role)} belongs"
    if isinstance(value, str):
        return value.strip(" \t\r\n\u3000"), None
    if isinstance(value, bool):
        return "", f"a TRUE/FALSE cell where {_what(role)} belongs"
    if role == "expires_at":
        return _date_text(value)
    if role == "cost":
        return _cost_text(value)
    if isinstance(value, int):
        return str(value), None  # a whole number written as such: exact at any length
    if isinstance(value, float):
        return _number_code(value, role)
    if role == "header":
        return str(value), None
    return "", f"a date or time cell where {_what(role)} belongs"


def column_letter(index: int) -> str:
    """The spreadsheet name of the 0-based column ``index`` (0 → ``A``, 27 → ``AB``)."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


def _what(role: str) -> str:
    return {"expires_at": "an expiry date", "cost": "a cost", "header": "a column name"}.get(
        role, "a code")


def _number_code(value: float, role: str) -> tuple[str, str | None]:
    """A card number or password stored as a number: exact only when Excel kept every digit."""
    if role == "header":
        return (str(int(value)) if value.is_integer() else repr(value)), None
    if not value.is_integer():
        return "", ("a code stored as a decimal number: format the column as text in Excel "
                    "and enter the codes again")
    if abs(value) >= 10 ** EXACT_DIGITS:
        return "", (f"a code stored as a number of more than {EXACT_DIGITS} digits: Excel "
                    "keeps only 15, so the last digits may be lost; format the column as "
                    "text and enter the codes again")
    return str(int(value)), None


def _date_text(value: Any) -> tuple[str, str | None]:
    """A date cell as the importer reads dates (``2025-03-01`` valid through that day)."""
    if isinstance(value, datetime):
        value = value.replace(microsecond=0) + timedelta(seconds=round(value.microsecond / 1e6))
        return f"{value:%Y-%m-%d %H:%M:%S}", None
    if isinstance(value, date):
        return f"{value:%Y-%m-%d}", None
    if isinstance(value, time | timedelta):
        return "", f"bad date: {value} (a time of day without a date)"
    # A number in a date column: Excel's date serial without a date format, or a mistake.
    return "", (f"bad date: {_echo(_number_shown(value))} (a number, not a date: format the "
                "cell as a date)")


def _cost_text(value: Any) -> tuple[str, str | None]:
    """A cost cell in yuan; a float must be a whole number of fen (Excel's 29.9 is
    29.899999999999999, which is 29.90; 8.975 is refused)."""
    if isinstance(value, int):
        return str(value), None
    if isinstance(value, float):
        cents = round(value * 100)
        if abs(value * 100 - cents) < 1e-6 and cents >= 0:
            return f"{cents // 100}.{cents % 100:02d}", None
        return "", f"bad cost: {_echo(_number_shown(value))}"
    return "", "bad cost: a date or time cell"


def _echo(text: str) -> str:
    from robot.importer import echo  # the importer imports this module

    return echo(text)


def _number_shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


__all__ = ["CellError", "cell_text", "column_letter", "declared_rows", "sheet_rows"]
