"""R14 (issue 13): the pure parts of the hardening — cursor decoding, stale positions, broker identity
comparison, the body limit, the CLI's entry and position helpers."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bus.cli.catalog import _sharing_of
from bus.cli.tail import _start, position_file
from bus.errors import RequestInvalid
from bus.exchange.broker_identity import BrokerIdentity, BrokerLoss, Change, compare
from bus.gateway.cursors import stale_positions
from bus.gateway.guards import BodyLimit
from bus.gateway.routes_subscribe import MAX_OFFSET, MAX_PARTITION, decode_cursor, encode_cursor

positions = st.dictionaries(st.integers(0, MAX_PARTITION), st.integers(0, MAX_OFFSET), max_size=50)


@given(positions)
def test_r14_cursor_round_trip(p: dict[int, int]) -> None:
    assert decode_cursor(encode_cursor(p)) == p


@given(st.text(max_size=200))
def test_r14_any_text_is_a_cursor_or_request_invalid(text: str) -> None:
    try:
        got = decode_cursor(text)
    except RequestInvalid:
        return
    assert all(0 <= k <= MAX_PARTITION and 0 <= v <= MAX_OFFSET for k, v in got.items())


def _raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    ["0:-1", "-1:0", f"0:{MAX_OFFSET + 1}", f"{MAX_PARTITION + 1}:0", "0:1,", "0:1:2", "a:b", "0:+1", "0: 1",
     "0:1,,1:2", "٣:1"],
)
def test_r14_bad_cursor_values_are_refused(raw: str) -> None:
    with pytest.raises(RequestInvalid):
        decode_cursor(_raw(raw))


@pytest.mark.parametrize(
    ("positions", "ends", "stale"),
    [
        ({0: 5}, {0: 5}, {}),  # at the end
        ({0: 5}, {0: 9}, {}),
        ({0: 6}, {0: 5}, {0: 6}),  # past it
        ({0: 0, 1: 3}, {}, {1: 3}),  # partition gone: end 0; offset 0 is never stale
        ({0: 5000, 1: 2}, {0: 10, 1: 2}, {0: 5000}),
    ],
)
def test_r14_stale_positions(positions: dict[int, int], ends: dict[int, int], stale: dict[int, int]) -> None:
    assert stale_positions(positions, ends) == stale


@pytest.mark.parametrize(
    ("known", "current", "change"),
    [
        (None, None, Change.FIRST_SEEN),
        ("", "c/1", Change.FIRST_SEEN),
        (None, "c/1", Change.FIRST_SEEN),
        ("c/1", "c/1", Change.SAME),
        ("c/1", "c/2", Change.LOST),
        ("c/1", None, Change.LOST),  # the marker is gone
        ("c/1", "d/1", Change.LOST),
    ],
)
def test_r14_compare_broker_identities(known: str | None, current: str | None, change: Change) -> None:
    assert compare(known, current) is change


def test_r14_identity_token_and_loss_reason() -> None:
    assert BrokerIdentity("tansu_cluster", "AaI67K").token == "tansu_cluster/AaI67K"
    loss = BrokerLoss("2026-12-03T08:00:00+00:00", "c/1", "c/2", [f"ds{i}" for i in range(25)], 7)
    reason = loss.reason()
    assert "ds0" in reason and "ds19" in reason and "ds20" not in reason and "..." in reason
    assert "incident 7" in reason and "databus lineage undelivered" in reason


def _echo_app(limit: int) -> TestClient:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"size": len(await request.body())})

    return TestClient(BodyLimit(Starlette(routes=[Route("/", echo, methods=["POST"])]), limit=limit))


@pytest.mark.parametrize(("size", "status"), [(0, 200), (100, 200), (101, 413), (10_000, 413)])
def test_r14_body_limit_by_content_length(size: int, status: int) -> None:
    resp = _echo_app(100).post("/", content=b"x" * size)
    assert resp.status_code == status
    if status == 413:
        assert resp.json()["code"] == "request.too_large"
    else:
        assert resp.json() == {"size": size}


def test_r14_body_limit_counts_a_streamed_body() -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 30

    resp = _echo_app(100).post("/", content=chunks())
    assert resp.status_code == 413 and resp.json()["code"] == "request.too_large"
    small = _echo_app(1000).post("/", content=chunks())
    assert small.status_code == 200 and small.json() == {"size": 300}


@pytest.mark.parametrize(
    ("value", "sharing"),
    [
        (None, {}),
        ("unconditional", {"attribute": "unconditional"}),
        ({"attribute": "none", "reason": "r"}, {"attribute": "none", "reason": "r"}),
    ],
)
def test_entry_sharing_forms(value: object, sharing: dict[str, object]) -> None:
    assert _sharing_of(value) == sharing


def test_tail_position_file_and_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    a = position_file("http://127.0.0.1:8000", "gr-1")
    assert a.parent == tmp_path / "databus" / "tail"
    assert a != position_file("http://127.0.0.1:9000", "gr-1")
    assert a != position_file("http://127.0.0.1:8000", "gr-2")
    assert "/" not in position_file("http://x", "../../etc").name
    assert _start(None, False, a) is None  # nothing kept yet
    a.parent.mkdir(parents=True)
    a.write_text("MDo1\n")
    assert _start(None, False, a) == "MDo1"
    assert _start("other", False, a) == "other"  # --after wins
    assert _start(None, True, a) is None  # --from-start
