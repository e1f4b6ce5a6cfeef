"""R14 (issue 13, item 3): ``/healthz`` answers within 1 s whatever is down, naming the part.

A "black hole" accepts connections and never answers: what a SIGSTOPped valkey-server or a hung broker
looks like to a client (without stopping the session's shared Redis).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from bus.context import BusContext
from bus.gateway.app import create_app
from bus.settings import Settings


@pytest.fixture
def black_hole() -> Iterator[str]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    t.join(2)
    for c in held:
        c.close()
    server.close()


def _ctx(settings: Settings, **changes: str) -> BusContext:
    s = settings.model_copy(update=changes)
    return BusContext.create(s, bootstrap=s.kafka_bootstrap or "", redis_url=s.redis_url or "").start()


@pytest.mark.parametrize("hung", ["redis", "broker"])
def test_r14_healthz_answers_within_a_second_when_a_part_hangs(
    settings: Settings, black_hole: str, hung: str
) -> None:
    changes = {"redis_url": f"redis://{black_hole}/0"} if hung == "redis" else {"kafka_bootstrap": black_hole}
    ctx = _ctx(settings, **changes)
    try:
        client = TestClient(create_app(ctx))
        client.get("/v1/nothing-here")  # the app's own first-request set-up is not the probe's time
        for _ in range(3):  # again while the first probe still hangs: never slower, never piling up
            started = time.monotonic()
            resp = client.get("/healthz")
            elapsed = time.monotonic() - started
            assert resp.status_code == 503
            assert elapsed < 1.0, elapsed
            body = resp.json()
            assert hung in body["failing"] and body["parts"]["store"]["ok"]
            assert body["parts"][hung]["error"]
    finally:
        ctx.close()


def test_r14_healthz_is_200_when_everything_answers(ctx: BusContext) -> None:
    resp = TestClient(create_app(ctx)).get("/healthz")
    assert resp.status_code == 200, resp.text
    assert resp.json()["failing"] == []
