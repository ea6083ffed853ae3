"""``robot pools …`` and ``robot codes …``: create pools, import codes, see and void stock.

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
from robot.display import with_yuan
from robot.display import yuan as _yuan
from robot.errors import ImportRejected, UserError
from robot.importer import parse_cost


def _count_lines(path: Path) -> int:
    """Lines in the file (for the progress bar's total), read in blocks."""
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
         s.delivered, s.review, s.void, s.expired, s.expiring_7d, s.low_stock]
        for s in stats
    ]
    print_table(app, "Pools", ["pool", "available", "reserved", "delivered", "review", "void",
                          "expired", "expiring ≤7d", "low-stock threshold"], rows)


@pools.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every line; change nothing.")
@click.option("--supplier", default=None, help="Who supplied this batch.")
@click.option("--cost", "cost", default=None, metavar="YUAN",
              help="Cost per code in yuan (a CSV 'cost' column overrides it).")
@click.option("--allow-same-file", is_flag=True,
              help="Check a file already imported into this pool again, line by line.")
@click.option("--format", "fmt", type=click.Choice(["txt", "csv"]), default=None,
              help="File format (default: from the extension).")
@json_option
@click.pass_context
def pools_import(ctx: click.Context, name: str, file: Path, dry_run: bool, supplier: str | None,
                 cost: str | None, allow_same_file: bool, fmt: str | None, as_json: bool) -> None:
    """Import the codes in FILE into pool NAME: every line, or nothing.

    FILE is .txt (one code per line) or .csv (header: code or card_no,password; optional
    expires_at, cost). Every rejected line is listed as "line N: reason".
    """
    app = ctx.obj
    cost_cents = None
    if cost is not None:
        try:
            cost_cents = parse_cost(cost)
        except ValueError:
            raise click.BadParameter("give yuan with at most two decimals, e.g. 12.50",
                                     param_hint="--cost") from None
    kwargs: dict[str, Any] = {
        "actor": actor(), "supplier": supplier, "cost_cents": cost_cents,
        "fmt": fmt, "dry_run": dry_run, "allow_same_file": allow_same_file,
    }
    try:
        if is_terminal() and not as_json:
            with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("lines"), TimeElapsedColumn(), console=app.console,
                          transient=True) as bar:
                task = bar.add_task("import", total=_count_lines(file))
                report = pool_ops.import_codes(
                    app.engine, app.vault, name, file,
                    progress=lambda n: bar.update(task, completed=n), **kwargs)
        else:
            report = pool_ops.import_codes(app.engine, app.vault, name, file, **kwargs)
    except ImportRejected as exc:
        if as_json:
            emit_json({"pool": name, "file": file.name, "imported": 0, "dry_run": dry_run,
                       "rejected": [{"line": n, "reason": r} for n, r in exc.rejects]})
        for line_no, reason in exc.rejects:
            click.echo(f"line {line_no}: {reason}", err=True)
        raise
    if as_json:
        emit_json(report.as_dict())
    elif report.dry_run:
        app.console.print(f"dry run: {report.imported} code(s) from {report.lines} line(s) would "
                          f"be imported into pool [bold]{name}[/bold]; nothing was changed")
    else:
        app.console.print(f"imported {report.imported} code(s) into pool [bold]{name}[/bold] "
                          f"(batch {report.batch_id}, sha256 {report.sha256[:12]}…)")


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
        emit_json(with_yuan([r.as_dict() for r in rows]))
        return
    print_table(app, f"Codes in {pool}", ["id", "code", "state", "batch", "line", "expires (UTC)",
                                     "cost"],
           [[r.id, r.masked, r.state, r.batch_id, r.source_line,
             f"{r.expires_at:%Y-%m-%d %H:%M}" if r.expires_at else "", _yuan(r.cost_cents)]
            for r in rows])


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


COMMANDS: list[click.Command] = [pools, codes]
