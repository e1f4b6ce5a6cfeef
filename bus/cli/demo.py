"""``databus demo``: the scripted multi-agency exchange; exit 0 only if every expectation held."""

from __future__ import annotations

import typer


def demo() -> None:
    """Start a fresh embedded bus and run the end-to-end multi-agency demo."""
    from bus.demo import run_demo

    raise typer.Exit(run_demo())


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
