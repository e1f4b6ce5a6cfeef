"""R2: catalogue changes travel as Avro events (schemas/catalog_event.avsc) that followers decode."""

from __future__ import annotations

from bus.catalog import events
from bus.store.models import Dataset


def test_r2_catalog_event_round_trips_through_avro() -> None:
    ds = Dataset(
        id="market-licences",
        owner_id="market",
        title="Licences",
        category="basic",
        grade="general",
        sharing_attribute="unconditional",
        status="approved",
        schema_version=2,
    )
    ev = events.catalog_event("dataset.reviewed", "dmd", ds, decision="approve", comment="ok", audit_seq=7)
    out = events.decode(events.encode(ev))
    assert out["event_id"] == ev["event_id"] and out["at"].tzinfo is not None
    assert {
        k: out[k]
        for k in (
            "action",
            "actor",
            "dataset",
            "owner",
            "status",
            "schema_version",
            "decision",
            "comment",
            "audit_seq",
        )
    } == {
        "action": "dataset.reviewed",
        "actor": "dmd",
        "dataset": "market-licences",
        "owner": "market",
        "status": "approved",
        "schema_version": 2,
        "decision": "approve",
        "comment": "ok",
        "audit_seq": 7,
    }
