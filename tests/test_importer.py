"""The import file parser: one verdict per line, exact reasons, whole-file refusals, streaming."""

from __future__ import annotations

import hashlib
import random
from datetime import datetime
from pathlib import Path

import pytest

from robot.errors import ImportRejected
from robot.importer import (
    Format,
    ParsedLine,
    RejectedLine,
    file_sha256,
    parse_cost,
    parse_expiry,
    parse_file,
)
from robot.vault import join_pair


def code(i: int) -> str:
    """A synthetic code: nothing like a real card."""
    return f"TEST-{i:06d}-QZXW"


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def verdicts(path: Path, fmt: Format | None = None) -> list[ParsedLine | RejectedLine]:
    return list(parse_file(path, fmt=fmt))


def rejects(path: Path, fmt: Format | None = None) -> list[tuple[int, str]]:
    return [(v.line_no, v.reason) for v in verdicts(path, fmt) if isinstance(v, RejectedLine)]


def secrets_of(path: Path, fmt: Format | None = None) -> list[tuple[int, str]]:
    return [(v.line_no, v.secret) for v in verdicts(path, fmt) if isinstance(v, ParsedLine)]


def whole_file_reason(path: Path, fmt: Format | None = None) -> list[tuple[int, str]]:
    with pytest.raises(ImportRejected) as info:
        verdicts(path, fmt)
    return info.value.rejects


# ---------------------------------------------------------------------------- txt


def test_txt_one_code_per_line_trimmed(tmp_path: Path) -> None:
    """Each line is one code with surrounding spaces (also ideographic ones) removed."""
    path = write(tmp_path, "a.txt", f"{code(1)}\n  {code(2)}  \n\u3000{code(3)}\t\n")
    assert secrets_of(path) == [(1, code(1)), (2, code(2)), (3, code(3))]


def test_txt_inner_spaces_are_kept(tmp_path: Path) -> None:
    """Spaces inside a code are part of it."""
    path = write(tmp_path, "a.txt", "ABCD EFGH 1234\n")
    assert secrets_of(path) == [(1, "ABCD EFGH 1234")]


def test_blank_lines_are_rejected_with_their_numbers(tmp_path: Path) -> None:
    """Empty and whitespace-only lines are reported as blank, line numbers counted from 1."""
    path = write(tmp_path, "a.txt", f"{code(1)}\n\n   \n{code(2)}\n")
    assert rejects(path) == [(2, "blank line"), (3, "blank line")]
    assert secrets_of(path) == [(1, code(1)), (4, code(2))]


@pytest.mark.parametrize("bad", ["AB\x00CD", "AB\tCD", "AB\u200bCD", "AB\x1fCD", "AB\x7fCD"])
def test_control_characters_are_rejected(tmp_path: Path, bad: str) -> None:
    """NUL, tab, zero-width and other control characters inside a code reject the line."""
    path = write(tmp_path, "a.txt", f"{code(1)}\n{bad}\n")
    assert rejects(path) == [(2, "control character")]


def test_duplicates_are_not_the_parsers_business(tmp_path: Path) -> None:
    """The same code twice yields two parsed lines (the database step rejects the second)."""
    path = write(tmp_path, "a.txt", f"{code(1)}\n{code(1)}\n")
    assert secrets_of(path) == [(1, code(1)), (2, code(1))]


def test_format_follows_extension_or_argument(tmp_path: Path) -> None:
    """.txt/.csv pick the format; another extension needs an explicit format."""
    path = write(tmp_path, "a.dat", "code\nX1\n")
    assert whole_file_reason(path)[0][0] == 1
    assert secrets_of(path, fmt="txt") == [(1, "code"), (2, "X1")]
    assert secrets_of(path, fmt="csv") == [(2, "X1")]


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    """The streamed hash equals the hash of the whole content."""
    data = random.Random(3).randbytes(3 << 20)
    path = write(tmp_path, "a.bin", data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- csv


def test_csv_code_column(tmp_path: Path) -> None:
    """A CSV with a 'code' column yields its values; quoted commas stay in the code."""
    path = write(tmp_path, "a.csv", f'code\n{code(1)}\n"{code(2)},X"\n')
    assert secrets_of(path) == [(2, code(1)), (3, f"{code(2)},X")]


def test_csv_card_number_and_password(tmp_path: Path) -> None:
    """card_no,password pairs are joined; an empty password leaves the card number alone."""
    path = write(tmp_path, "a.csv", "card_no,password\nC001,P001\nC002,\n")
    assert secrets_of(path) == [(2, join_pair("C001", "P001")), (3, "C002")]


def test_csv_header_names_are_case_insensitive_and_trimmed(tmp_path: Path) -> None:
    """' Card_No , PASSWORD ' is the same header as 'card_no,password'."""
    path = write(tmp_path, "a.csv", " Card_No , PASSWORD \nC001,P001\n")
    assert secrets_of(path) == [(2, join_pair("C001", "P001"))]


def test_csv_expiry_and_cost(tmp_path: Path) -> None:
    """Expiry and cost are read per line: local China time to UTC, yuan to cents."""
    path = write(tmp_path, "a.csv",
                 "code,expires_at,cost\n"
                 "A1,2030-03-01,12.5\n"
                 "A2,2030-03-01 08:30,0.05\n"
                 "A3,2030-03-01T10:00:00+00:00,3\n"
                 "A4,,\n")
    items = [v for v in verdicts(path) if isinstance(v, ParsedLine)]
    assert [(v.line_no, v.expires_at, v.cost_cents) for v in items] == [
        (2, datetime(2030, 3, 1, 16, 0), 1250),  # valid through 1 March local time
        (3, datetime(2030, 3, 1, 0, 30), 5),
        (4, datetime(2030, 3, 1, 10, 0), 300),
        (5, None, None),
    ]
    assert items[0].expires_text == "2030-03-01"


def test_csv_bad_cost(tmp_path: Path) -> None:
    """Unreadable costs are rejected per line, with the value when it is safe (bad dates are in
    tests/badinput/test_imports.py)."""
    path = write(tmp_path, "a.csv",
                 "code,expires_at,cost\n"
                 "A1,2030-01-01,1\n"
                 "A2,2030-01-01,-1\n"
                 "A3,2030-01-01,1.234\n"
                 "A4,2030-01-01,abc\n"
                 "A5,2030-01-01,1\n")
    assert rejects(path) == [
        (3, "bad cost: -1"),
        (4, "bad cost: 1.234"),
        (5, "bad cost: ****"),  # not cost-shaped: masked
    ]


def test_csv_wrong_number_of_columns(tmp_path: Path) -> None:
    """A row with more or fewer cells than the header is rejected."""
    path = write(tmp_path, "a.csv", "code,cost\nA1\nA2,1,9\nA3,1\n")
    assert rejects(path) == [(2, "wrong number of columns"), (3, "wrong number of columns")]


def test_csv_blank_rows(tmp_path: Path) -> None:
    """Blank lines and rows of empty cells are blank; a row without its code is missing one."""
    path = write(tmp_path, "a.csv", "code,cost\nA1,1\n\n,\n,2\n")
    assert rejects(path) == [(3, "blank line"), (4, "blank line"), (5, "missing code")]


@pytest.mark.parametrize("header", ["code,price", "code,card_no", "cost", "code,code", "卡密"])
def test_csv_bad_header_refuses_the_file(tmp_path: Path, header: str) -> None:
    """Unknown, duplicate, conflicting or missing code columns fail the whole file at line 1."""
    path = write(tmp_path, "a.csv", f"{header}\nA1\n")
    [(line, reason)] = whole_file_reason(path)
    assert line == 1
    assert reason.startswith("bad header: ")


# ---------------------------------------------------------------------------- values


@pytest.mark.parametrize(("text", "utc"), [
    ("2030-03-01", datetime(2030, 3, 1, 16, 0)),
    ("2030/3/1", datetime(2030, 3, 1, 16, 0)),
    ("2030-12-31", datetime(2030, 12, 31, 16, 0)),
    ("2030-03-01 00:00", datetime(2030, 2, 28, 16, 0)),
    ("2030-03-01 23:59:59", datetime(2030, 3, 1, 15, 59, 59)),
    ("2030-03-01T12:00:00Z", datetime(2030, 3, 1, 12, 0)),
    ("2030-03-01T12:00:00+09:00", datetime(2030, 3, 1, 3, 0)),
    ("2030-03-01T12:00", datetime(2030, 3, 1, 4, 0)),
])
def test_parse_expiry(text: str, utc: datetime) -> None:
    """Naive values are China local time; a date alone lasts through that local day."""
    assert parse_expiry(text) == utc


@pytest.mark.parametrize("text", ["tomorrow", "2030-13-01", "01-03-2030", "9999-12-31", ""])
def test_parse_expiry_refuses(text: str) -> None:
    """Garbage, impossible dates and the no-expiry sentinel's range are refused."""
    with pytest.raises(ValueError):
        parse_expiry(text)


@pytest.mark.parametrize(("text", "cents"), [
    ("0", 0), ("12", 1200), ("12.5", 1250), ("12.50", 1250), ("0.01", 1), ("¥3.2", 320),
    ("8元", 800),
])
def test_parse_cost(text: str, cents: int) -> None:
    """Yuan with up to two decimals become integer cents."""
    assert parse_cost(text) == cents


@pytest.mark.parametrize("text", ["-1", "1.001", "1,5", "abc", "", "1e3", "99999999999"])
def test_parse_cost_refuses(text: str) -> None:
    """Negative, over-precise, malformed or absurd costs are refused."""
    with pytest.raises(ValueError):
        parse_cost(text)
