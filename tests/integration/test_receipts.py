"""R14, R18: consumption receipts on ``bus.receipts`` become consumption lineage, only when genuine.

Receipts are produced as the SDK's ``Subscriber.ack()`` produces them (signed Avro, schemas/receipt.avsc)
to the real embedded broker; the receipts worker runs against the real store.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from typing import Any

import fastavro
import pytest
from sqlalchemy import func, select

from bus.context import BusContext
from bus.exchange.kafka import ensure_topics, new_producer
from bus.exchange.receipts import ReceiptsWorker
from bus.exchange.record_ids import new_record_id
from bus.exchange.signing import sign_record
from bus.keys import signing_secret_for
from bus.schemas import parsed_schema
from bus.store.models import AuditEvent, ConsumptionLineage, Grant, Incident
from tests.helpers import poll_until

pytestmark = pytest.mark.integration


def make_grant(ctx: BusContext, dataset: str, agency: str) -> str:
    gid = f"g{uuid.uuid4().hex[:8]}"
    with ctx.store.session() as s:
        s.add(
            Grant(
                id=gid,
                dataset_id=dataset,
                agency_id=agency,
                fields=["licence_no"],
                scenario_code="check",
                scenario_description="licence checks",
                legal_basis="law",
                status="active",
            )
        )
    return gid


def send_receipt(
    ctx: BusContext,
    *,
    grant: str,
    agency: str,
    key: str,
    record_ids: list[str],
    receipt_id: str | None = None,
    claimed_agency: str | None = None,
) -> str:
    """What ``Subscriber.ack()`` sends, signed with ``key`` (a forger signs with its own)."""
    body = {
        "grant_id": grant,
        "agency_id": claimed_agency or agency,
        "via": "sdk",
        "at": int(time.time() * 1000),
        "records": [{"record_id": r, "size": 42} for r in record_ids],
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_schema("receipt"), body)
    value = buf.getvalue()
    rid = receipt_id or new_record_id()
    publisher = claimed_agency or agency
    sig = sign_record(signing_secret_for(key), grant.encode(), value, rid, publisher, "bus.receipts", "1")
    producer = new_producer(ctx.bootstrap)
    producer.produce(
        ctx.topics.receipts,
        value,
        grant.encode(),
        headers=[
            ("bus-record-id", rid.encode()),
            ("bus-publisher", publisher.encode()),
            ("bus-dataset", b"bus.receipts"),
            ("bus-schema-version", b"1"),
            ("bus-grant", grant.encode()),
            ("bus-signature", sig.encode()),
        ],
    )
    assert producer.flush(10) == 0
    return rid


@pytest.fixture
def worker(ctx: BusContext) -> Iterator[ReceiptsWorker]:
    w = ReceiptsWorker(ctx)
    w.start()
    yield w
    w.stop()


def consumed(ctx: BusContext, grant: str) -> list[Any]:
    with ctx.store.session() as s:
        return list(
            s.scalars(
                select(ConsumptionLineage)
                .where(ConsumptionLineage.grant_id == grant)
                .order_by(ConsumptionLineage.record_id)
            )
        )


def test_r14_a_signed_receipt_becomes_consumption_lineage(
    ctx: BusContext, worker: ReceiptsWorker, agency_factory: Any, dataset_factory: Any
) -> None:
    owner, _ = agency_factory()
    psb, psb_key = agency_factory()
    ds = dataset_factory(owner)
    g = make_grant(ctx, ds, psb)
    ids = sorted(new_record_id() for _ in range(3))
    receipt = send_receipt(ctx, grant=g, agency=psb, key=psb_key, record_ids=ids)
    rows = poll_until(lambda: consumed(ctx, g), what="consumption rows")
    assert [(r.record_id, r.agency_id, r.via, r.dataset_id, r.size, r.receipt_id) for r in rows] == [
        (i, psb, "sdk", ds, 42, receipt) for i in ids
    ]
    with ctx.store.session() as s:
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "consumption.batch")).one()
    assert ev.actor == psb and ev.subject_id == g and ev.data["count"] == 3


def test_r14_a_replayed_receipt_is_counted_once(
    ctx: BusContext, worker: ReceiptsWorker, agency_factory: Any, dataset_factory: Any
) -> None:
    owner, _ = agency_factory()
    psb, psb_key = agency_factory()
    g = make_grant(ctx, dataset_factory(owner), psb)
    ids = [new_record_id()]
    receipt = send_receipt(ctx, grant=g, agency=psb, key=psb_key, record_ids=ids)
    poll_until(lambda: consumed(ctx, g), what="first receipt recorded")
    send_receipt(ctx, grant=g, agency=psb, key=psb_key, record_ids=ids, receipt_id=receipt)  # replay
    marker = send_receipt(ctx, grant=g, agency=psb, key=psb_key, record_ids=[new_record_id()])
    poll_until(lambda: any(r.receipt_id == marker for r in consumed(ctx, g)), what="later receipt recorded")
    assert [r.receipt_id for r in consumed(ctx, g)].count(receipt) == 1


def test_r8_forged_or_foreign_receipts_are_refused_and_raise_incidents(
    ctx: BusContext, worker: ReceiptsWorker, agency_factory: Any, dataset_factory: Any
) -> None:
    owner, _ = agency_factory()
    psb, psb_key = agency_factory()
    tax, tax_key = agency_factory()
    g = make_grant(ctx, dataset_factory(owner), psb)
    # tax claims to be psb but signs with its own key; then tax acknowledges psb's grant as itself
    send_receipt(ctx, grant=g, agency=tax, key=tax_key, record_ids=[new_record_id()], claimed_agency=psb)
    send_receipt(ctx, grant=g, agency=tax, key=tax_key, record_ids=[new_record_id()])
    poll_until(lambda: worker.refused == 2, what="both receipts refused")
    assert consumed(ctx, g) == []
    with ctx.store.session() as s:
        assert s.scalar(select(func.count()).select_from(Incident)) >= 1


def test_r14_worker_starts_before_the_receipts_topic_exists(
    ctx: BusContext, agency_factory: Any, dataset_factory: Any
) -> None:
    w = ReceiptsWorker(ctx)
    w.start()
    try:
        poll_until(w.healthy, what="receipts worker healthy")
        ensure_topics(ctx.bootstrap, [ctx.topics.receipts])  # idempotent: the worker created it
        assert w.last_error is None
    finally:
        w.stop()
