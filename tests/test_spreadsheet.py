"""Excel workbooks as suppliers send them: Chinese headers, numbers, dates, blank rows, sheets.

Each workbook is written in the test with openpyxl (write mode) and read back through
:func:`robot.importer.parse_file`, the import's own reader.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from robot.errors import ImportRejected
from robot.importer import BlankLine, ParsedLine, RejectedLine, parse_file
from robot.spreadsheet import column_letter
from robot.vault import join_pair

DATE_ONLY = "yyyy-mm-dd"
DATE_TIME = "yyyy-mm-dd hh:mm"


def workbook(path: Path, rows: Sequence[Sequence[Any]], *, title: str = "卡密",
             formats: dict[str, str] | None = None,
             more_sheets: dict[str, Sequence[Sequence[Any]]] | None = None) -> Path:
    """Write ``rows`` (None = empty cell, [] = empty row) as a sheet; ``formats`` maps cell
    coordinates (``C2``) to number formats."""
    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.title = title
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row, start=1):
            if value is not None:
                ws.cell(row=r, column=c, value=value)
    for coordinate, fmt in (formats or {}).items():
        ws[coordinate].number_format = fmt
    for name, other in (more_sheets or {}).items():
        extra = book.create_sheet(name)
        for row in other:
            extra.append(list(row))
    book.save(path)
    return path


def patch_sheet(path: Path, replace_xml: Callable[[str], str]) -> Path:
    """A copy of the workbook with its first sheet's XML rewritten (what openpyxl cannot
    write: error cells, exact big integers, a wrong recorded size)."""
    patched = path.with_name("patched-" + path.name)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(patched, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = replace_xml(data.decode()).encode()
            dst.writestr(item, data)
    return patched


def replace_cell(coordinate: str, xml: str) -> Callable[[str], str]:
    def replace(text: str) -> str:
        start = text.index(f'<c r="{coordinate}"')
        end = text.index("</c>", start) + len("</c>")
        return text[:start] + xml + text[end:]
    return replace


def verdicts(path: Path, sheet: str | None = None) -> list[ParsedLine | BlankLine | RejectedLine]:
    return list(parse_file(path, sheet=sheet))


def parsed(path: Path, sheet: str | None = None) -> list[ParsedLine]:
    return [v for v in verdicts(path, sheet) if isinstance(v, ParsedLine)]


def rejects(path: Path) -> list[tuple[int, str]]:
    return [(v.line_no, v.reason) for v in verdicts(path) if isinstance(v, RejectedLine)]


def test_supplier_workbook_with_chinese_headers(tmp_path: Path) -> None:
    """卡号/密码/有效期/成本 in the first sheet: pairs joined, dates and costs read, rows numbered
    as Excel shows them."""
    path = workbook(tmp_path / "codes.xlsx", [
        ["卡号", "密码", "有效期", "成本"],
        ["C0001", "P0001", datetime(2030, 3, 1), 29.9],
        ["C0002", "P0002", "2030-03-01", "29.90"],
        ["C0003", "P0003", None, 30],
    ], formats={"C2": DATE_ONLY})
    assert [(v.line_no, v.secret, v.expires_at, v.cost_cents) for v in parsed(path)] == [
        (2, join_pair("C0001", "P0001"), datetime(2030, 3, 1, 15, 59, 59), 2990),
        (3, join_pair("C0002", "P0002"), datetime(2030, 3, 1, 15, 59, 59), 2990),
        (4, join_pair("C0003", "P0003"), None, 3000),
    ]


def test_date_cells_date_only_or_with_a_time(tmp_path: Path) -> None:
    """A date cell is valid through that local day; a date-time cell expires at that local
    moment (even at midnight); a time alone or a number in the date column is refused."""
    path = workbook(tmp_path / "d.xlsx", [
        ["卡密", "过期时间"],
        ["K1", datetime(2030, 3, 1)],
        ["K2", datetime(2030, 3, 1, 8, 30)],
        ["K3", datetime(2030, 3, 1, 0, 0)],
        ["K4", time(12, 0)],
        ["K5", 45717],
        ["K6", date(2030, 3, 1)],
    ], formats={"B2": DATE_ONLY, "B3": DATE_TIME, "B4": DATE_TIME, "B7": DATE_ONLY})
    assert [(v.line_no, v.expires_at) for v in parsed(path)] == [
        (2, datetime(2030, 3, 1, 15, 59, 59)), (3, datetime(2030, 3, 1, 0, 30)),
        (4, datetime(2030, 2, 28, 16, 0)), (7, datetime(2030, 3, 1, 15, 59, 59)),
    ]
    got = rejects(path)
    assert [line for line, _ in got] == [5, 6]
    r5, r6 = (reason for _, reason in got)
    assert r5.startswith("bad date: 12:00:00")
    assert r6.startswith("bad date: 45717 (a number, not a date")


def test_numbers_in_code_columns_convert_exactly_or_are_refused(tmp_path: Path) -> None:
    """A card number stored as a number keeps every digit (1.23456789012e+11 is
    123456789012); a number stored with lost digits (a 19-digit card number typed into a
    spreadsheet becomes 1.234567890123457e+18), or a decimal, is refused with its row and
    never shown."""
    path = workbook(tmp_path / "n.xlsx", [
        ["卡号", "密码"],
        [123456789012, 654321],
        [1.23456789012e+11, 12.0],
        [1234567890123456789, "P4"],  # openpyxl, like Excel, stores it as a double
        [12345.5, "P5"],
    ])
    assert [(v.line_no, v.secret) for v in parsed(path)] == [
        (2, join_pair("123456789012", "654321")),
        (3, join_pair("123456789012", "12")),
    ]
    got = rejects(path)
    assert [line for line, _ in got] == [4, 5]
    assert "more than 15 digits" in got[0][1] and "format the column as text" in got[0][1]
    assert "decimal number" in got[1][1]
    assert not any(digits in repr(got) for digits in ("1234567890123", "12345"))


def test_integer_cells_are_exact_at_any_length(tmp_path: Path) -> None:
    """A whole number written as such in the sheet (as other generators do) keeps all of its
    19 digits."""
    path = workbook(tmp_path / "i.xlsx", [["code"], ["PLACEHOLDER"]])
    patched = patch_sheet(path, replace_cell("A2", '<c r="A2" t="n"><v>1234567890123456789</v></c>'))
    assert [v.secret for v in parsed(patched)] == ["1234567890123456789"]


def test_costs_in_cells(tmp_path: Path) -> None:
    """Float costs that are whole fen are exact (29.9, 0.1+0.2); others are shown and refused."""
    path = workbook(tmp_path / "c.xlsx", [
        ["code", "cost"],
        ["A1", 29.9], ["A2", 0.1 + 0.2], ["A3", 8.975], ["A4", -1.5], ["A5", 12],
    ])
    assert [(v.line_no, v.cost_cents) for v in parsed(path)] == [(2, 2990), (3, 30), (6, 1200)]
    assert rejects(path) == [(4, "bad cost: 8.975"), (5, "bad cost: -1.5")]


def test_blank_rows_anywhere_are_skipped_and_counted(tmp_path: Path) -> None:
    """Empty rows before the header, between codes and at the end, and rows of spaces, are
    blank verdicts, never rejects."""
    path = workbook(tmp_path / "b.xlsx", [
        [], [None, None], ["code", "cost"], ["A1", 1], [], ["  ", None], ["A2", 2], [],
        [None, None],
    ])
    assert [v.line_no for v in verdicts(path) if isinstance(v, BlankLine)] == [1, 2, 5, 6]
    assert [(v.line_no, v.secret) for v in parsed(path)] == [(4, "A1"), (7, "A2")]
    assert rejects(path) == []


def test_bad_cells_are_refused_per_row(tmp_path: Path) -> None:
    """A value beside the table, a TRUE/FALSE, an error value, a missing code or a control
    character each refuse their row only."""
    path = workbook(tmp_path / "x.xlsx", [
        ["code", "cost"],
        ["A1", 1, "stray"],
        [True, 1],
        ["=1/0", 1],
        [None, 3],
        ["A\u200bB", 1],
        ["A6", 1],
    ])
    # openpyxl writes "=1/0" as a formula without a cached value: read as an empty cell.
    assert rejects(path) == [
        (2, "a value in column C, which has no header"),
        (3, "a TRUE/FALSE cell where a code belongs"),
        (4, "missing code"),
        (5, "missing code"),
        (6, "control character"),
    ]
    assert [v.line_no for v in parsed(path)] == [7]


def test_error_cells_are_refused(tmp_path: Path) -> None:
    """An Excel error value (#N/A) in the code column refuses the row instead of becoming a
    code called '#N/A'."""
    path = workbook(tmp_path / "e.xlsx", [["code"], ["A1"], ["A2"]])
    patched = patch_sheet(path, replace_cell("A3", '<c r="A3" t="e"><v>#N/A</v></c>'))
    assert rejects(patched) == [(3, "an Excel error cell (#N/A) where a code belongs")]


def test_named_sheet_and_missing_sheet(tmp_path: Path) -> None:
    """--sheet picks a sheet by name; a name that is not there is refused, listing the sheets."""
    path = workbook(tmp_path / "s.xlsx", [["code"], ["FIRST-1"]], title="说明",
                    more_sheets={"卡密": [["卡密"], ["SECOND-1"]]})
    assert [v.secret for v in parsed(path)] == ["FIRST-1"]
    assert [v.secret for v in parsed(path, sheet="卡密")] == ["SECOND-1"]
    with pytest.raises(ImportRejected) as info:
        verdicts(path, sheet="Sheet9")
    assert info.value.rejects == [(1, "no sheet named 'Sheet9' (sheets: 说明, 卡密)")]


@pytest.mark.parametrize(("name", "data", "why"), [
    ("a.xlsx", b"code\nA1\n", "not an .xlsx workbook"),
    ("a.xls", b"\xd0\xcf\x11\xe0" + bytes(500), ".xls is an old spreadsheet format"),
], ids=["renamed-text", "old-xls"])
def test_files_that_are_no_workbook(tmp_path: Path, name: str, data: bytes, why: str) -> None:
    """A text file named .xlsx or an old .xls is refused at line 1, saying what to do."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImportRejected) as info:
        verdicts(path)
    [(line, reason)] = info.value.rejects
    assert line == 1 and reason.startswith(why)


def test_workbook_saved_as_txt_is_refused_with_advice(tmp_path: Path) -> None:
    """An .xlsx renamed to .csv is refused as a zip archive, naming the fix."""
    path = workbook(tmp_path / "a.xlsx", [["code"], ["A1"]])
    renamed = path.rename(tmp_path / "a.csv")
    with pytest.raises(ImportRejected, match="an Excel workbook"):
        verdicts(renamed)


def test_empty_workbook_and_header_only(tmp_path: Path) -> None:
    """A sheet without a single code is an empty file (line 1); so is a header alone."""
    for rows in ([], [["code", "cost"], [], []]):
        path = workbook(tmp_path / "e.xlsx", rows)
        with pytest.raises(ImportRejected) as info:
            verdicts(path)
        assert info.value.rejects == [(1, "empty file: no codes")]


def test_wrong_declared_size_reads_every_row(tmp_path: Path) -> None:
    """A workbook whose recorded size says A1:A1 still yields all of its rows."""
    path = workbook(tmp_path / "w.xlsx", [["code"], ["A1"], ["A2"], ["A3"]])

    def shrink(text: str) -> str:
        assert '<dimension ref="A1:A4"' in text
        return text.replace('<dimension ref="A1:A4"', '<dimension ref="A1:A1"')

    patched = patch_sheet(path, shrink)
    assert [v.secret for v in parsed(patched)] == ["A1", "A2", "A3"]


def test_parsed_cells_never_show_a_code_in_reasons(tmp_path: Path) -> None:
    """A code that lands in the date or cost column is masked in the reason."""
    secret = "TEST-000123-QZXW"
    path = workbook(tmp_path / "m.xlsx", [["code", "有效期", "成本"], ["A1", secret, 1],
                                          ["A2", "2030-01-01", secret]])
    got = rejects(path)
    assert got == [(2, "bad date: TE****XW"), (3, "bad cost: TE****XW")]
    assert secret not in repr(got)


def test_column_letters() -> None:
    """Columns are named as Excel names them."""
    assert [column_letter(i) for i in (0, 25, 26, 27, 701, 702)] == [
        "A", "Z", "AA", "AB", "ZZ", "AAA"]


def test_workbooks_that_would_inflate_too_far_are_refused(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A workbook whose parts inflate beyond the limits (a zip bomb) is refused before
    openpyxl reads it."""
    import robot.spreadsheet as S

    path = workbook(tmp_path / "z.xlsx", [["code"], ["A1"]])
    monkeypatch.setattr(S, "MAX_UNCOMPRESSED", 1000)
    with pytest.raises(ImportRejected, match="inflates to"):
        verdicts(path)
    monkeypatch.setattr(S, "MAX_UNCOMPRESSED", 1 << 30)
    monkeypatch.setattr(S, "MAX_SHARED_STRINGS", 1000)
    with zipfile.ZipFile(path, "a") as archive:  # the table Excel keeps the cells' texts in
        archive.writestr("xl/sharedStrings.xml", "<sst>" + "<si><t>x</t></si>" * 100 + "</sst>")
    with pytest.raises(ImportRejected, match="inflates to"):
        verdicts(path)
