"""Publishing and reading over HTTP and SSE (R7, R8, R13, R14); the SDK discovers the bus via the gateway.

Also: the lineage of an HTTP-published record names its partition and offset in ``data.<dataset>``;
page reads reuse the gateway's pooled readers without changing what a cursor means; an SSE client
leaving in the middle of a read never crashes the gateway.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bus.client import Publisher, Subscriber
from bus.errors import BusError
from bus.exchange.kafka import consumer_config, partitions_of
from bus.gateway.plane import Plane
from bus.gateway.routes_subscribe import GrantReader
from bus.grants import service
from bus.vocab import Header
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import agency, api, grant_body, headers_of, receive


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


def _read_all(
    client: httpx.Client, grant_id: str, n: int, limit: int = 100, after: str | None = None
) -> list[dict]:
    got: list[dict] = []
    cursor = after
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


# --- lineage positions of HTTP-published records (issue 4) ----------------------------------------------
def _positions_in(ctx, topic: str, n: int) -> dict[str, tuple[int, int]]:
    """record id -> (partition, offset) of every record of ``topic``, read with a plain consumer."""
    consumer = Consumer(consumer_config(ctx.bootstrap, f"test-{time.monotonic_ns()}", ctx.settings))
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions_of(consumer, topic)])
        found: dict[str, tuple[int, int]] = {}

        def more() -> bool:
            for m in consumer.consume(1000, 0.2):
                if m.error() is None:
                    found[headers_of(m)[Header.RECORD_ID]] = (m.partition(), m.offset())
            return len(found) >= n

        poll_until(more, what=f"{n} records in {topic}")
        return found
    finally:
        consumer.close()


def test_r14_lineage_of_http_published_records_names_their_partition_and_offset(
    exchange, ctx, agency_factory
) -> None:
    _, auditor_key = agency_factory("auditor", roles=("auditor",))
    with api(exchange["stack"], exchange["market"]) as market:
        ids: list[str] = []
        for batch in range(3):
            answer = market.post(
                f"/v1/datasets/{exchange['ds']}/records",
                json={"records": [licence_record(batch * 10 + i) for i in range(10)]},
            ).json()
            ids += answer["record_ids"]
    assert len(ids) == 30
    where = _positions_in(ctx, ctx.topics.data(exchange["ds"]), 30)
    with api(exchange["stack"], auditor_key) as auditor:

        def position(rid: str) -> dict | None:
            r = auditor.get(f"/v1/lineage/records/{rid}")  # written by the gateway's ledger, shortly after
            return r.json()["position"] if r.status_code == 200 else None

        for rid in ids:
            pos = poll_until(lambda rid=rid: position(rid), what=f"lineage of {rid}")
            assert (pos["partition"], pos["offset"]) == where[rid], rid


# --- pooled readers (issue 7) ----------------------------------------------------------------------------
def _plane(exchange) -> Plane:
    plane = exchange["stack"]._app.state.data_plane
    assert plane is not None
    return plane


def test_r8_pooled_reads_return_each_record_once_in_order_across_many_pages(exchange, ctx) -> None:
    with api(exchange["stack"], exchange["market"]) as market:
        ids = []
        for batch in range(4):
            ids += market.post(
                f"/v1/datasets/{exchange['ds']}/records",
                json={"records": [licence_record(batch * 20 + i) for i in range(20)]},
            ).json()["record_ids"]
    where = _positions_in(ctx, ctx.topics.deliver(exchange["grant"]), 80)
    with api(exchange["stack"], exchange["psb"]) as psb:
        first = psb.get(f"/v1/grants/{exchange['grant']}/records", params={"limit": 7}).json()
        assert len(first["records"]) == 7  # every record is delivered already
        got = first["records"] + _read_all(psb, exchange["grant"], 73, limit=7, after=first["next"])
        pool = _plane(exchange).readers
        created, reused = pool.created, pool.reused
        assert len(got) == 80 and sorted(r["record_id"] for r in got) == sorted(ids)  # each record once
        for r in got:
            assert (r["partition"], r["offset"]) == where[r["record_id"]]
        per_partition: dict[int, list[int]] = {}
        for r in got:
            per_partition.setdefault(r["partition"], []).append(r["offset"])
        assert all(offsets == sorted(offsets) for offsets in per_partition.values())  # in order
        assert created == 1 and reused >= 11  # 12+ pages, the reader of each page went on to the next
        # an older cursor still means what it meant: everything after the first page, from a new reader
        again = _read_all(psb, exchange["grant"], 73, limit=50, after=first["next"])
        assert sorted(r["record_id"] for r in again) == sorted(r["record_id"] for r in got[7:])
        assert pool.created == 2


def test_r14_revoked_grant_is_not_served_from_a_pooled_reader(exchange) -> None:
    with api(exchange["stack"], exchange["market"]) as market:
        market.post(
            f"/v1/datasets/{exchange['ds']}/records", json={"records": [licence_record(i) for i in range(5)]}
        ).raise_for_status()
    with api(exchange["stack"], exchange["psb"]) as psb:

        def first_page() -> dict | None:
            page = psb.get(f"/v1/grants/{exchange['grant']}/records", params={"limit": 2, "wait": 1}).json()
            return page if page["records"] else None

        page = poll_until(first_page, what="a first page")
        pool = _plane(exchange).readers
        assert pool.idle_count(exchange["grant"]) == 1  # the reader waits at page["next"]
        with api(exchange["stack"], exchange["market"]) as market:
            market.post(
                f"/v1/grants/{exchange['grant']}/revoke", json={"reason": "end of inspection"}
            ).raise_for_status()
        resp = psb.get(f"/v1/grants/{exchange['grant']}/records", params={"after": page["next"]})
        assert resp.status_code == 409 and resp.json()["code"] == "grant.not_active"
        assert pool.idle_count(exchange["grant"]) == 0  # and its pooled reader is gone


def test_r14_sse_client_leaving_in_the_middle_of_a_read_never_crashes_the_gateway(exchange) -> None:
    """The stream's reader polls in a worker thread; the client going away closes it from another
    thread, which must wait for the poll to return (closing under a poll crashes librdkafka)."""
    with api(exchange["stack"], exchange["market"]) as market:
        market.post(
            f"/v1/datasets/{exchange['ds']}/records", json={"records": [licence_record(i) for i in range(3)]}
        ).raise_for_status()
    for _ in range(5):
        with api(exchange["stack"], exchange["psb"]) as psb:
            with psb.stream("GET", f"/v1/grants/{exchange['grant']}/stream") as resp:
                assert resp.status_code == 200
                for line in resp.iter_lines():
                    if line.startswith("event: record"):
                        break  # the stream is reading (it polls whenever it waits): leave now
            assert psb.get("/healthz").status_code == 200
    with api(exchange["stack"], exchange["psb"]) as psb:
        assert len(_read_all(psb, exchange["grant"], 3)) == 3  # and it still serves


def test_grant_reader_close_waits_for_a_read_in_another_thread(exchange, ctx) -> None:
    with api(exchange["stack"], exchange["market"]) as market:
        market.post(
            f"/v1/datasets/{exchange['ds']}/records", json={"records": [licence_record(1)]}
        ).raise_for_status()
    with api(exchange["stack"], exchange["psb"]) as psb:
        assert _read_all(psb, exchange["grant"], 1)
    grant = service.readable(ctx, agency("psb"), exchange["grant"])
    order: list[str] = []

    class Recording(GrantReader):
        def _read(self, limit: int, timeout: float) -> list:
            out = super()._read(limit, timeout)
            order.append("read returned")  # still holding the reader's lock
            return out

    reader = Recording(_plane(exchange), grant, {})
    assert len(reader.read(100, 5)) == 1
    order.clear()
    result: list[list] = []
    polling = threading.Thread(target=lambda: result.append(reader.read(100, 3.0)))  # nothing comes: 3 s
    polling.start()
    poll_until(reader._lock.locked, what="the read holding the reader")
    reader.close()  # from this thread, while the other one polls
    order.append("closed")
    assert order == ["read returned", "closed"]  # close waited for the poll
    poll_until(lambda: result, what="the read's answer")
    assert result == [[]]
    assert reader.read(100, 1.0) == []  # closed: reads nothing, touches no consumer
    polling.join(5)
