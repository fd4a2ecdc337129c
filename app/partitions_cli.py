"""`dbfleet partitions plan|apply`: the same plan and apply as the API, from a terminal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

partitions_app = typer.Typer(help="Partition maintenance: plan (dry run) and apply.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

InstanceOpt = Annotated[Optional[list[str]], typer.Option("--instance", help="instance name (repeatable)")]
TagOpt = Annotated[Optional[list[str]], typer.Option("--tag", help="key=value (repeatable; all must match)")]
AllOpt = Annotated[bool, typer.Option("--all", help="every enabled instance of an engine with partition maintenance")]
TableOpt = Annotated[Optional[str], typer.Option(help="schema.table")]
JsonOpt = Annotated[bool, typer.Option("--json")]


@dataclass
class InstancePlan:
    """One instance's plan, each statement marked by whether a configured policy covers its table."""

    inst: Any
    statements: list[Any] = field(default_factory=list)
    covered: list[bool] = field(default_factory=list)
    error: str = ""

    def to_apply(self) -> list[Any]:
        return [s for s, c in zip(self.statements, self.covered) if c]


def _scope(instance: list[str] | None, tag: list[str] | None, all_: bool, required: bool) -> tuple[list, dict]:
    """The --instance names and --tag selectors; exit 2 when apply is given no scope at all."""
    from app.inventory.store import parse_tag_selectors

    if required and not (instance or tag or all_):
        err.print("[red]say which instances to apply to: --instance NAME, --tag key=value or --all[/red]")
        raise typer.Exit(2)
    if all_ and (instance or tag):
        err.print("[red]--all selects every instance; do not combine it with --instance or --tag[/red]")
        raise typer.Exit(2)
    try:
        return list(instance or []), parse_tag_selectors(tag)
    except ValueError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


async def _instances(session, names: list[str], tags: dict[str, str]) -> list:
    from app.inventory.store import filtered
    from app.models import Instance
    from collectors.registry import maintenance_for

    stmt = select(Instance).where(Instance.enabled.is_(True), Instance.gone_at.is_(None)).order_by(Instance.name)
    if names:
        stmt = stmt.where(Instance.name.in_(names))
    found = list((await session.execute(filtered(stmt, tags=tags))).scalars())
    missing = sorted(set(names) - {i.name for i in found})
    if missing:
        err.print(f"[red]no enabled instance named {', '.join(missing)}[/red]")
        raise typer.Exit(2)
    # Named instances are kept whatever their engine, so that asking for one says why it cannot be done.
    return [i for i in found if names or maintenance_for(i.engine) is not None]


async def _plan(settings, inst, table: str | None) -> InstancePlan:
    from app.partitions import plan_for, policy_covers

    try:
        statements = await plan_for(settings, inst, table)
        covered = policy_covers(settings, inst)
        return InstancePlan(inst, statements, [covered(s) for s in statements])
    except Exception as e:  # noqa: BLE001 - report per instance and go on
        return InstancePlan(inst, error=str(e))


async def _plans(settings, names: list[str], tags: dict[str, str], table: str | None) -> list[InstancePlan]:
    from app.cli import _store

    store = await _store(settings)
    try:
        async with store.sessions() as session:
            return [await _plan(settings, inst, table) for inst in await _instances(session, names, tags)]
    finally:
        await store.dispose()


async def _apply(settings, plans: list[InstancePlan], table: str | None) -> dict[str, list[dict]]:
    """Apply exactly the plan shown (the engine re-checks the catalog before each statement)."""
    from app.cli import _store
    from app.partitions import apply_for, outcome_json

    store = await _store(settings)
    out: dict[str, list[dict]] = {}
    try:
        async with store.sessions() as session, session.begin():
            for p in plans:
                if p.error:
                    out[p.inst.name] = [{"error": p.error}]
                    continue
                try:
                    outcomes = await apply_for(session, settings, p.inst, "cli", table, statements=p.statements)
                    out[p.inst.name] = [outcome_json(o) for o in outcomes]
                except Exception as e:  # noqa: BLE001 - report per instance and go on
                    out[p.inst.name] = [{"error": str(e)}]
    finally:
        await store.dispose()
    return out


def _show_plan(plans: list[InstancePlan], to: Console) -> None:
    """The exact DDL, per instance and table, as plain lines a DBA can copy."""
    from app.partitions import NO_POLICY

    for p in plans:
        if p.error:
            to.print(f"{p.inst.name}: error: {p.error}", markup=False, highlight=False, soft_wrap=True)
            continue
        tables: dict[str, list[tuple[Any, bool]]] = {}
        for s, c in zip(p.statements, p.covered):
            tables.setdefault(s.table, []).append((s, c))
        for name, rows in tables.items():
            note = "" if rows[0][1] else f"  ({NO_POLICY})"
            to.print(f"{p.inst.name}  {name}{note}", markup=False, highlight=False, soft_wrap=True)
            for s, _ in rows:
                to.print(f"  {s.sql};  -- {s.why}", markup=False, highlight=False, soft_wrap=True)


def _confirmed(plans: list[InstancePlan], to: Console) -> bool:
    """Show the plan and ask; no answer (no terminal, end of input) is a no."""
    _show_plan(plans, to)
    statements = [(p.inst.name, s.table) for p in plans for s in p.to_apply()]
    if not statements:
        return True  # nothing would run: the outcomes say why, no question to ask
    question = (f"Apply {len(statements)} statements to {len(set(statements))} tables on "
                f"{len({name for name, _ in statements})} instances?")
    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort:
        return False


def _print(result: dict[str, list[dict]], applied: bool, as_json: bool) -> None:
    from app.partitions import NO_POLICY

    if as_json:
        print(json.dumps(result, indent=2))
        return
    table_out = Table(title="partition maintenance " + ("applied" if applied else "plan (dry run)"))
    for col in ("instance", "action", "partition", "status" if applied else "why", "sql"):
        table_out.add_column(col, overflow="fold")
    for name, rows in result.items():
        for r in rows:
            if "error" in r:
                table_out.add_row(name, "[red]error[/red]", "", r["error"], "")
            else:
                why = r["why"] if r.get("applies", True) else f"{r['why']} ({NO_POLICY})"
                table_out.add_row(name, r["action"], r["partition"], r.get("status") or why, r["sql"])
    console.print(table_out)


def _plan_json(p: InstancePlan) -> list[dict]:
    from app.partitions import statement_json

    if p.error:
        return [{"error": p.error}]
    return [{**statement_json(s), "applies": c} for s, c in zip(p.statements, p.covered)]


@partitions_app.command("plan")
def plan(instance: InstanceOpt = None, tag: TagOpt = None, all_: AllOpt = False, table: TableOpt = None,
         as_json: JsonOpt = False) -> None:
    """Show the exact DDL the policies call for (every instance unless narrowed); changes nothing.

    A table no configured policy names is planned with the defaults and marked `applies: false`:
    apply never runs those statements."""
    from app.cli import _run, _settings

    names, tags = _scope(instance, tag, all_, required=False)
    settings = _settings()
    plans = _run(_plans(settings, names, tags, table))
    _print({p.inst.name: _plan_json(p) for p in plans}, applied=False, as_json=as_json)


@partitions_app.command("apply")
def apply(instance: InstanceOpt = None, tag: TagOpt = None, all_: AllOpt = False, table: TableOpt = None,
          yes: Annotated[bool, typer.Option("--yes", "-y", help="apply without showing the plan and asking")] = False,
          as_json: JsonOpt = False) -> None:
    """Run the plan: one statement per transaction, lock_timeout set, an audit row for each.

    Needs a scope: --instance, --tag or --all. Without --yes it prints the plan (the exact DDL per
    instance and table) and asks; answering no, or having no terminal to answer on, applies
    nothing and exits with status 1. Tables no configured policy names are planned only, never
    applied. With --json the plan and the question go to stderr, the outcomes to stdout."""
    from app.cli import _run, _settings

    names, tags = _scope(instance, tag, all_, required=True)
    settings = _settings()
    plans = _run(_plans(settings, names, tags, table))
    if not yes and not _confirmed(plans, err if as_json else console):
        err.print("nothing applied")
        raise typer.Exit(1)
    _print(_run(_apply(settings, plans, table)), applied=True, as_json=as_json)
