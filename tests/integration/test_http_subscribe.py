"""Publishing and reading over HTTP and SSE (R7, R8, R13, R14); the SDK discovers the bus via the gateway."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from bus.client import Publisher, Subscriber
from bus.errors import BusError
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import api, grant_body, receive


@pytest.fixture
def exchange(ctx, agency_factory, dataset_factory, bus_stack):
    market, market_key = agency_factory("market")
    psb, psb_key = agency_factory("psb")
    tax, tax_key = agency_factory("tax")
    ds = dataset_factory(market)
    with api(bus_stack, psb_key) as psb_api:
        g = psb_api.post("/v1/grants", json=grant_body(ds, ["licence_no", "phone", "legal_rep_id"])).json()
    return {
        "ds": ds,
        "grant": g["id"],
        "market": market_key,
        "psb": psb_key,
        "tax": tax_key,
        "stack": bus_stack,
    }


def test_r13_http_publish_answers_per_record_and_honours_idempotency_key(exchange) -> None:
    good = [licence_record(i) for i in range(3)]
    bad = {**licence_record(9), "registered_capital": "a lot"}
    extra = {**licence_record(8), "undeclared": "x"}
    body = {"records": [good[0], bad, good[1], extra, good[2]]}
    with api(exchange["stack"], exchange["market"]) as market:
        first = market.post(
            f"/v1/datasets/{exchange['ds']}/records", json=body, headers={"Idempotency-Key": "k1"}
        )
        assert first.status_code == 200, first.text
        answer = first.json()
        assert answer["accepted"] == 3 and len(answer["record_ids"]) == 3
        assert [(r["index"], r["code"]) for r in answer["rejected"]] == [
            (1, "record.invalid"),
            (3, "record.invalid"),
        ]
        assert (
            "registered_capital" in answer["rejected"][0]["detail"]
            and "undeclared" in answer["rejected"][1]["detail"]
        )
        replay = market.post(
            f"/v1/datasets/{exchange['ds']}/records", json=body, headers={"Idempotency-Key": "k1"}
        )
        assert replay.json()["record_ids"] == answer["record_ids"] and replay.json()["replayed"] is True
        reused = market.post(
            f"/v1/datasets/{exchange['ds']}/records",
            json={"records": good},
            headers={"Idempotency-Key": "k1"},
        )
        assert reused.status_code == 422 and reused.json()["code"] == "idempotency.key_reused"
        # only the owner publishes
    with api(exchange["stack"], exchange["psb"]) as psb:
        resp = psb.post(f"/v1/datasets/{exchange['ds']}/records", json={"records": good})
        assert resp.status_code == 403 and resp.json()["code"] == "auth.forbidden"
        got = _read_all(psb, exchange["grant"], 3)
    assert sorted(r["record_id"] for r in got) == sorted(answer["record_ids"])  # the replay published nothing


def _read_all(client: httpx.Client, grant_id: str, n: int, limit: int = 100) -> list[dict]:
    got: list[dict] = []
    cursor = None
    deadline = time.monotonic() + 15
    while len(got) < n and time.monotonic() < deadline:
        page = client.get(
            f"/v1/grants/{grant_id}/records",
            params={"after": cursor, "limit": limit} if cursor else {"limit": limit},
        ).json()
        got.extend(page["records"])
        cursor = page["next"]
    return got


def test_r8_records_with_a_cursor_for_the_grantee_only(exchange) -> None:
    with api(exchange["stack"], exchange["market"]) as market:
        ids = market.post(
            f"/v1/datasets/{exchange['ds']}/records", json={"records": [licence_record(i) for i in range(25)]}
        ).json()["record_ids"]
    with api(exchange["stack"], exchange["psb"]) as psb:
        got = _read_all(psb, exchange["grant"], 25, limit=10)
        assert sorted(r["record_id"] for r in got) == sorted(ids) and len(got) == 25  # pages never repeat
        first = got[0]
        assert set(first["value"]) == {"licence_no", "phone", "legal_rep_id"}
        assert first["value"]["phone"].startswith("*******") and first["value"]["legal_rep_id"].startswith(
            "ps-"
        )
        assert first["scenario"] == "licence-check" and first["headers"]["bus-grant"] == exchange["grant"]
    with api(exchange["stack"], exchange["tax"]) as tax:
        for path in ("records", "stream"):
            resp = tax.get(f"/v1/grants/{exchange['grant']}/{path}")
            assert resp.status_code == 403 and resp.json()["code"] == "auth.forbidden"
    with api(exchange["stack"], "not-a-key") as nobody:
        assert nobody.get(f"/v1/grants/{exchange['grant']}/records").json()["code"] == "auth.invalid"


def test_r14_sse_stream_delivers_and_ends_within_a_second_of_revocation(exchange) -> None:
    events: list[tuple[str, dict, float]] = []

    def listen() -> None:
        with (
            api(exchange["stack"], exchange["psb"]) as psb,
            psb.stream("GET", f"/v1/grants/{exchange['grant']}/stream") as resp,
        ):
            assert resp.status_code == 200
            event = None
            for line in resp.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    events.append((event or "", json.loads(line[6:]), time.monotonic()))
                    if event == "error":
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    poll_until(lambda: any(e[0] == "open" for e in events), what="the stream opening")
    with api(exchange["stack"], exchange["market"]) as market:
        ids = market.post(
            f"/v1/datasets/{exchange['ds']}/records", json={"records": [licence_record(i) for i in range(5)]}
        ).json()["record_ids"]
        poll_until(lambda: sum(e[0] == "record" for e in events) >= 5, what="5 records on the stream")
        market.post(
            f"/v1/grants/{exchange['grant']}/revoke", json={"reason": "end of inspection"}
        ).raise_for_status()
        revoked_at = time.monotonic()
    listener.join(5)
    assert sorted(e[1]["record_id"] for e in events if e[0] == "record") == sorted(ids)
    kind, data, at = events[-1]
    assert kind == "error" and data["code"] == "grant.not_active"
    assert at - revoked_at < 1.0 + 0.1


def test_sdk_discovers_the_bus_through_the_gateway(exchange) -> None:
    url = exchange["stack"].url
    with Publisher.from_gateway(url, exchange["market"], exchange["ds"]) as pub:
        ids = [pub.publish(licence_record(i), key=f"k{i}") for i in range(10)]
        pub.flush()
    with Subscriber.from_gateway(url, exchange["psb"], exchange["grant"]) as sub:
        got = receive(sub, 10)
        sub.ack()
    assert sorted(d.record_id for d in got) == sorted(ids)
    with pytest.raises(BusError) as info:
        Subscriber.from_gateway(url, exchange["tax"], exchange["grant"])
    assert info.value.code == "auth.forbidden"
