"""``databus demo``: a scripted multi-agency exchange on a fresh embedded stack.

The demo is a list of chapters (one module each in ``bus/demo/``), each a function ``run(demo)`` that
talks to the running bus like an agency system would (HTTP and the SDK), prints what happens, and
states its expectations with ``demo.expect``. The command exits 0 only if every expectation held.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.panel import Panel

from bus.settings import Settings
from bus.stack import Stack

# Order matters: later chapters use what earlier ones created (kept in ``demo.state``).
CHAPTERS = [
    "bus.demo.ch1_broker",
    "bus.demo.ch2_catalogue",
    "bus.demo.ch3_exchange",
    "bus.demo.ch4_violations",
    "bus.demo.ch5_connectors",
    "bus.demo.ch6_lineage",
    "bus.demo.ch7_operations",  # authorised operation (R11)
]


@dataclass
class Demo:
    stack: Stack
    console: Console
    state: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    checks: int = 0

    @property
    def url(self) -> str:
        return self.stack.url

    def client(self, key: str | None = None) -> httpx.Client:
        """An HTTP client of the gateway; ``key`` defaults to the admin key."""
        assert self.stack.ctx is not None
        token = key or self.stack.ctx.admin_key
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def expect(self, ok: bool, what: str) -> bool:
        self.checks += 1
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        self.console.print(f"  {mark} {what}")
        if not ok:
            self.failures.append(what)
        return ok

    def say(self, text: str) -> None:
        self.console.print(text)

    def chapter(self, title: str) -> None:
        self.console.print(Panel.fit(f"[bold]{title}[/]"))


def run_demo(console: Console | None = None, data_dir: Path | None = None) -> int:
    console = console or Console()
    with tempfile.TemporaryDirectory(prefix="databus-demo-") as tmp:
        settings = Settings(data_dir=data_dir or Path(tmp))
        started = time.monotonic()
        with console.status("starting an embedded bus (broker, Redis, store, gateway, workers)..."):
            stack = Stack(settings).start()
        try:
            demo = Demo(stack=stack, console=console)
            console.print(f"bus up in {time.monotonic() - started:.1f}s at {stack.url}")
            console.print(f"console: {stack.url}/console (while the demo runs; `databus up` keeps one)")
            for name in CHAPTERS:
                importlib.import_module(name).run(demo)
        finally:
            with console.status("stopping the bus..."):
                stack.stop()
    if demo.failures:
        console.print(
            f"[red bold]demo failed:[/] {len(demo.failures)} of {demo.checks} expectations did not hold"
        )
        for f in demo.failures:
            console.print(f"  - {f}")
        return 1
    console.print(f"[green bold]demo complete:[/] all {demo.checks} expectations held")
    return 0
