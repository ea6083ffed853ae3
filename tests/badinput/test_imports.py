"""Bad import files: each refusal names the line (and why), and a refused import changes nothing.

An import is whole or nothing (robot.pools): one bad line refuses the file, every bad line is
reported as ``(line number, reason)``, and the database is left exactly as it was — no code,
no stock, no batch row, no audit entry (:func:`tests.badinput.snapshot.snapshot` before and
after is one assertion). Files a person would call good (a BOM, Windows line ends, no final
newline) import exactly the codes they show. Every database backend runs every test.
"""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from robot import pools as P
from robot.cli.common import EXIT_USER, App
from robot.clock import DEFAULT_ZONE
from robot.errors import ImportRejected, UserError
from robot.importer import MAX_CHARS, ParsedLine, RejectedLine, parse_file
from robot.schema import codes
from robot.vault import Vault
from tests.badinput.cli import run, use_app
from tests.badinput.snapshot import snapshot
from tests.test_importer import code, write

ACTOR = "test:badinput"
POOL = "game-card"
TOO_LONG = f"too long (max {MAX_CHARS} characters)"


def lines(*secrets: str) -> str:
    return "".join(f"{s}\n" for s in secrets)


@pytest.fixture
def pool(engine: Engine, vault: Vault, tmp_path: Path) -> str:
    """A pool that already holds three codes from an earlier import (batch 1)."""
    P.create_pool(engine, POOL, actor=ACTOR)
    P.import_codes(engine, vault, POOL, write(tmp_path, "first.txt", lines(*map(code, (1, 2, 3)))),
                   actor=ACTOR)
    return POOL


def refused(engine: Engine, vault: Vault, path: Path) -> list[tuple[int, str]]:
    """Import ``path``; it must be refused and leave every table as it was. The rejects."""
    before = snapshot(engine)
    with pytest.raises(ImportRejected) as info:
        P.import_codes(engine, vault, POOL, path, actor=ACTOR, chunk=2)
    assert snapshot(engine) == before
    return info.value.rejects


def imported(engine: Engine, vault: Vault, path: Path) -> list[str]:
    """Import ``path`` (it must succeed); the plaintexts of the codes it added, in file order."""
    report = P.import_codes(engine, vault, POOL, path, actor=ACTOR)
    with engine.connect() as conn:
        rows = conn.execute(select(codes).where(codes.c.batch_id == report.batch_id)
                            .order_by(codes.c.source_line)).all()
    assert report.imported == len(rows)
    return [vault.decrypt(r.key_id, bytes(r.ciphertext), code_id=r.id, pool_id=r.pool_id,
                          fingerprint=bytes(r.fingerprint), aad_version=r.aad_version)
            for r in rows]


# -- encoding --------------------------------------------------------------------------------


def test_gbk_file_is_imported_as_gbk(engine: Engine, vault: Vault, pool: str,
                                     tmp_path: Path) -> None:
    """A GBK export (Chinese Windows) is detected and imported with its Chinese codes exact."""
    secrets = [f"充值卡{i:04d}" for i in range(300)]
    path = write(tmp_path, "gbk.txt", "".join(f"{s}\n" for s in secrets).encode("gbk"))
    assert imported(engine, vault, path) == secrets


def test_one_gbk_line_is_reported_alone(engine: Engine, vault: Vault, pool: str,
                                        tmp_path: Path) -> None:
    """One legacy-encoded line among UTF-8 Chinese ones is the only line reported, with the
    fix named; it is never imported as mojibake."""
    data = "卡密-0011\n".encode() + "卡密ABC\n".encode("gbk") + "卡密-0013\n".encode()
    assert refused(engine, vault, write(tmp_path, "a.txt", data)) == [
        (2, "not valid UTF-8 (it reads as GBK/GB18030 but other lines are UTF-8: save the file "
            "in one encoding, or give --encoding gbk)")]


def test_bytes_that_are_no_encoding_at_all(engine: Engine, vault: Vault, pool: str,
                                           tmp_path: Path) -> None:
    """A line that is neither UTF-8 nor GBK is plainly "not valid UTF-8"."""
    data = lines(code(11)).encode() + b"\xc3\x28\xff\n"
    assert refused(engine, vault, write(tmp_path, "a.txt", data)) == [(2, "not valid UTF-8")]


def test_utf16_file_is_refused_with_advice(engine: Engine, vault: Vault, pool: str,
                                           tmp_path: Path) -> None:
    """A UTF-16 export (Excel "Unicode text") is refused whole, the fix named."""
    path = write(tmp_path, "a.txt", lines(code(11)).encode("utf-16"))
    assert refused(engine, vault, path) == [
        (1, "not valid UTF-8 (the file is UTF-16: save it as UTF-8)")]


# -- BOM and line ends (accepted) ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("bom.txt", b"\xef\xbb\xbf" + lines(code(11), code(12)).encode(), [code(11), code(12)]),
    ("bom.csv", b"\xef\xbb\xbfcode,cost\n" + f"{code(11)},1\n".encode(), [code(11)]),
], ids=["txt", "csv-header"])
def test_utf8_bom_is_not_part_of_the_first_code(engine: Engine, vault: Vault, pool: str,
                                                tmp_path: Path, name: str, data: bytes,
                                                expected: list[str]) -> None:
    """A UTF-8 byte-order mark is accepted and is not part of the first code (or header)."""
    assert imported(engine, vault, write(tmp_path, name, data)) == expected


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("crlf.txt", f"{code(11)}\r\n {code(12)} \r\n{code(13)}\r\n", [code(11), code(12), code(13)]),
    ("crlf.csv", f"code,cost\r\n{code(11)},1\r\n{code(12)},2\r\n", [code(11), code(12)]),
    ("excel.csv", f"\ufeffcode,cost\r\n{code(11)},1\r\n{code(12)},2", [code(11), code(12)]),
], ids=["txt", "csv", "excel-bom-crlf-no-final-newline"])
def test_crlf_line_ends_leave_no_carriage_return(engine: Engine, vault: Vault, pool: str,
                                                 tmp_path: Path, name: str, data: str,
                                                 expected: list[str]) -> None:
    """Windows line ends are accepted and no code keeps a carriage return."""
    got = imported(engine, vault, write(tmp_path, name, data))
    assert got == expected
    assert not any("\r" in c or "\ufeff" in c for c in got)


# -- huge lines ------------------------------------------------------------------------------------


def test_huge_line_is_refused_with_its_number(engine: Engine, vault: Vault, pool: str,
                                              tmp_path: Path) -> None:
    """A megabyte-long line is one reject at its own number; later lines keep their numbers."""
    data = lines(code(11), "y" * 1_000_000, code(13), "z" * (MAX_CHARS + 1))
    assert refused(engine, vault, write(tmp_path, "a.txt", data)) == [(2, TOO_LONG), (4, TOO_LONG)]


def test_line_of_max_length_passes_and_one_more_does_not(engine: Engine, vault: Vault, pool: str,
                                                         tmp_path: Path) -> None:
    """512 characters (even 3-byte ones) are a code; 513 are too long."""
    longest = "码" * MAX_CHARS
    assert imported(engine, vault, write(tmp_path, "ok.txt", lines(longest))) == [longest]
    data = lines(code(11), "x" * (MAX_CHARS + 1))
    assert refused(engine, vault, write(tmp_path, "a.txt", data)) == [(2, TOO_LONG)]


def test_huge_line_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """A 9 MB file (one 8 MB line, then 50k short ones) is parsed with under 2 MB of memory."""
    path = tmp_path / "big.txt"
    with path.open("wb") as fh:
        fh.write(b"z" * (8 << 20) + b"\n")
        for i in range(50_000):
            fh.write(f"{code(i)}\n".encode())
    tracemalloc.start()
    try:
        verdicts = [(v.line_no, v.reason) for v in parse_file(path) if isinstance(v, RejectedLine)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert verdicts == [(1, TOO_LONG)]
    assert peak < 2 << 20


# -- binary and empty files --------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    random.Random(7).randbytes(8192),  # e.g. an .xlsx renamed to .txt
    bytes(range(256)) * 16,
    b"AB\n" + b"\x00" * 4000,  # mostly NUL
], ids=["random", "all-bytes", "nul-padded"])
def test_binary_file_is_refused_whole(engine: Engine, vault: Vault, pool: str, tmp_path: Path,
                                      data: bytes) -> None:
    """A binary file is refused at line 1 as a whole, with what to do instead."""
    path = write(tmp_path, "codes.txt", data)
    assert refused(engine, vault, path) == [(1, "binary file")]
    with pytest.raises(ImportRejected, match=r"^codes\.txt: binary file \(export the codes as "
                                             r"\.txt, \.csv or \.xlsx\)$"):
        P.import_codes(engine, vault, POOL, path, actor=ACTOR)


@pytest.mark.parametrize(("name", "data"), [
    ("a.txt", b""), ("a.txt", b"\xef\xbb\xbf"), ("a.txt", b"\n\n  \r\n"),
    ("a.csv", b"code,expires_at\n"), ("a.csv", b"code\n,\n\n"),
], ids=["empty", "bom-only", "blank-lines", "csv-header-only", "csv-blank-rows"])
def test_empty_file_is_refused_and_leaves_no_batch(engine: Engine, vault: Vault, pool: str,
                                                   tmp_path: Path, name: str,
                                                   data: bytes) -> None:
    """A file without a single code is refused at line 1; no batch row is left behind."""
    assert refused(engine, vault, write(tmp_path, name, data)) == [(1, "empty file: no codes")]


# -- duplicates --------------------------------------------------------------------------------


def test_duplicates_within_the_file_name_both_lines(engine: Engine, vault: Vault, pool: str,
                                                    tmp_path: Path) -> None:
    """A code repeated in the file is reported at each repeat, naming its first line, across
    chunks (the import runs two lines per chunk here)."""
    data = lines(code(11), code(12), code(11), code(13), code(12), code(11))
    assert refused(engine, vault, write(tmp_path, "a.txt", data)) == [
        (3, "duplicate in file (same as line 1)"),
        (5, "duplicate in file (same as line 2)"),
        (6, "duplicate in file (same as line 1)"),
    ]


def test_duplicates_against_the_pool_name_batch_and_line(engine: Engine, vault: Vault, pool: str,
                                                         tmp_path: Path) -> None:
    """A code already in the pool is reported with the batch and line it came from."""
    data = lines(code(11), code(3), code(12), code(1))
    assert refused(engine, vault, write(tmp_path, "b.txt", data)) == [
        (2, "duplicate in pool (batch 1 line 3)"),
        (4, "duplicate in pool (batch 1 line 1)"),
    ]


def test_same_file_twice_is_refused_by_hash(engine: Engine, vault: Vault, pool: str,
                                            tmp_path: Path) -> None:
    """The very file imported before is refused by its hash, naming the batch; with
    --allow-same-file each line is checked and reported as a duplicate in the pool."""
    path = tmp_path / "first.txt"
    before = snapshot(engine)
    with pytest.raises(UserError, match=r"^this file was already imported into pool 'game-card' "
                                        r"as batch 1 on .* \(Asia/Shanghai\); nothing was "
                                        r"imported") as info:
        P.import_codes(engine, vault, POOL, path, actor=ACTOR)
    assert not isinstance(info.value, ImportRejected)
    assert snapshot(engine) == before
    with pytest.raises(ImportRejected) as again:
        P.import_codes(engine, vault, POOL, path, actor=ACTOR, allow_same_file=True)
    assert again.value.rejects == [(n, f"duplicate in pool (batch 1 line {n})") for n in (1, 2, 3)]
    assert snapshot(engine) == before


# -- bad dates ---------------------------------------------------------------------------------


def test_bad_expiry_dates_are_reported_per_line(engine: Engine, vault: Vault, pool: str,
                                                tmp_path: Path) -> None:
    """Impossible, unreadable and past expiry dates each name their line, shown as written; a
    value that could be a code (a column mix-up) is masked."""
    data = ("code,expires_at\n"
            f"{code(11)},2030-01-01\n"
            f"{code(12)},2030-02-31\n"
            f"{code(13)},soon\n"
            f"{code(14)},2020-05-01\n"
            f"{code(15)},{code(99)}\n"
            f"{code(16)},9999-12-31\n"
            f"{code(17)},\n")
    rejects = refused(engine, vault, write(tmp_path, "a.csv", data))
    assert rejects == [
        (3, "bad date: 2030-02-31"),
        (4, "bad date: soon"),
        (5, "already expired: 2020-05-01"),
        (6, "bad date: TE****XW"),
        (7, "bad date: 9999-12-31"),
    ]
    assert code(99) not in repr(rejects)


# -- truncated files ---------------------------------------------------------------------------


def test_last_line_without_newline_is_imported(engine: Engine, vault: Vault, pool: str,
                                               tmp_path: Path) -> None:
    """A file that stops without a final newline still yields its last code, whole."""
    path = write(tmp_path, "a.txt", f"{code(11)}\n{code(12)}")
    assert imported(engine, vault, path) == [code(11), code(12)]


def test_file_cut_inside_a_character_names_the_last_line(engine: Engine, vault: Vault, pool: str,
                                                         tmp_path: Path) -> None:
    """A file cut in the middle of a multi-byte character is refused at that line, saying so."""
    data = (lines(code(11)) + "0002-卡密").encode()[:-2]  # 密 is three bytes: keep one
    assert refused(engine, vault, write(tmp_path, "a.txt", data)) == [
        (2, "not valid UTF-8: the line ends inside a character (file cut short?)")]


def test_csv_cut_inside_a_quoted_field_names_the_last_line(engine: Engine, vault: Vault,
                                                           pool: str, tmp_path: Path) -> None:
    """A CSV cut inside a quoted field is refused at that line for its quoting."""
    data = f'code,cost\n"{code(11)}",1\n"{code(12)},2'
    assert refused(engine, vault, write(tmp_path, "a.csv", data)) == [(3, "bad CSV quoting")]


def test_parsed_lines_never_show_a_code(tmp_path: Path) -> None:
    """A parsed line in a traceback or log shows no plaintext (the reports above carry none)."""
    [item] = list(parse_file(write(tmp_path, "a.txt", lines(code(11)))))
    assert isinstance(item, ParsedLine)
    assert code(11) not in repr(item)


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def cli(engine: Engine, vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    """`robot` as installed, on the test database and key file."""
    app = App(config_path=tmp_path / "robot.yaml")
    app._engine = engine
    app.zone = DEFAULT_ZONE  # no robot file: its default timezone
    app.__dict__["vault"] = vault
    return use_app(monkeypatch, app)


@pytest.mark.usefixtures("cli")
def test_cli_lists_every_bad_line_and_exits_1(engine: Engine, pool: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`robot pools import` prints "line N: reason" per bad line, a summary and one error
    line, exit 1, no traceback, and changes nothing (the blank line is skipped, not refused)."""
    path = write(tmp_path, "b.txt", lines("卡密-11", "", code(1)).encode() + "卡密\n".encode("gbk"))
    before = snapshot(engine)
    status, out, err = run(monkeypatch, capsys, "pools", "import", POOL, str(path))
    assert (status, out) == (EXIT_USER, "")
    gbk = ("not valid UTF-8 (it reads as GBK/GB18030 but other lines are UTF-8: save the file "
           "in one encoding, or give --encoding gbk)")
    assert err.splitlines() == [
        "line 3: duplicate in pool (batch 1 line 1)",
        f"line 4: {gbk}",
        "summary: 1 accepted, 1 blank line(s) skipped, 2 rejected (duplicate in pool 1, not "
        "valid UTF-8 1)",
        "error: 2 line(s) rejected; nothing was imported",
    ]
    assert code(1) not in err
    status, out, err = run(monkeypatch, capsys, "pools", "import", POOL, str(path), "--json")
    assert status == EXIT_USER
    assert json.loads(out) == {"pool": POOL, "file": "b.txt", "imported": 0, "dry_run": False,
                               "rejected": [{"line": 3, "reason": "duplicate in pool (batch 1 "
                                                                  "line 1)"},
                                            {"line": 4, "reason": gbk}],
                               "summary": {"accepted": 1, "skipped_blank": 1, "rejected": 2,
                                           "rejected_by_reason": {"duplicate in pool": 1,
                                                                  "not valid UTF-8": 1}}}
    assert snapshot(engine) == before


@pytest.mark.usefixtures("cli")
def test_cli_binary_and_empty_files(engine: Engine, pool: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A binary or empty file: line 1 and a one-line error naming the file, exit 1, no change."""
    before = snapshot(engine)
    binary = write(tmp_path, "export.txt", bytes(range(256)) * 16)
    status, out, err = run(monkeypatch, capsys, "pools", "import", POOL, str(binary))
    assert (status, out) == (EXIT_USER, "")
    assert err.splitlines() == [
        "line 1: binary file",
        "error: export.txt: binary file (export the codes as .txt, .csv or .xlsx)",
    ]
    empty = write(tmp_path, "empty.txt", b"")
    status, out, err = run(monkeypatch, capsys, "pools", "import", POOL, str(empty))
    assert (status, out) == (EXIT_USER, "")
    assert err.splitlines() == ["line 1: empty file: no codes",
                                "error: empty.txt: empty file: no codes"]
    assert snapshot(engine) == before
