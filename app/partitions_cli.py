"""`dbfleet partitions plan|apply`: the same plan and apply as the API, from a terminal."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

partitions_app = typer.Typer(help="Partition maintenance: plan (dry run) and apply.", no_args_is_help=True)
console = Console()


async def _instances(session, names: list[str] | None):
    from app.models import Instance

    stmt = select(Instance).where(Instance.enabled.is_(True), Instance.gone_at.is_(None)).order_by(Instance.name)
    if names:
        stmt = stmt.where(Instance.name.in_(names))
    return list((await session.execute(stmt)).scalars())


def _go(names, table, apply: bool, as_json: bool) -> None:
    from app.cli import _run, _settings, _store
    from app.partitions import ENGINES, apply_for, outcome_json, plan_for, statement_json
    from collectors.registry import ENGINE_FAMILY

    settings = _settings()

    async def go() -> dict[str, list[dict]]:
        store = await _store(settings)
        out: dict[str, list[dict]] = {}
        try:
            async with store.sessions() as session, session.begin():
                for inst in await _instances(session, names):
                    if ENGINE_FAMILY.get(inst.engine) not in ENGINES and not names:
                        continue
                    try:
                        if apply:
                            out[inst.name] = [outcome_json(o) for o in await apply_for(session, settings, inst, "cli", table)]
                        else:
                            out[inst.name] = [statement_json(s) for s in await plan_for(settings, inst, table)]
                    except Exception as e:  # noqa: BLE001 - report per instance and go on
                        out[inst.name] = [{"error": str(e)}]
        finally:
            await store.dispose()
        return out

    result = _run(go())
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table_out = Table(title="partition maintenance " + ("applied" if apply else "plan (dry run)"))
    for col in ("instance", "action", "partition", "status" if apply else "why", "sql"):
        table_out.add_column(col, overflow="fold")
    for name, rows in result.items():
        for r in rows:
            if "error" in r:
                table_out.add_row(name, "[red]error[/red]", "", r["error"], "")
            else:
                table_out.add_row(name, r["action"], r["partition"], r.get("status") or r["why"], r["sql"])
    console.print(table_out)


@partitions_app.command("plan")
def plan(instance: Annotated[Optional[list[str]], typer.Option(help="instance name (repeatable)")] = None,
         table: Annotated[Optional[str], typer.Option(help="schema.table")] = None,
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show the exact DDL the policies call for; changes nothing."""
    _go(instance, table, apply=False, as_json=as_json)


@partitions_app.command("apply")
def apply(instance: Annotated[Optional[list[str]], typer.Option(help="instance name (repeatable)")] = None,
          table: Annotated[Optional[str], typer.Option(help="schema.table")] = None,
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Run the plan: one statement per transaction, lock_timeout set, an audit row for each."""
    _go(instance, table, apply=True, as_json=as_json)
