"""The import file parser: one verdict per line, exact reasons, whole-file refusals, streaming."""

from __future__ import annotations

import hashlib
import random
from datetime import datetime
from pathlib import Path

import pytest

from robot.errors import ImportRejected
from robot.importer import (
    BlankLine,
    Format,
    ParsedLine,
    RejectedLine,
    detect_encoding,
    echo,
    encoding_named,
    file_sha256,
    parse_cost,
    parse_expiry,
    parse_file,
    reason_kind,
)
from robot.vault import join_pair


def code(i: int) -> str:
    """A synthetic code: nothing like a real card."""
    return f"TEST-{i:06d}-QZXW"


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def verdicts(path: Path, fmt: Format | None = None) -> list[ParsedLine | BlankLine | RejectedLine]:
    return list(parse_file(path, fmt=fmt))


def blanks(path: Path, fmt: Format | None = None) -> list[int]:
    return [v.line_no for v in verdicts(path, fmt) if isinstance(v, BlankLine)]


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


def test_blank_lines_are_skipped_and_counted_not_rejected(tmp_path: Path) -> None:
    """Empty and whitespace-only lines are blank verdicts (skipped, counted), never rejects;
    line numbers still count them."""
    path = write(tmp_path, "a.txt", f"\n{code(1)}\n\n   \n{code(2)}\n\u3000\n")
    assert rejects(path) == []
    assert blanks(path) == [1, 3, 4, 6]
    assert secrets_of(path) == [(2, code(1)), (5, code(2))]


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
        (2, datetime(2030, 3, 1, 15, 59, 59), 1250),  # valid through 1 March local time
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
        (5, "bad cost: abc"),  # shown as written: it cannot be a code
    ]


def test_csv_wrong_number_of_columns(tmp_path: Path) -> None:
    """A row with more or fewer cells than the header is rejected."""
    path = write(tmp_path, "a.csv", "code,cost\nA1\nA2,1,9\nA3,1\n")
    assert rejects(path) == [(2, "wrong number of columns"), (3, "wrong number of columns")]


def test_csv_blank_rows(tmp_path: Path) -> None:
    """Blank lines (also before the header) and rows of empty cells are skipped; a row without
    its code is missing one."""
    path = write(tmp_path, "a.csv", "\n \ncode,cost\nA1,1\n\n,\n,2\n")
    assert rejects(path) == [(7, "missing code")]
    assert blanks(path) == [1, 2, 5, 6]
    assert secrets_of(path) == [(4, "A1")]


@pytest.mark.parametrize("header", ["code,price", "code,card_no", "cost", "code,code", "卡号,单价",
                                    "卡密,code", "有效期,过期时间,卡密", "密码"])
def test_csv_bad_header_refuses_the_file(tmp_path: Path, header: str) -> None:
    """Unknown, duplicate, conflicting or missing code columns fail the whole file at line 1."""
    path = write(tmp_path, "a.csv", f"{header}\nA1\n")
    [(line, reason)] = whole_file_reason(path)
    assert line == 1
    assert reason.startswith("bad header: ")


# ---------------------------------------------------------------------------- values


@pytest.mark.parametrize(("text", "utc"), [
    ("2030-03-01", datetime(2030, 3, 1, 15, 59, 59)),
    ("2030/3/1", datetime(2030, 3, 1, 15, 59, 59)),
    ("2030-12-31", datetime(2030, 12, 31, 15, 59, 59)),
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


# ---------------------------------------------------------------------------- encodings, headers

CN_ROWS = [("C001", "卡密甲1", "2030-03-01", "29.90"), ("C002", "卡密乙2", "", "")]


def cn_csv(encoding: str, *, bom: bool = False, header: str = "卡号,卡密,有效期,成本") -> bytes:
    text = header + "\r\n" + "".join(",".join(r) + "\r\n" for r in CN_ROWS)
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding)


@pytest.mark.parametrize(("encoding", "bom"), [("utf-8", False), ("utf-8", True), ("gbk", False),
                                               ("gb18030", False)],
                         ids=["utf8", "utf8-bom", "gbk", "gb18030"])
def test_chinese_csv_in_every_supplier_encoding(tmp_path: Path, encoding: str, bom: bool) -> None:
    """A CSV with Chinese headers and Chinese codes reads the same in UTF-8, UTF-8 with a BOM
    and GBK (detected, no option needed)."""
    path = write(tmp_path, "a.csv", cn_csv(encoding, bom=bom))
    items = [v for v in verdicts(path) if isinstance(v, ParsedLine)]
    assert [(v.line_no, v.secret, v.expires_at, v.cost_cents) for v in items] == [
        (2, join_pair("C001", "卡密甲1"), datetime(2030, 3, 1, 15, 59, 59), 2990),
        (3, join_pair("C002", "卡密乙2"), None, None),
    ]
    assert rejects(path) == []


def test_gbk_is_detected_even_far_into_the_file(tmp_path: Path) -> None:
    """A file whose first Chinese character comes after thousands of ASCII lines is GBK."""
    data = "code\n" + "".join(f"{code(i)}\n" for i in range(5000)) + "充值卡-0001\n"
    path = write(tmp_path, "a.csv", data.encode("gbk"))
    assert secrets_of(path)[-1] == (5002, "充值卡-0001")
    assert detect_encoding(path) == "gb18030"


def test_mixed_encodings_refuse_the_odd_lines_not_mangle_them(tmp_path: Path) -> None:
    """A UTF-8 file with one GBK line keeps reading UTF-8 and refuses that line, naming the fix;
    no line is ever decoded into mojibake."""
    data = "code\n充值卡A1\n".encode() + "充值卡A2\n".encode("gbk") + "充值卡A3\n".encode()
    path = write(tmp_path, "a.csv", data)
    assert secrets_of(path) == [(2, "充值卡A1"), (4, "充值卡A3")]
    [(line, reason)] = rejects(path)
    assert line == 3
    assert "--encoding gbk" in reason


def test_forced_encoding(tmp_path: Path) -> None:
    """--encoding gbk reads a GBK file; --encoding utf-8 refuses its lines with the hint."""
    path = write(tmp_path, "a.txt", "充值卡0001\n充值卡0002\n".encode("gbk"))
    assert [s for _, s in [(v.line_no, v.secret) for v in parse_file(path, encoding="gb18030")
                           if isinstance(v, ParsedLine)]] == ["充值卡0001", "充值卡0002"]
    forced = [v for v in parse_file(path, encoding="utf-8") if isinstance(v, RejectedLine)]
    assert [v.line_no for v in forced] == [1, 2]
    assert encoding_named("GBK") == "gb18030" and encoding_named("utf-8-sig") == "utf-8"
    with pytest.raises(ValueError):
        encoding_named("latin-1")


def test_utf8_cut_inside_a_character_is_not_taken_for_gbk(tmp_path: Path) -> None:
    """A UTF-8 file cut in the middle of a character (which happens to read as GBK) stays
    UTF-8, so its last line is refused rather than imported as mojibake."""
    data = ("code\n" + "卡密-0001\n" + "0002-卡密").encode()[:-2]
    path = write(tmp_path, "a.csv", data)
    assert detect_encoding(path) == "utf-8"
    assert rejects(path) == [(3, "not valid UTF-8: the line ends inside a character (file cut "
                                 "short?)")]


@pytest.mark.parametrize(("header", "expected"), [
    ("卡号,密码", [(2, join_pair("C1", "P1"))]),
    ("卡号,卡密", [(2, join_pair("C1", "P1"))]),
    ("卡密,成本", [(2, "C1")]),  # 卡密 alone is the code; the second column is a cost
    (" 卡号 ,\u3000密码", [(2, join_pair("C1", "P1"))]),
])
def test_chinese_headers(tmp_path: Path, header: str, expected: list[tuple[int, str]]) -> None:
    """卡号/密码/卡密/有效期/过期时间/成本/进价 name the usual columns; 卡密 without 卡号 is the
    whole code."""
    second = "P1" if "成本" not in header else "1"
    path = write(tmp_path, "a.csv", f"{header}\nC1,{second}\n")
    assert secrets_of(path) == expected


def test_chinese_expiry_and_cost_aliases(tmp_path: Path) -> None:
    """过期时间 and 进价 are expires_at and cost."""
    path = write(tmp_path, "a.csv", "卡密,过期时间,进价\nK1,2030-03-01 08:30,¥12.5\n")
    [item] = [v for v in verdicts(path) if isinstance(v, ParsedLine)]
    assert (item.secret, item.expires_at, item.cost_cents) == ("K1", datetime(2030, 3, 1, 0, 30),
                                                               1250)


@pytest.mark.parametrize(("text", "utc"), [
    ("2030年3月1日", datetime(2030, 3, 1, 15, 59, 59)),
    ("2030年03月01日 08:30", datetime(2030, 3, 1, 0, 30)),
    ("2030.3.1", datetime(2030, 3, 1, 15, 59, 59)),
    ("20300301", datetime(2030, 3, 1, 15, 59, 59)),
])
def test_chinese_date_forms(text: str, utc: datetime) -> None:
    """Dates as Chinese suppliers write them read like YYYY-MM-DD."""
    assert parse_expiry(text) == utc


def test_permanent_means_no_expiry(tmp_path: Path) -> None:
    """永久 / 长期 in the expiry column mean the code does not expire."""
    path = write(tmp_path, "a.csv", "code,有效期\nA1,永久\nA2,长期有效\n")
    assert [(v.line_no, v.expires_at) for v in verdicts(path) if isinstance(v, ParsedLine)] == [
        (2, None), (3, None)]


def test_bad_values_are_shown_as_written_codes_masked(tmp_path: Path) -> None:
    """A bad date or cost is shown as the merchant wrote it; a value that could be a code
    (a column mix-up) is masked."""
    path = write(tmp_path, "a.csv",
                 "code,expires_at,cost\n"
                 "A1,明天,1\n"
                 "A2,2030-02-30,1\n"
                 "A3,soon,1\n"
                 "A4,2030-01-01,十元\n"
                 f"A5,{code(77)},1\n"
                 f"A6,2030-01-01,{code(78)}\n")
    assert rejects(path) == [
        (2, "bad date: 明天"), (3, "bad date: 2030-02-30"), (4, "bad date: soon"),
        (5, "bad cost: 十元"), (6, "bad date: TE****XW"), (7, "bad cost: TE****XW"),
    ]


def test_reason_kinds() -> None:
    """A reason's kind drops its particulars (for the summary by reason)."""
    assert reason_kind("bad date: 2030-02-30") == "bad date"
    assert reason_kind("duplicate in pool (batch 1 line 3)") == "duplicate in pool"
    assert reason_kind("too long (max 512 characters)") == "too long"
    assert reason_kind("control character") == "control character"


@pytest.mark.parametrize(("value", "shown"), [
    ("2030-02-30", "2030-02-30"), ("2030年2月30日", "2030年2月30日"), ("20300230", "20300230"),
    ("30/02/2030 25:00", "30/02/2030 25:00"), ("soon", "soon"), ("明天", "明天"),
    ("永久有效期", "永久有效期"), ("¥1,234.567", "¥1,234.567"),
    ("TEST-000099-QZXW", "TE****XW"), ("ABCDEFGHJKLM", "AB****LM"),
    ("充值卡0001", "充值****01"), ("1234-5678-9012-3456", "12****56"),
    ("123456789012", "12****12"), ("tomorrow", "to****ow"),
])
def test_echo_shows_dates_and_costs_masks_what_could_be_a_code(value: str, shown: str) -> None:
    """Bad dates and costs are shown as written; anything that could be a code (letters,
    long digit runs, card numbers with dashes, codes with Chinese characters) is masked."""
    assert echo(value) == shown
