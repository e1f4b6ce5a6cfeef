"""Catalogue change events (R2) on ``bus.catalog``: Avro (``schemas/catalog_event.avsc``), key = dataset id.

Emitted after the change is committed, never inside the transaction: the store is the source of truth
and a follower that missed an event re-reads ``GET /v1/datasets``. Producing is non-blocking.
"""

from __future__ import annotations

import io
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import fastavro

from bus.context import BusContext
from bus.schemas import parsed_schema
from bus.store.models import Dataset
from bus.vocab import Header

log = logging.getLogger(__name__)
SCHEMA_NAME = "catalog_event"


def catalog_event(
    action: str,
    actor: str,
    ds: Dataset,
    *,
    decision: str | None = None,
    comment: str | None = None,
    audit_seq: int | None = None,
) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "at": datetime.now(UTC),
        "action": action,
        "actor": actor,
        "dataset": ds.id,
        "owner": ds.owner_id,
        "title": ds.title,
        "category": ds.category,
        "grade": ds.grade,
        "sharing_attribute": ds.sharing_attribute,
        "status": ds.status,
        "schema_version": ds.schema_version,
        "decision": decision,
        "comment": comment,
        "audit_seq": audit_seq,
    }


def encode(event: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_schema(SCHEMA_NAME), event)
    return buf.getvalue()


def decode(raw: bytes) -> dict[str, Any]:
    """For followers of ``bus.catalog`` (and tests): the event as a dict (``at`` is a UTC datetime)."""
    result = fastavro.schemaless_reader(io.BytesIO(raw), parsed_schema(SCHEMA_NAME), None)
    if not isinstance(result, dict):
        raise ValueError("a catalogue event decodes to a record")
    return result


def publish(ctx: BusContext, events: list[dict[str, Any]]) -> None:
    """Queue the events on ``bus.catalog``; a broker problem is logged, never fails the committed change."""
    if not events:
        return
    try:
        producer = ctx.producer
        for ev in events:
            producer.produce(
                ctx.topics.catalog,
                encode(ev),
                key=ev["dataset"].encode(),
                headers=[(Header.DATASET, ev["dataset"].encode()), ("bus-event", ev["action"].encode())],
            )
        producer.poll(0)
    except Exception:  # BufferError, KafkaException: the catalogue change stands; followers re-read the store
        log.warning(
            "could not queue %d catalogue event(s) on %s", len(events), ctx.topics.catalog, exc_info=True
        )
