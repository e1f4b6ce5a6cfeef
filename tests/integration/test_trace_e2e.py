"""R14: one record, one trace id, publisher to consumer, and a lineage that lists exactly what happened.

Real embedded broker and Redis, the real pipeline and receipts worker, the SDK on both ends;
spans are read back from OpenTelemetry's in-memory exporter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from bus.context import BusContext
from bus.exchange.receipts import ReceiptsWorker
from bus.lineage import audit, queries, tracing
from bus.lineage.usage import query_usage
from bus.store.models import ConsumptionLineage, RecordLineage
from tests.helpers import licence_record, poll_until
from tests.integration.dataplane_helpers import api, grant, publisher, receive, subscriber

pytestmark = pytest.mark.integration


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = tracing.attach(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.detach(processor)


@pytest.fixture
def receipts(ctx: BusContext) -> Iterator[ReceiptsWorker]:
    worker = ReceiptsWorker(ctx)
    worker.start()
    yield worker
    worker.stop()


def _trace(spans: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]


def test_r14_one_trace_id_from_sdk_publisher_through_the_pipeline_to_sdk_subscriber(
    ctx: BusContext,
    agency_factory: Any,
    dataset_factory: Any,
    data_plane: Any,
    receipts: ReceiptsWorker,
    spans: InMemorySpanExporter,
) -> None:
    market, market_key = agency_factory()
    psb, psb_key = agency_factory()
    tax, tax_key = agency_factory()
    ds = dataset_factory(market)
    g_psb = grant(ctx, psb, ds, scenario="licence-check")
    g_tax = grant(ctx, tax, ds, ["licence_no", "status"], scenario="tax-registration")
    with publisher(ctx, market, market_key, ds) as pub:
        ids = [pub.publish(licence_record(i)) for i in range(3)]
        pub.flush()
    (sdk_send,) = [s for s in spans.get_finished_spans() if s.name == f"send {ctx.topics.ingress(ds)}"]
    trace_id = f"{sdk_send.context.trace_id:032x}"  # the SDK started the trace: one span for the batch
    with subscriber(ctx, psb, psb_key, g_psb["id"]) as sub:
        got = receive(sub, 3)
        sub.ack()
    with subscriber(ctx, tax, tax_key, g_tax["id"]) as sub:
        receive(sub, 3)  # received, never acknowledged
    # every hop of the record's journey is a span of the same trace
    chain = poll_until(
        lambda: (t := _trace(spans, trace_id)) and len({s.name for s in t}) >= 4 and t,
        what="spans of every hop",
    )

    def named(name: str) -> list[ReadableSpan]:
        return [s for s in chain if s.name == name]

    # a hop may take the three records in more than one batch or poll: each batch is a span of the trace
    (send,) = named(f"send {ctx.topics.ingress(ds)}")
    validates = named(f"process {ctx.topics.ingress(ds)}")  # the pipeline: validated and routed in one pass
    receives = {g["id"]: named(f"receive {ctx.topics.deliver(g['id'])}") for g in (g_psb, g_tax)}
    assert validates and all(v.parent.span_id == send.context.span_id for v in validates)
    validate = validates[0]
    route_ids = {v.context.span_id for v in validates}
    assert all(receives.values()), f"a subscriber's receive span is missing: {receives}"
    assert all(s.parent.span_id in route_ids for spans_of in receives.values() for s in spans_of)
    assert send.attributes["messaging.batch.message_count"] == 3
    assert validate.attributes["messaging.consumer.group.name"] == data_plane[0].group_id
    assert all(d.headers["traceparent"].split("-")[1] == trace_id for d in got)

    # lineage of one record: exactly the deliveries and the one consumption that happened
    def lineage() -> dict[str, Any]:
        with ctx.store.session() as s:
            out = queries.record_lineage(s, ids[1])
        return out if out["consumptions"] else {}

    out = poll_until(lineage, what="consumption recorded from the receipt")
    assert out["publisher"] == market and out["trace_id"] == trace_id
    assert out["validation"] == {"outcome": "accepted", "code": None}
    assert out["position"]["partition"] is not None and out["position"]["offset"] is not None
    deliveries = {d["grant"]: d for d in out["deliveries"]}
    assert set(deliveries) == {g_psb["id"], g_tax["id"]}
    assert deliveries[g_tax["id"]]["scenario"]["code"] == "tax-registration"
    assert deliveries[g_tax["id"]]["agency"] == tax
    assert all(d["trace_id"] == trace_id and d["offset"] is not None for d in deliveries.values())
    assert [(c["grant"], c["agency"], c["via"]) for c in out["consumptions"]] == [(g_psb["id"], psb, "sdk")]
    assert deliveries[g_tax["id"]]["consumed"] == []

    # metering equals what was sent, and the whole log still verifies
    with ctx.store.session() as s:
        usage = query_usage(s, dataset=ds, by="total")["totals"]
        sizes = dict(
            s.execute(
                select(RecordLineage.record_id, RecordLineage.size).where(RecordLineage.record_id.in_(ids))
            ).all()
        )
        consumed = s.scalars(
            select(ConsumptionLineage).where(ConsumptionLineage.grant_id == g_psb["id"])
        ).all()
    assert usage["published"] == {"records": 3, "bytes": sum(sizes.values())}
    assert usage["delivered"]["records"] == 6
    assert usage["consumed"] == {"records": 3, "bytes": sum(c.size for c in consumed)}
    assert sum(d.size for d in got) == usage["consumed"]["bytes"]
    assert audit.verify(ctx.store)["ok"]


def test_r14_http_publish_continues_the_callers_trace_and_the_embedded_bus_keeps_the_spans(
    ctx: BusContext,
    bus_stack: Any,
    agency_factory: Any,
    dataset_factory: Any,
    spans: InMemorySpanExporter,
) -> None:
    """An agency system that traces sends ``traceparent``; the bus's spans join that trace, lineage
    keeps its id, HTTP consumption is recorded, and without a collector the spans land in the store."""
    market, market_key = agency_factory()
    psb, psb_key = agency_factory()
    auditor, auditor_key = agency_factory(roles=("auditor",))
    ds = dataset_factory(market)
    g = grant(ctx, psb, ds)
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    with api(bus_stack, market_key) as http:
        r = http.post(
            f"/v1/datasets/{ds}/records",
            json={"records": [licence_record(1), licence_record(2)]},
            headers={"traceparent": f"00-{caller}-00f067aa0ba902b7-01"},
        )
    assert r.status_code == 200, r.text
    rid = r.json()["record_ids"][0]
    with api(bus_stack, psb_key) as http:
        got = poll_until(lambda: http.get(f"/v1/grants/{g['id']}/records").json()["records"], what="delivery")
    assert rid in {d["record_id"] for d in got}

    names = poll_until(
        lambda: (
            # one hop: the gateway decides and produces to data.<dataset> and deliver.<grant> itself
            {s.name for s in _trace(spans, caller)} >= {f"send {ctx.topics.data(ds)}"}
            and {s.name for s in _trace(spans, caller)}
        ),
        what="bus spans in the caller's trace",
    )
    assert any(s.kind.name == "SERVER" for s in _trace(spans, caller))  # the gateway's HTTP span
    assert f"send {ctx.topics.data(ds)}" in names

    with api(bus_stack, auditor_key) as http:
        out = poll_until(
            lambda: (b := http.get(f"/v1/lineage/records/{rid}").json()).get("consumptions") and b,
            what="HTTP consumption in the lineage",
        )
        assert out["trace_id"] == caller
        assert [(c["agency"], c["via"]) for c in out["consumptions"]] == [(psb, "http")]
        bus_stack.tracing.flush()
        stored = http.get(f"/v1/lineage/records/{rid}").json()["spans"]
    assert {s["name"] for s in stored} >= {f"send {ctx.topics.data(ds)}"}
