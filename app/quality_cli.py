"""`dbfleet checks run|import-dbt|list`: data quality checks from a terminal, as dbt runs them.

`run` exits 1 when a check errors (error_after crossed, a critical assertion, a floor) or could not
run, so a pipeline can gate on it; `--warn-error` fails on warnings too (dbt's flag).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

checks_app = typer.Typer(help="Data quality checks: freshness, volume, completeness, assertions, schema.",
                         no_args_is_help=True)
console = Console()
err = Console(stderr=True)
STATE_STYLE = {"pass": "green", "warn": "yellow", "error": "bold red", "failed": "bold red", "no_tables": "dim"}


async def _run_checks(settings, select: list[str], instances: list[str]):
    from app.cli import _store
    from app.quality.refusals import sync_config
    from app.quality.runner import QualityRunner

    store = await _store(settings)
    runner = QualityRunner(store, settings)
    try:
        problems = await sync_config(store, settings)
        return problems, await runner.run(select or None, instances=instances or None)
    finally:
        await runner.close()
        await store.dispose()


@checks_app.command("run")
def run(select: Annotated[Optional[list[str]], typer.Option(
            "--select", "-s", help="check name or glob, kind:<kind>, source:<name>, label:<k>=<v> (repeatable)")] = None,
        instance: Annotated[Optional[list[str]], typer.Option("--instance", help="only these instances")] = None,
        warn_error: Annotated[bool, typer.Option("--warn-error", help="warnings fail the run too")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Run checks now; exit 1 when any fails (as `dbt source freshness` does)."""
    from app.cli import _run, _settings

    settings = _settings(checked=True)
    problems, summary = _run(_run_checks(settings, list(select or []), list(instance or [])))
    for p in problems:
        err.print(f"[yellow]config:[/yellow] {escape(p)}")
    if as_json:
        console.print_json(json.dumps([o.__dict__ for o in summary.outcomes], default=str))
    else:
        table = Table("check", "kind", "instance", "object", "state", "value", "detail")
        for o in sorted(summary.outcomes, key=lambda o: (o.check, o.instance, o.object)):
            style = STATE_STYLE.get(o.state, "")
            table.add_row(o.check, o.kind, o.instance, o.object, f"[{style}]{o.state}[/{style}]",
                          "" if o.value is None else f"{o.value:g}", escape(o.title))
        console.print(table)
    failed = summary.failures(warn_error)
    if not summary.outcomes:
        err.print("no check ran: none stored or selected, or no instance in their scope")
    elif failed:
        err.print(f"[red]{len(failed)} of {len(summary.outcomes)} failed[/red]")
        raise typer.Exit(1)


async def _import(settings, text: str, mapping: dict[str, str], dry_run: bool):
    from app.cli import _store
    from app.quality.dbt import load_dbt_file
    from app.quality.definitions import parse_definitions
    from app.quality.refusals import Defined, define_checks

    raw, problems = load_dbt_file(text, mapping)
    checks, invalid = parse_definitions(raw, where="imported")
    problems += invalid
    if problems or dry_run:
        return raw, problems, Defined()
    store = await _store(settings)
    try:
        return raw, problems, await define_checks(store, settings, checks, "dbt", "dbt import")
    finally:
        await store.dispose()


@checks_app.command("import-dbt")
def import_dbt(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="dbt sources.yml / models yml")],
               map_: Annotated[list[str], typer.Option("--map", help="SOURCE_OR_DB.SCHEMA=INSTANCE (repeatable)")],
               dry_run: Annotated[bool, typer.Option("--dry-run", help="print the checks, store nothing")] = False
               ) -> None:
    """Turn dbt source freshness (and models with freshness) into dbfleet checks, all or nothing."""
    import yaml

    from app.cli import _run, _settings
    from app.quality.dbt import parse_mapping

    try:
        mapping = parse_mapping(map_)
    except ValueError as e:
        err.print(f"[red]{escape(str(e))}[/red]")
        raise typer.Exit(2) from None
    raw, problems, defined = _run(_import(_settings(), path.read_text(), mapping, dry_run))
    if problems or defined.refused:
        for p in problems + defined.refused:
            err.print(f"[red]{escape(p)}[/red]")
        err.print("nothing was imported")
        raise typer.Exit(1)
    if dry_run:
        console.print(yaml.safe_dump({"checks": raw}, sort_keys=False), markup=False)
        return
    for u in defined.unverified:
        err.print(f"[yellow]not verified (unreachable):[/yellow] {escape(u)}")
    console.print(f"imported {len(defined.saved)} checks: {', '.join(defined.saved)}")


async def _list(settings):
    from app.cli import _store

    store = await _store(settings)
    try:
        async with store.raw() as conn:
            return await conn.fetch("select name, kind, origin, definition from quality_checks order by name")
    finally:
        await store.dispose()


@checks_app.command("list")
def list_checks() -> None:
    """The stored checks."""
    from app.cli import _run, _settings

    table = Table("name", "kind", "origin", "instances", "tables", "every")
    for r in _run(_list(_settings())):
        d = r["definition"]
        table.add_row(r["name"], r["kind"], r["origin"], ", ".join(d.get("instances") or ["*"]),
                      ", ".join(d.get("tables") or []), f"{d['every']['count']} {d['every']['period']}")
    console.print(table)
