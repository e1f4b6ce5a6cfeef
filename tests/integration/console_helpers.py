"""Helpers of the console's browser tests: Debian's Chromium (installed when missing), one browser per
test process, one bus per module with a small world made through the public API and the SDK.

Chromium comes from Debian's ``chromium`` package at ``/usr/bin/chromium`` (never a browser download):
``ensure_chromium`` installs it with apt when it is missing (CI runs as root), under a file lock so two
xdist workers never run apt at once. The browser tests are never skipped.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.client import Publisher, Subscriber
from bus.embedded import EmbeddedKafka, EmbeddedRedis
from bus.settings import Settings
from bus.stack import Stack
from tests.helpers import ROOT, catalog_entry, licence_record, licence_schema, poll_until

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "docs" / "console"
_LOCK = Path("/tmp/databus-console-chromium.lock")


def install_chromium() -> str | None:
    """Install Debian's Chromium when ``/usr/bin/chromium`` is missing (as root, once, under a lock so two
    xdist workers never run apt at once); returns why it could not, or None."""
    if CHROMIUM.exists():
        return None
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if CHROMIUM.exists():
            return None
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return (
                "the console's browser tests need Debian's Chromium: run `apt-get install -y chromium` "
                "as root (the tests install it themselves when they run as root)"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
            if done.returncode != 0:
                return f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}"
    return None if CHROMIUM.exists() else "apt-get installed chromium, but /usr/bin/chromium is missing"


def ensure_chromium() -> Path:
    """``/usr/bin/chromium``, installed first when missing; the test fails (never skips) without it."""
    why = install_chromium()
    if why is not None:
        pytest.fail(why)
    return CHROMIUM


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium per test process."""
    from playwright.sync_api import sync_playwright

    path = ensure_chromium()
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(path), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()


@dataclass
class World:
    """A bus with agencies (market publishes licences; psb and tax hold grants; an auditor and a
    reviewer), one dataset with records published by the SDK, delivered and partly acknowledged."""

    stack: Stack
    keys: dict[str, str]
    dataset: str
    grants: dict[str, str]  # agency -> grant id
    record_ids: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.stack.url

    def api(self, who: str = "admin") -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.keys[who]}"}, timeout=30
        )


def _agency(admin: httpx.Client, agency_id: str, roles: list[str]) -> str:
    r = admin.post(
        "/v1/agencies", json={"id": agency_id, "name": agency_id, "region": "140900", "roles": roles}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["api_key"])


def make_world(stack: Stack, n: int = 5) -> World:
    assert stack.ctx is not None
    keys = {"admin": stack.ctx.admin_key}
    tag = uuid.uuid4().hex[:6]
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {keys['admin']}"}) as admin:
        for name, roles in [
            ("market", ["agency"]),
            ("psb", ["agency"]),
            ("tax", ["agency"]),
            ("auditor", ["auditor"]),
            ("reviewer", ["reviewer"]),
        ]:
            keys[name] = _agency(admin, name, roles)
    world = World(stack, keys, f"licences-{tag}", {}, [])
    with world.api("market") as market:
        assert market.post("/v1/datasets", json=catalog_entry(world.dataset)).status_code == 201
        assert market.post(f"/v1/datasets/{world.dataset}/submit").status_code == 200
    with world.api("reviewer") as reviewer:
        r = reviewer.post(f"/v1/datasets/{world.dataset}/review", json={"decision": "approve"})
        assert r.status_code == 200, r.text
    for agency, fields, scenario in [
        ("psb", ["licence_no", "legal_rep_id", "legal_rep_name", "status"], "licence-check"),
        ("tax", ["licence_no", "credit_code", "status"], "tax-registration"),
    ]:
        with world.api(agency) as client:
            r = client.post(
                "/v1/grants",
                json={
                    "dataset": world.dataset,
                    "fields": fields,
                    "scenario": {"code": scenario, "description": f"{scenario} duties"},
                    "legal_basis": "Administrative Licensing Law art. 61",
                    "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
                },
            )
            assert r.status_code == 201 and r.json()["status"] == "active", r.text
            world.grants[agency] = r.json()["id"]
    with world.api("tax") as tax:
        # R9: a partial copy of market's licences waits for review with its overlap report; a full copy
        # is refused as re-collection and opens an incident
        partial = catalog_entry(f"tax-licences-{tag}")
        assert tax.post("/v1/datasets", json=partial).status_code == 201
        assert tax.post(f"/v1/datasets/{partial['id']}/submit").json()["overlap"]["kind"] == "partial"
        schema = licence_schema()
        schema["fields"] = schema["fields"][:4]
        full = catalog_entry(f"tax-copy-{tag}", schema)
        assert tax.post("/v1/datasets", json=full).status_code == 201
        r = tax.post(f"/v1/datasets/{full['id']}/submit")
        assert r.status_code == 409 and r.json()["code"] == "recollection.overlap", r.text
    world.records = [licence_record(7000 + i) for i in range(n)]
    with Publisher.from_gateway(stack.url, keys["market"], world.dataset) as pub:
        world.record_ids = [pub.publish(rec) for rec in world.records]
        pub.flush()
    with world.api("auditor") as auditor:
        poll_until(
            lambda: all(
                len(auditor.get(f"/v1/lineage/records/{rid}").json().get("deliveries", [])) == 2
                for rid in world.record_ids
            ),
            timeout=30,
            what="every record delivered under both grants",
        )
    with Subscriber.from_gateway(stack.url, keys["psb"], world.grants["psb"]) as sub:
        got: list[Any] = []
        deadline = time.monotonic() + 20
        while len(got) < n and time.monotonic() < deadline:
            got.extend(sub.poll(100, 0.2))
        assert len(got) == n
        sub.ack()
    with world.api("auditor") as auditor:
        poll_until(
            lambda: auditor.get(f"/v1/lineage/records/{world.record_ids[0]}").json()["consumptions"],
            timeout=20,
            what="psb's acknowledgement recorded",
        )
    return world


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, kafka: EmbeddedKafka, redis_server: EmbeddedRedis
) -> Iterator[World]:
    """One bus (gateway + every worker) on the session broker and Redis, with its own store and prefix."""
    data = tmp_path_factory.mktemp("console")
    settings = Settings(
        data_dir=data / "data",
        kafka_bootstrap=kafka.bootstrap,
        redis_url=redis_server.url,
        database_url=f"sqlite:///{data / 'bus.db'}",
        topic_prefix=f"c{uuid.uuid4().hex[:8]}.",
        kafka_profile="embedded",
    )
    stack = Stack(settings, gateway=True).start()
    try:
        yield make_world(stack)
    finally:
        stack.stop()


class Session:
    """A browser context signed in with one key; every request the page makes is logged."""

    def __init__(self, browser: Any, world: World, who: str, *, width: int = 1280, height: int = 800) -> None:
        self.world = world
        self.key = world.keys[who]
        self.context = browser.new_context(
            viewport={"width": width, "height": height}, locale="en-GB", timezone_id="Asia/Shanghai"
        )
        self.context.set_default_timeout(15_000)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def sign_in(self) -> Session:
        self.page.goto(f"{self.world.url}/console")
        self.page.fill("#key", self.key)
        self.page.click("#login button[type=submit]")
        self.page.wait_for_selector("#nav:not([hidden])")
        return self

    def go(self, fragment: str) -> Any:
        """Open a page of the console and wait until it has its data."""
        name = fragment.lstrip("#/").split("/")[0].split("?")[0]
        self.page.evaluate("f => { location.hash = f; }", fragment)
        self.page.wait_for_selector(f"#view[data-ready='{name}']")
        return self.page

    def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path

    def close(self) -> None:
        self.context.close()

    def __enter__(self) -> Session:
        return self.sign_in()

    def __exit__(self, *exc: object) -> None:
        self.close()
