"""`dbfleet alerts ...` (route-test, like amtool) and the alerting part of `dbfleet config check`."""

from __future__ import annotations

from typing import Any

import typer

from app.alerting.config import check_config, load_config
from app.alerting.routing import RoutingTree

alerts_app = typer.Typer(help="Alert routing: see where an alert would go.", no_args_is_help=True)


@alerts_app.callback()
def _alerts() -> None:
    """Alert routing tools (a callback keeps this a command group even with one command)."""


def config_check(settings: Any) -> list[str]:
    """Every error in settings.alerting, each with its path (alerting.route.routes[0].receiver: ...)."""
    return check_config(settings.alerting)


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not key=value")
        labels[key] = value
    return labels


@alerts_app.command("route-test")
def route_test(labels: list[str] = typer.Argument(..., help="alert labels as key=value"),
               verbose: bool = typer.Option(False, "--verbose", "-v", help="also show route and group key")) -> None:
    """Print the receivers an alert with these labels would reach, one per line."""
    from app.settings import get_settings

    settings = get_settings()
    errors = config_check(settings)
    if errors:
        for e in errors:
            typer.echo(e, err=True)
        raise typer.Exit(2)
    tree = RoutingTree(load_config(settings.alerting))
    alert = _labels(labels)
    for route in tree.match(alert):
        if verbose:
            typer.echo(f"{route.receiver}\troute={route.id}\tgroup={route.group_key(alert)}\t"
                       f"group_wait={route.group_wait} group_interval={route.group_interval} "
                       f"repeat_interval={route.repeat_interval}")
        else:
            typer.echo(route.receiver)
