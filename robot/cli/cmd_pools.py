"""``robot pools …`` and ``robot codes …``: create pools, import codes, see, void and move
stock.

Commands touch only ``ctx.obj.engine``, ``ctx.obj.vault`` and ``ctx.obj.console`` (so tests
can pass any object with those). Codes are shown masked; no command here ever prints a
plaintext code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from robot import pools as pool_ops
from robot.cli.common import actor, emit_json, is_terminal, json_option, print_table
from robot.clock import utcnow
from robot.display import with_yuan, zone_name
from robot.display import yuan as _yuan
from robot.errors import ImportRejected, UserError
from robot.importer import ENCODING_NAMES, FORMATS, Encoding, Format, encoding_named, parse_cost

# Files of more lines than this show a progress bar (on a terminal).
PROGRESS_FROM_LINES = 5000


def _count_lines(path: Path, fmt: str | None, sheet: str | None) -> int | None:
    """Lines in the file (the progress bar's total): rows a workbook declares, else line
    breaks counted in blocks."""
    if fmt == "xlsx" or (fmt is None and path.suffix.lower() in (".xlsx", ".xlsm")):
        from robot.spreadsheet import declared_rows

        return declared_rows(path, sheet)
    count = 0
    last = b"\n"
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


@click.group("pools")
def pools() -> None:
    """Code pools: create them, import codes, see their stock."""


@pools.command("create")
@click.argument("name")
@click.option("--low-stock", type=click.IntRange(min=0), default=None,
              help="Alert when available codes fall to this many.")
@json_option
@click.pass_context
def pools_create(ctx: click.Context, name: str, low_stock: int | None, as_json: bool) -> None:
    """Create the pool NAME (lower-case letters, digits, '.', '_', '-')."""
    app = ctx.obj
    pid = pool_ops.create_pool(app.engine, name, low_stock, actor=actor())
    if as_json:
        emit_json({"pool": name, "id": pid, "low_stock": low_stock})
    else:
        app.console.print(f"created pool [bold]{name}[/bold] (id {pid})")


@pools.command("list")
@json_option
@click.pass_context
def pools_list(ctx: click.Context, as_json: bool) -> None:
    """Every pool with its codes counted by state."""
    app = ctx.obj
    stats = pool_ops.pool_stats(app.engine, utcnow())
    if as_json:
        emit_json([s.as_dict() for s in stats])
        return
    if not stats:
        app.console.print("no pools yet: create one with `robot pools create NAME`")
        return
    rows = [
        [s.name, f"[red]{s.available}[/red]" if s.is_low else s.available, s.reserved,
         s.delivered, s.review, s.defective, s.void, s.expired, s.expiring_7d, s.low_stock]
        for s in stats
    ]
    print_table(app, "Pools", ["pool", "available", "reserved", "delivered", "review",
                               "defective", "void", "expired", "expiring ≤7d",
                               "low-stock threshold"], rows)


@pools.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every line; change nothing.")
@click.option("--supplier", default=None, help="Who supplied this batch.")
@click.option("--cost", "cost", default=None, metavar="YUAN",
              help="Cost per code in yuan (a CSV 'cost' column overrides it).")
@click.option("--allow-same-file", is_flag=True,
              help="Check a file already imported into this pool again, line by line.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="File format (default: from the extension).")
@click.option("--encoding", "encoding_name", type=click.Choice(sorted(ENCODING_NAMES),
                                                               case_sensitive=False),
              default=None, help="Text encoding of a .txt/.csv file (default: detected, UTF-8 "
                                 "or GBK).")
@click.option("--sheet", default=None, metavar="NAME",
              help="Sheet of an .xlsx workbook (default: the first).")
@json_option
@click.pass_context
def pools_import(ctx: click.Context, name: str, file: Path, dry_run: bool, supplier: str | None,
                 cost: str | None, allow_same_file: bool, fmt: Format | None,
                 encoding_name: str | None, sheet: str | None, as_json: bool) -> None:
    """Import the codes in FILE into pool NAME: every line, or nothing.

    FILE is .txt (one code per line), .csv or .xlsx (header: code, or card_no and password;
    optional expires_at, cost; or the Chinese 卡号, 密码/卡密, 有效期/过期时间, 成本/进价).
    Blank lines are skipped. Every rejected line is listed as "line N: reason" (for a
    workbook, N is the row), then a summary.
    """
    app = ctx.obj
    encoding: Encoding | None = None if encoding_name is None else encoding_named(encoding_name)
    cost_cents = None
    if cost is not None:
        try:
            cost_cents = parse_cost(cost)
        except ValueError:
            raise click.BadParameter("give yuan with at most two decimals, e.g. 12.50",
                                     param_hint="--cost") from None
    kwargs: dict[str, Any] = {
        "actor": actor(), "supplier": supplier, "cost_cents": cost_cents,
        "fmt": fmt, "encoding": encoding, "sheet": sheet, "dry_run": dry_run,
        "allow_same_file": allow_same_file, "zone": app.zone,
    }
    total = _count_lines(file, fmt, sheet) if is_terminal() and not as_json else None
    try:
        if total is not None and total > PROGRESS_FROM_LINES:
            with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("lines"), TimeElapsedColumn(), console=app.console,
                          transient=True) as bar:
                task = bar.add_task("import", total=total)
                report = pool_ops.import_codes(
                    app.engine, app.vault, name, file,
                    progress=lambda n: bar.update(task, completed=n), **kwargs)
        else:
            report = pool_ops.import_codes(app.engine, app.vault, name, file, **kwargs)
    except ImportRejected as exc:
        if as_json:
            data: dict[str, Any] = {
                "pool": name, "file": file.name, "imported": 0, "dry_run": dry_run,
                "rejected": [{"line": n, "reason": r} for n, r in exc.rejects]}
            if exc.summary is not None:
                data["summary"] = exc.summary
            emit_json(data)
        for line_no, reason in exc.rejects:
            click.echo(f"line {line_no}: {reason}", err=True)
        if exc.summary is not None:
            click.echo(_summary_line(exc.summary), err=True)
        raise
    summary = report.as_dict()["summary"]
    if as_json:
        emit_json(report.as_dict())
    elif report.dry_run:
        app.console.print(f"dry run: {report.imported} code(s) from {report.lines} line(s) would "
                          f"be imported into pool [bold]{name}[/bold]; nothing was changed")
        app.console.print(_summary_line(summary), markup=False, highlight=False)
    else:
        app.console.print(f"imported {report.imported} code(s) into pool [bold]{name}[/bold] "
                          f"(batch {report.batch_id}, sha256 {report.sha256[:12]}…)")
        app.console.print(_summary_line(summary), markup=False, highlight=False)


def _text_of(text: str | None, file: Path | None, option: str) -> str | None:
    """The value of a ``--x`` / ``--x-file`` option pair (None: neither given)."""
    if text is not None and file is not None:
        raise click.UsageError(f"give {option} or {option}-file, not both")
    if file is None:
        return text
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise click.BadParameter("not UTF-8 text", param_hint=f"{option}-file") from None


@pools.command("page")
@click.argument("name")
@click.option("--instructions-zh", default=None, metavar="TEXT",
              help="使用说明 in Chinese, plain text ('' clears).")
@click.option("--instructions-zh-file", type=click.Path(exists=True, dir_okay=False,
                                                        path_type=Path),
              default=None, help="Read the Chinese instructions from a UTF-8 text file.")
@click.option("--instructions-en", default=None, metavar="TEXT",
              help="Usage instructions in English, plain text ('' clears).")
@click.option("--instructions-en-file", type=click.Path(exists=True, dir_okay=False,
                                                        path_type=Path),
              default=None, help="Read the English instructions from a UTF-8 text file.")
@click.option("--redeem-url", default=None, metavar="TEMPLATE",
              help="Redemption link: https://…?code={code}, or the site's redemption page "
                   "without {code} (the page copies the code, then opens it); '' clears.")
@json_option
@click.pass_context
def pools_page(ctx: click.Context, name: str, instructions_zh: str | None,
               instructions_zh_file: Path | None, instructions_en: str | None,
               instructions_en_file: Path | None, redeem_url: str | None,
               as_json: bool) -> None:
    """Show or set what the pickup page shows with pool NAME's codes: usage instructions
    (Chinese and English; line breaks kept) and a "去兑换 / Redeem" link per revealed code."""
    from robot import poolpage

    app = ctx.obj
    changes = {
        "instructions_zh": _text_of(instructions_zh, instructions_zh_file, "--instructions-zh"),
        "instructions_en": _text_of(instructions_en, instructions_en_file, "--instructions-en"),
        "redeem_url": redeem_url,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes:
        poolpage.set_page(app.engine, app.vault, name, changes, actor=actor())
    page, sealed = poolpage.show(app.engine, app.vault, name)
    if as_json:
        emit_json({"pool": name, **page.as_dict(), "sealed": sealed})
        return
    for key, value in page.as_dict().items():
        shown = "(not set)" if value is None else value
        app.console.print(f"{key.replace('_', ' ')}:", style="bold", highlight=False)
        app.console.print(f"  {shown}".replace("\n", "\n  "), markup=False, highlight=False)
    if not sealed:
        app.console.print("NOT SHOWN on the pickup page: these settings were changed in the "
                          "database, not with this command; check them and set them again",
                          style="red", markup=False, highlight=False)
    if changes:
        app.console.print(f"pool {name}: updated {', '.join(sorted(changes))}",
                          markup=False, highlight=False)


def _summary_line(summary: dict[str, Any]) -> str:
    """``summary: 120 accepted, 3 blank line(s) skipped, 2 rejected (bad date 1, …)``."""
    line = (f"summary: {summary['accepted']} accepted, {summary['skipped_blank']} blank "
            f"line(s) skipped, {summary['rejected']} rejected")
    by_reason = summary["rejected_by_reason"]
    if by_reason:
        line += " (" + ", ".join(f"{k} {n}" for k, n in by_reason.items()) + ")"
    return line


@click.group("codes")
def codes() -> None:
    """Individual codes of a pool (always shown masked)."""


@codes.command("list")
@click.argument("pool")
@click.option("--state", type=click.Choice(list(pool_ops.CODE_STATES)), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@click.pass_context
def codes_list(ctx: click.Context, pool: str, state: str | None, limit: int,
               as_json: bool) -> None:
    """The newest codes of POOL, masked."""
    app = ctx.obj
    rows = pool_ops.list_codes(app.engine, app.vault, pool, state=state, limit=limit)
    if as_json:
        emit_json(with_yuan([r.as_dict() for r in rows]), app.zone)
        return
    print_table(app, f"Codes in {pool}", ["id", "code", "state", "batch", "line",
                                          f"expires ({zone_name(app.zone)})", "cost"],
                [[r.id, r.masked, r.state, r.batch_id, r.source_line, app.time(r.expires_at),
                  _yuan(r.cost_cents)] for r in rows])


@codes.command("void")
@click.argument("code_ids", nargs=-1, required=True, type=click.IntRange(min=1))
@json_option
@click.pass_context
def codes_void(ctx: click.Context, code_ids: tuple[int, ...], as_json: bool) -> None:
    """Withdraw unsold codes by id; codes already reserved or sold are refused."""
    app = ctx.obj
    report = pool_ops.void_codes(app.engine, code_ids, actor=actor())
    if as_json:
        emit_json(report.as_dict())
    else:
        if report.voided:
            app.console.print(f"voided {len(report.voided)} code(s): "
                              + ", ".join(str(c) for c in report.voided))
        for cid, reason in report.refused:
            click.echo(f"code {cid}: not voided: {reason}", err=True)
    if report.refused:
        raise UserError(f"{len(report.refused)} code(s) were not voided")


@codes.command("export")
@click.argument("pool")
@click.option("--state", type=click.Choice(list(pool_ops.CODE_STATES)), default=None,
              help="Only codes in this state (default: every state).")
@click.option("--since", "since_text", default=None, metavar="WHEN",
              help="Only codes delivered (for --state delivered), reserved, or else imported "
                   "since: 7d, 24h, 2w, or a date such as 2026-11-01 (midnight in the "
                   "robot's timezone).")
@click.option("--csv", "csv_path", required=True,
              type=click.Path(path_type=Path, dir_okay=False), help="The CSV file to write.")
@click.option("--plaintext", is_flag=True,
              help="Write the codes in plain text (audited; the file is made mode 0600).")
@click.option("--yes", is_flag=True, help="Do not ask before a plaintext export.")
@json_option
@click.pass_context
def codes_export(ctx: click.Context, pool: str, state: str | None, since_text: str | None,
                 csv_path: Path, plaintext: bool, yes: bool, as_json: bool) -> None:
    """Write POOL's codes to a CSV file to reconcile with the supplier: id, code (masked
    unless --plaintext), state, batch, line, supplier, cost (yuan), expiry, order and
    delivery time."""
    from robot.export import count_codes, export_codes
    from robot.report import parse_since

    app = ctx.obj
    since = None if since_text is None else parse_since(since_text, utcnow(), app.zone)
    if plaintext and not yes:
        n = count_codes(app.engine, pool, state=state, since=since)
        click.confirm(f"Write {n} code(s) of pool {pool} in PLAIN TEXT to {csv_path}? "
                      "This is audited", abort=True, err=True)
    result = export_codes(app.engine, app.vault, pool, csv_path, actor=actor(), state=state,
                          since=since, plaintext=plaintext, zone=app.zone)
    if as_json:
        emit_json(result.as_dict(), app.zone)
        return
    how = "in plain text (mode 0600; this was audited)" if plaintext else "masked"
    click.echo(f"wrote {result.rows} code(s) of pool {pool} to {csv_path}, {how}", err=True)


@codes.command("move")
@click.argument("code_ids", nargs=-1, type=click.IntRange(min=1))
@click.option("--to", "to_pool", required=True, help="The pool the codes go to.")
@click.option("--batch", "batch_id", type=click.IntRange(min=1), default=None,
              help="Move every available code of this batch (with --from).")
@click.option("--from", "from_pool", default=None,
              help="The pool the batch's codes are in now (with --batch).")
@json_option
@click.pass_context
def codes_move(ctx: click.Context, code_ids: tuple[int, ...], to_pool: str,
               batch_id: int | None, from_pool: str | None, as_json: bool) -> None:
    """Move available codes to another pool: by id (CODE_IDS), or a whole batch
    (--from POOL --batch B). One code is in one pool; this is how it changes pools.

    Codes reserved, sold, void or expired are refused; each move is re-encrypted for the
    new pool and audited.
    """
    app = ctx.obj
    if (batch_id is None) != (from_pool is None):
        raise click.UsageError("--batch and --from go together")
    if batch_id is None and not code_ids:
        raise click.UsageError("name the codes to move (CODE_IDS) or --from POOL --batch B")
    if batch_id is not None and code_ids:
        raise click.UsageError("give either CODE_IDS or --from/--batch, not both")
    wanted = list(code_ids)
    if batch_id is not None and from_pool is not None:
        wanted = pool_ops.available_in_batch(app.engine, batch_id, from_pool)
        if not wanted:
            raise UserError(f"batch {batch_id} has no available codes in pool '{from_pool}'")
    report = pool_ops.move_codes(app.engine, app.vault, wanted, to_pool, actor=actor())
    if as_json:
        emit_json(report.as_dict())
    else:
        if report.moved:
            app.console.print(f"moved {len(report.moved)} code(s) to pool "
                              f"[bold]{to_pool}[/bold]: "
                              + ", ".join(str(c) for c in report.moved[:50])
                              + (" …" if len(report.moved) > 50 else ""))
        for cid, reason in report.refused:
            click.echo(f"code {cid}: not moved: {reason}", err=True)
    if report.refused:
        raise UserError(f"{len(report.refused)} code(s) were not moved")


COMMANDS: list[click.Command] = [pools, codes]
