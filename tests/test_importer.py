"""The import file parser: one verdict per line, exact reasons, whole-file refusals, streaming."""

from __future__ import annotations

import hashlib
import random
import tracemalloc
from datetime import datetime
from pathlib import Path

import pytest

from robot.errors import ImportRejected
from robot.importer import (
    MAX_CHARS,
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


def test_line_of_max_length_is_accepted_and_one_more_is_rejected(tmp_path: Path) -> None:
    """512 characters (even multi-byte ones) pass; 513 are too long."""
    ok = "码" * MAX_CHARS
    path = write(tmp_path, "a.txt", f"{ok}\n{'x' * (MAX_CHARS + 1)}\n{code(3)}\n")
    assert rejects(path) == [(2, "too long (max 512 characters)")]
    assert secrets_of(path) == [(1, ok), (3, code(3))]


def test_huge_line_is_rejected_and_counting_goes_on(tmp_path: Path) -> None:
    """A megabyte-long line is one reject; the next line keeps its true number."""
    path = write(tmp_path, "a.txt", "y" * 1_000_000 + "\n" + code(2) + "\n")
    assert rejects(path) == [(1, "too long (max 512 characters)")]
    assert secrets_of(path) == [(2, code(2))]


@pytest.mark.parametrize("bad", ["AB\x00CD", "AB\tCD", "AB\u200bCD", "AB\x1fCD", "AB\x7fCD"])
def test_control_characters_are_rejected(tmp_path: Path, bad: str) -> None:
    """NUL, tab, zero-width and other control characters inside a code reject the line."""
    path = write(tmp_path, "a.txt", f"{code(1)}\n{bad}\n")
    assert rejects(path) == [(2, "control character")]


def test_invalid_utf8_line_is_rejected_alone(tmp_path: Path) -> None:
    """A line that is not UTF-8 (here GBK) is rejected; its neighbours are read normally."""
    data = f"{code(1)}\n".encode() + "卡密ABC\n".encode("gbk") + f"{code(3)}\n".encode()
    path = write(tmp_path, "a.txt", data)
    assert rejects(path) == [(2, "not valid UTF-8")]
    assert secrets_of(path) == [(1, code(1)), (3, code(3))]


def test_utf8_bom_is_stripped(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark is not part of the first code."""
    path = write(tmp_path, "a.txt", b"\xef\xbb\xbf" + f"{code(1)}\n{code(2)}\n".encode())
    assert secrets_of(path) == [(1, code(1)), (2, code(2))]


def test_crlf_line_ends(tmp_path: Path) -> None:
    """Windows line ends leave no carriage return in the codes."""
    path = write(tmp_path, "a.txt", f"{code(1)}\r\n{code(2)}\r\n")
    assert secrets_of(path) == [(1, code(1)), (2, code(2))]


def test_last_line_without_newline_is_accepted(tmp_path: Path) -> None:
    """A file that does not end with a newline still yields its last code."""
    path = write(tmp_path, "a.txt", f"{code(1)}\n{code(2)}")
    assert secrets_of(path) == [(1, code(1)), (2, code(2))]


def test_binary_file_is_refused_whole(tmp_path: Path) -> None:
    """Random bytes (e.g. an .xlsx renamed to .txt) are refused as a binary file."""
    path = write(tmp_path, "a.txt", random.Random(7).randbytes(8192))
    assert whole_file_reason(path) == [(1, "binary file")]


def test_nul_padded_file_is_refused_whole(tmp_path: Path) -> None:
    """A file that is mostly NUL bytes is binary."""
    path = write(tmp_path, "a.txt", b"AB\n" + b"\x00" * 4000)
    assert whole_file_reason(path) == [(1, "binary file")]


def test_gbk_text_file_is_not_taken_for_binary(tmp_path: Path) -> None:
    """A legacy-encoded Chinese text file is read line by line and each line rejected."""
    path = write(tmp_path, "a.txt", ("充值卡密一号\n" * 300).encode("gb18030"))
    assert rejects(path)[:2] == [(1, "not valid UTF-8"), (2, "not valid UTF-8")]


def test_utf16_file_is_refused_with_advice(tmp_path: Path) -> None:
    """A UTF-16 export (Excel "Unicode text") is refused and the fix is named."""
    path = write(tmp_path, "a.txt", f"{code(1)}\n".encode("utf-16"))
    [(line, reason)] = whole_file_reason(path)
    assert line == 1
    assert "UTF-16" in reason


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\n  \n"])
def test_empty_file_is_refused(tmp_path: Path, data: bytes) -> None:
    """A file with no codes at all (empty, BOM only, blank lines only) is refused whole."""
    path = write(tmp_path, "a.txt", data)
    assert whole_file_reason(path) == [(1, "empty file: no codes")]


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


def test_parsed_line_repr_hides_the_code(tmp_path: Path) -> None:
    """A ParsedLine printed in a traceback or log never shows the plaintext."""
    path = write(tmp_path, "a.txt", f"{code(1)}\n")
    [item] = verdicts(path)
    assert code(1) not in repr(item)


def test_parsing_streams_in_bounded_memory(tmp_path: Path) -> None:
    """A 9 MB file (one 8 MB line, then 50k short ones) is read with little memory."""
    path = tmp_path / "big.txt"
    with path.open("wb") as fh:
        fh.write(b"z" * (8 << 20) + b"\n")
        for i in range(50_000):
            fh.write(f"{code(i)}\n".encode())
    tracemalloc.start()
    try:
        count = sum(1 for _ in parse_file(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 50_001
    assert peak < 2 << 20


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


def test_csv_bad_date_and_cost(tmp_path: Path) -> None:
    """Unreadable dates and costs are rejected per line, with the value when it is safe."""
    path = write(tmp_path, "a.csv",
                 "code,expires_at,cost\n"
                 "A1,2030-02-30,1\n"
                 "A2,2030-01-01,-1\n"
                 "A3,2030-01-01,1.234\n"
                 "A4,2030-01-01,abc\n"
                 "A5,2030-01-01,1\n")
    assert rejects(path) == [
        (2, "bad date: 2030-02-30"),
        (3, "bad cost: -1"),
        (4, "bad cost: 1.234"),
        (5, "bad cost: ****"),  # not cost-shaped: masked
    ]


def test_bad_date_never_echoes_a_code(tmp_path: Path) -> None:
    """A code that slipped into the date column (columns mixed up) is masked in the reason."""
    path = write(tmp_path, "a.csv", f"expires_at,code\n{code(1)},{code(2)}\n")
    [(line, reason)] = rejects(path)
    assert line == 2
    assert reason.startswith("bad date: ")
    assert code(1) not in reason


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


def test_csv_header_only_is_empty(tmp_path: Path) -> None:
    """A CSV with a header and no rows has no codes."""
    path = write(tmp_path, "a.csv", "code,expires_at\n")
    assert whole_file_reason(path) == [(1, "empty file: no codes")]


def test_csv_with_bom_and_crlf(tmp_path: Path) -> None:
    """Excel's UTF-8 CSV (BOM, CRLF) is read as written."""
    path = write(tmp_path, "a.csv", b"\xef\xbb\xbfcode,cost\r\nA1,1\r\nA2,2")
    items = [v for v in verdicts(path) if isinstance(v, ParsedLine)]
    assert [(v.line_no, v.secret, v.cost_cents) for v in items] == [(2, "A1", 100), (3, "A2", 200)]


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
