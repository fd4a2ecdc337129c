"""`dbfleet discover aws|azure`: fill the inventory from RDS/Aurora or Azure Resource Manager, or show
what would change (--dry-run)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.inventory import discovery_azure
from app.inventory.cloud_settings import CloudSettings
from app.inventory.discovery_aws import discover_aws
from app.inventory.reconcile import DiscoveryDiff, DiscoveryError
from app.inventory.store import parse_tag_selectors

discover_app = typer.Typer(help="Discover instances from the clouds into the inventory.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def _short(value: object, width: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def print_diff(diff: DiscoveryDiff) -> None:
    verb = "would change" if diff.dry_run else "changed"
    where = f"{diff.cloud.label} {diff.where}"
    table = Table(title=f"{where}: {len(diff.added)} new, {len(diff.changed)} {verb}, "
                        f"{len(diff.gone)} gone, {len(diff.unchanged)} unchanged")
    for column in ("", "instance", "field", "from", "to"):
        table.add_column(column)
    for mark, style, changes in (("+", "green", diff.added), ("~", "yellow", diff.changed), ("-", "red", diff.gone)):
        for change in changes:
            fields = change.fields if mark != "+" else {k: v for k, v in change.fields.items() if k in ("engine", "host")}
            for i, (name, values) in enumerate(sorted(fields.items())):
                table.add_row(f"[{style}]{mark}[/{style}]" if i == 0 else "", change.name if i == 0 else "", name,
                              _short(values["from"]), _short(values["to"]))
    console.print(table)
    for name, kept in sorted(diff.pinned_kept.items()):
        console.print(f"[cyan]{name}[/cyan]: kept hand-set {', '.join(kept)} (pinned)")


async def _discover(regions: list[str], tags: dict[str, str], dry_run: bool) -> tuple[list[DiscoveryDiff], list[str]]:
    from app.cli import _settings, _store

    settings = _settings()
    endpoint_url = CloudSettings.of(settings).aws.endpoint_url
    store = await _store(settings)
    diffs, errors = [], []
    try:
        for region in regions:
            try:
                async with store.sessions() as session:  # closed without commit = rolled back
                    diffs.append(await discover_aws(session, region, tags, dry_run=dry_run, endpoint_url=endpoint_url))
                    if not dry_run:
                        await session.commit()
            except DiscoveryError as e:
                errors.append(f"{region}: {e}")
    finally:
        await store.dispose()
    return diffs, errors


@discover_app.command("aws")
def discover_aws_command(
    region: Annotated[list[str], typer.Option("--region", help="AWS region; repeat for several")],
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="only instances with tag k=v; repeatable")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the diff, write nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the diff as JSON")] = False,
) -> None:
    """Upsert RDS and Aurora instances; vanished ones are marked gone, hand-set fields are kept."""
    from app.cli import _run

    try:
        tags = parse_tag_selectors(tag)
    except ValueError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    diffs, errors = _run(_discover(region, tags, dry_run))
    _report(diffs, errors, as_json)


def _report(diffs: list, errors: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps([d.as_dict() for d in diffs], default=str, indent=2))
    else:
        for diff in diffs:
            print_diff(diff)
    for message in errors:
        err.print(f"[red]discovery failed in {escape(message)}[/red]")  # 'dbfleet[aws]' is not markup
    if errors:
        raise typer.Exit(1)


async def _discover_azure(subscriptions: list[str], tags: dict[str, str],
                          dry_run: bool) -> tuple[list[DiscoveryDiff], list[str]]:
    from app.cli import _settings, _store
    from app.inventory.azure_arm import ArmError

    settings = _settings()
    cfg = CloudSettings.of(settings).azure
    try:
        credential = await discovery_azure.make_credential(cfg)
    except ArmError as e:
        return [], [f"Azure: {e}"]
    store = await _store(settings)
    diffs, errors = [], []
    try:
        for sub in subscriptions:
            try:
                async with store.sessions() as session:  # closed without commit = rolled back
                    diffs.append(await discovery_azure.discover_azure(
                        session, sub, tags, dry_run=dry_run, credential=credential,
                        management_endpoint=cfg.management_endpoint))
                    if not dry_run:
                        await session.commit()
            except DiscoveryError as e:
                errors.append(f"subscription {sub}: {e}")
    finally:
        await credential.close()
        await store.dispose()
    return diffs, errors


@discover_app.command("azure")
def discover_azure_command(
    subscription: Annotated[Optional[list[str]], typer.Option(
        "--subscription", help="subscription id; repeat for several (default: cloud.azure.subscriptions)")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="only servers with tag k=v; repeatable")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the diff, write nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the diff as JSON")] = False,
) -> None:
    """Upsert Azure PostgreSQL/MySQL flexible servers and Azure SQL databases; vanished ones are marked
    gone, hand-set fields are kept."""
    from app.cli import _run, _settings

    try:
        tags = parse_tag_selectors(tag)
    except ValueError as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    subscriptions = subscription or CloudSettings.of(_settings()).azure.subscriptions
    if not subscriptions:
        err.print("[red]no subscription: pass --subscription or set cloud.azure.subscriptions[/red]")
        raise typer.Exit(2)
    diffs, errors = _run(_discover_azure(subscriptions, tags, dry_run))
    _report(diffs, errors, as_json)
