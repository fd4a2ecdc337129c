"""The `dbfleet` command: serve, worker, migrate, sweep, findings, inventory, keys, demo."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.alerting.cli import alerts_app
from app.cloud_cli import discover_app
from app.partitions_cli import partitions_app
from app.quality_cli import checks_app
from app.settings import Settings, get_settings

cli = typer.Typer(help="Fleet database operations and monitoring for DBAs.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
inventory_cli = typer.Typer(help="Import, export and discover the inventory (servers and their databases).",
                            no_args_is_help=True)
keys_cli = typer.Typer(help="API keys.", no_args_is_help=True)
config_cli = typer.Typer(help="Configuration.", no_args_is_help=True)
cli.add_typer(inventory_cli, name="inventory")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(config_cli, name="config")
cli.add_typer(alerts_app, name="alerts")
cli.add_typer(discover_app, name="discover")
cli.add_typer(partitions_app, name="partitions")
cli.add_typer(checks_app, name="checks")
console = Console()
err = Console(stderr=True)
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _settings(checked: bool = False) -> Settings:
    """The settings; with `checked`, also refuse to go on with errors in any section."""
    from pydantic_settings import SettingsError

    from app.settings import ConfigFileError, config_report, settings_errors

    try:
        settings = get_settings()
    except (ValidationError, FileNotFoundError, ConfigFileError, SettingsError) as e:
        # The value is never printed: it may be a secret in the wrong key.
        lines = settings_errors(e) if isinstance(e, ValidationError) else str(e).splitlines()
        where = f" in {e.path}" if isinstance(e, ConfigFileError) else ""
        err.print(f"[red]configuration error{escape(where)}:[/red]\n" + "\n".join(f"  {escape(x)}" for x in lines),
                  soft_wrap=True)  # one problem per line, whatever the terminal's width
        raise typer.Exit(2) from None
    if checked and (problems := config_report(settings)):
        err.print("[red]configuration errors:[/red]\n" + "\n".join(f"  {escape(p)}" for p in problems), soft_wrap=True)
        raise typer.Exit(2)
    return settings


async def _store(settings: Settings, migrated: bool = True):
    from app.db import Store, StoreNotReady, resolve_store_url

    store = Store(await resolve_store_url(settings.database_url, settings.store.embedded_dir), settings.store_pool_size())
    if migrated:
        try:
            await store.check_ready()
        except StoreNotReady as e:
            await store.dispose()
            err.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from None
    return store


def _run(coro):
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@cli.command()
def migrate() -> None:
    """Upgrade the store to the latest schema (Alembic upgrade head) and create its partitions."""
    from app.db import migrate as upgrade
    from app.db import resolve_store_url
    from app.scheduler import upkeep

    settings = _settings()

    async def go() -> None:
        url = await resolve_store_url(settings.database_url, settings.store.embedded_dir)
        await asyncio.to_thread(upgrade, url)
        store = await _store(settings)
        await upkeep(store, settings)
        await store.dispose()

    _run(go())
    console.print("store migrated to head")


@cli.command()
def serve(host: Optional[str] = None, port: Optional[int] = None,
          workers: Optional[int] = typer.Option(None, min=1, max=64, help="processes sharing the port "
                                                "(default: api.workers)")) -> None:
    """Serve the REST API, the console and /metrics."""
    import uvicorn

    from app.db import resolve_store_url
    from app.main import SERVE_STORE_URL, create_app

    settings = _settings(checked=True)
    url = _run(resolve_store_url(settings.database_url, settings.store.embedded_dir))
    _run(_check_migrated(settings))
    workers = workers or settings.api.workers
    # proxy_headers off: the app applies them itself (app/web/peer.py).
    where = {"host": host or settings.api.host, "port": port or settings.api.port, "log_level": "info",
             "proxy_headers": False}
    if workers == 1:
        uvicorn.run(create_app(settings, url), **where)
        return
    os.environ[SERVE_STORE_URL] = url  # read by each worker's app_for_worker()
    uvicorn.run("app.main:app_for_worker", factory=True, workers=workers, **where)


async def _check_migrated(settings: Settings) -> None:
    store = await _store(settings)
    await store.dispose()


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


@cli.command()
def worker(shard: Annotated[Optional[str], typer.Option(help="i/N, or 'auto' for the StatefulSet ordinal")] = None) -> None:
    """Run the scheduler, collectors and alert dispatcher for this worker's shard."""
    from app.scheduler import run_worker
    from app.telemetry import setup_logging

    settings = _settings(checked=True)
    if shard:
        settings = settings.model_copy(update={"shard": shard})
    setup_logging()

    async def go() -> None:
        store = await _store(settings)
        stop = asyncio.Event()
        _stop_on_signals(stop)
        try:
            await run_worker(store, settings, stop)
        finally:
            await store.dispose()

    try:
        _run(go())
    except ValueError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


@cli.command()
def sweep(
    collector: Annotated[Optional[list[str]], typer.Option(help="collector name (repeatable); default all")] = None,
    instance: Annotated[Optional[list[str]], typer.Option(help="instance name (repeatable)")] = None,
    tag: Annotated[Optional[list[str]], typer.Option(help="key=value (repeatable)")] = None,
    repeat: Annotated[int, typer.Option(min=1, help="sweeps to run back to back")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per sweep")] = False,
) -> None:
    """Run sweeps now, with a progress bar and a summary table (or --json)."""
    from app.inventory.store import parse_tag_selectors
    from app.sweep import Selector, Sweeper
    from collectors.registry import collector_names

    settings = _settings()
    unknown = sorted(set(collector or []) - set(collector_names()))
    if unknown:
        err.print(f"[red]unknown collector(s): {', '.join(unknown)}[/red]; known: {', '.join(collector_names())}")
        raise typer.Exit(2)
    try:
        selector = Selector(names=tuple(instance or ()), tags=tuple(parse_tag_selectors(tag).items()))
    except ValueError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None

    async def go() -> None:
        store = await _store(settings)
        sweeper = Sweeper(store, settings)
        try:
            for _ in range(repeat):
                summary = await _one_sweep(sweeper, collector, selector, as_json)
                if as_json:
                    print(json.dumps(summary.as_json()), flush=True)
                else:
                    _print_summary(summary)
        finally:
            await sweeper.close()
            await store.dispose()

    _run(go())


async def _one_sweep(sweeper, collectors, selector, quiet: bool):
    if quiet:
        return await sweeper.sweep(collectors, selector)
    total = len(await sweeper.instances(selector))
    columns = (TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[last]}"))
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("sweep", total=total, last="")
        return await sweeper.sweep(collectors, selector,
                                   progress=lambda name, status: bar.update(task, advance=1, last=f"{name}: {status}"))


def _print_summary(summary) -> None:
    table = Table(title="sweep summary")
    for col in ("instances", "collector runs ok", "failed", "skipped", "wall s", "cpu s", "open findings"):
        table.add_column(col, justify="right")
    table.add_row(str(summary.instances), str(summary.ok), str(summary.failed), str(summary.skipped),
                  f"{summary.wall_s:.2f}", f"{summary.cpu_s:.2f}", str(summary.findings_open))
    console.print(table)
    for name, error in sorted(summary.errors.items()):
        console.print(f"  [red]{name}[/red]: {error}")


@cli.command()
def findings(
    instance: Optional[str] = None,
    severity: Annotated[Optional[list[str]], typer.Option(help="info, warning, critical")] = None,
    state: Annotated[Optional[list[str]], typer.Option(help="open, acknowledged, silenced, resolved")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List findings (live ones by default)."""
    settings = _settings()
    rows = _run(_load_findings(settings, instance, severity, state))
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print_findings(rows)


async def _load_findings(settings: Settings, instance, severity, state) -> list[dict]:
    from sqlalchemy import select

    from app.findings import finding_json
    from app.models import Finding, Instance

    store = await _store(settings)
    try:
        stmt = select(Finding, Instance.name).join(Instance).where(
            Finding.state.in_(state or ["open", "acknowledged", "silenced"])).order_by(Instance.name, Finding.check)
        if instance:
            stmt = stmt.where(Instance.name == instance)
        if severity:
            stmt = stmt.where(Finding.severity.in_(severity))
        async with store.sessions() as session:
            return [finding_json(f, name) for f, name in (await session.execute(stmt)).all()]
    finally:
        await store.dispose()


def print_findings(rows: list[dict]) -> None:
    table = Table(title=f"{len(rows)} findings")
    for col in ("instance", "severity", "check", "object", "title"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["instance"], f"[{SEVERITY_STYLE[r['severity']]}]{r['severity']}[/]", r["check"], r["object"],
                      r["title"])
    console.print(table)


@inventory_cli.command("import")
def inventory_import(path: Path, format: Annotated[Optional[str], typer.Option(help="yaml or csv")] = None) -> None:
    """Validate and upsert servers and instances from YAML or CSV; any error writes nothing."""
    from app.inventory import io
    from app.inventory.store import InventoryConflict, upsert_inventory

    settings = _settings()
    try:
        inventory = io.parse_inventory(io.read_text(path.read_bytes()), format or io.format_for(path.name))
    except io.InventoryFileError as e:
        err.print(f"[red]{escape(str(e))}[/red]\nnothing was imported")
        raise typer.Exit(1) from None
    except OSError as e:
        err.print(f"[red]cannot read {path}: {e.strerror}[/red]")
        raise typer.Exit(1) from None

    async def go():
        store = await _store(settings)
        try:
            async with store.sessions() as session, session.begin():
                return await upsert_inventory(session, inventory, actor="cli")
        finally:
            await store.dispose()

    try:
        report = _run(go())
    except InventoryConflict as e:
        err.print("[red]" + escape("\n".join(e.errors)) + "[/red]\nnothing was imported")
        raise typer.Exit(1) from None
    if report.servers is not None:
        s = report.servers
        console.print(f"servers: created {len(s.created)}, updated {len(s.updated)}, unchanged {len(s.unchanged)}")
    console.print(f"created {len(report.created)}, updated {len(report.updated)}, unchanged {len(report.unchanged)}")


@inventory_cli.command("export")
def inventory_export(format: Annotated[str, typer.Option(help="yaml or csv")] = "yaml") -> None:
    """Print the inventory: YAML servers with their databases, or the instance CSV (credential
    references only, never secrets)."""
    from sqlalchemy import select

    from app.inventory import io
    from app.models import Instance, Server

    if format not in ("yaml", "csv"):
        err.print("[red]--format must be yaml or csv[/red]")
        raise typer.Exit(2)
    settings = _settings()

    async def go():
        store = await _store(settings)
        try:
            async with store.sessions() as session:
                insts = list((await session.execute(select(Instance).order_by(Instance.name))).scalars())
                servers = list((await session.execute(select(Server).order_by(Server.name))).scalars())
        finally:
            await store.dispose()
        return io.dump_csv(insts) if format == "csv" else io.dump_yaml(insts, servers)

    sys.stdout.write(_run(go()))


@inventory_cli.command("discover")
def inventory_discover(server: Annotated[Optional[str], typer.Option(help="only this server")] = None) -> None:
    """List the databases of servers with include/exclude patterns and add or retire their entries."""
    from app.inventory.databases import discover_all

    settings = _settings()

    async def go():
        store = await _store(settings)
        try:
            return await discover_all(store, settings, only=server)
        finally:
            await store.dispose()

    results = _run(go())
    if server and not results:
        err.print(f"[red]no server named {escape(server)!r} with discovery patterns[/red]")
        raise typer.Exit(1)
    table = Table("server", "added", "returned", "gone", "error")
    for r in results:
        table.add_row(escape(r.server), ", ".join(r.added), ", ".join(r.returned), ", ".join(r.gone),
                      escape(r.error or ""))
    console.print(table)
    if any(r.error for r in results):
        raise typer.Exit(1)


@keys_cli.command("create")
def keys_create(role: Annotated[str, typer.Option(help="viewer, operator or admin")] = "viewer",
                name: Annotated[str, typer.Option(help="who or what uses the key")] = "cli") -> None:
    """Create an API key and print it once."""
    from app.auth import Role, create_key
    from app.models import AuditLog

    if role not in Role.__members__:
        err.print("[red]--role must be viewer, operator or admin[/red]")
        raise typer.Exit(2)
    settings = _settings()

    async def go() -> str:
        store = await _store(settings)
        try:
            async with store.sessions() as session, session.begin():
                key = await create_key(session, name, Role[role])
                session.add(AuditLog(actor="cli", action="key.create", target=name, details={"role": role}))
                return key
        finally:
            await store.dispose()

    print(_run(go()))


@config_cli.command("check")
def config_check() -> None:
    """Validate dbfleet.yaml and the environment; print every error with its path."""
    from app.settings import config_report

    problems = config_report(_settings())
    for line in problems:
        err.print(f"[red]{escape(line)}[/red]", soft_wrap=True)  # a message may hold 'dbfleet[aws]', not markup
    if problems:
        raise typer.Exit(1)
    console.print("configuration is valid")


@cli.command()
def demo(port: int = 8080, data_dir: Path = Path(".dbfleet")) -> None:
    """Embedded store + demo fleet + one sweep + API and worker, until Ctrl-C."""
    from app.demo import run_demo

    _run(run_demo(_settings(checked=True), port=port, data_dir=data_dir))


def main() -> None:
    cli()
