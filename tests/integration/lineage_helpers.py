"""Helpers of the lineage tests: a small world of lineage rows written through ``LineageRecorder``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bus.context import BusContext
from bus.lineage.recorder import LineageRecorder
from bus.store.models import Grant

T0 = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)


def make_grant(ctx: BusContext, dataset: str, agency: str, scenario: str = "market-supervision") -> str:
    gid = f"g{uuid.uuid4().hex[:8]}"
    with ctx.store.session() as s:
        s.add(
            Grant(
                id=gid,
                dataset_id=dataset,
                agency_id=agency,
                fields=["licence_no", "status"],
                scenario_code=scenario,
                scenario_description=f"{scenario} duties",
                legal_basis="law",
                status="active",
            )
        )
    return gid


def rid(i: int) -> str:
    return f"{i:032x}"


class World:
    """One dataset published by its owner, two grants to two agencies, one of which consumed."""

    def __init__(self, ctx: BusContext, agency_factory: Any, dataset_factory: Any) -> None:
        self.ctx = ctx
        self.owner, _ = agency_factory()
        self.tax, _ = agency_factory()
        self.health, _ = agency_factory()
        self.dataset = dataset_factory(self.owner)
        self.g_tax = make_grant(ctx, self.dataset, self.tax, "tax-audit")
        self.g_health = make_grant(ctx, self.dataset, self.health, "epidemic-response")
        self.rec = LineageRecorder(ctx.store)
        self.trace = "ab" * 16

    def publish(self, n: int = 10, refused: int = 2) -> None:
        rows = [
            {
                "record_id": rid(i),
                "dataset_id": self.dataset,
                "publisher_id": self.owner,
                "published_at": T0 + timedelta(seconds=i),
                "trace_id": self.trace,
                "outcome": "accepted",
                "schema_version": 1,
                "size": 100 + i,
                "partition": 0,
                "offset": i,
            }
            for i in range(n)
        ]
        rows += [
            {
                "record_id": rid(1000 + i),
                "dataset_id": self.dataset,
                "publisher_id": self.owner,
                "published_at": T0,
                "outcome": "record.invalid",
                "schema_version": 1,
                "size": 50,
            }
            for i in range(refused)
        ]
        self.rec.published(rows)

    def deliver(self, grant: str, agency: str, scenario: str, ids: range) -> None:
        self.rec.delivered(
            [
                {
                    "record_id": rid(i),
                    "grant_id": grant,
                    "dataset_id": self.dataset,
                    "agency_id": agency,
                    "scenario_code": scenario,
                    "delivered_at": T0 + timedelta(seconds=i, milliseconds=40),
                    "partition": 1,
                    "offset": i,
                    "size": 60,
                    "trace_id": self.trace,
                }
                for i in ids
            ]
        )

    def consume(self, grant: str, agency: str, ids: range, via: str = "sdk") -> None:
        self.rec.consumed(
            [
                {
                    "record_id": rid(i),
                    "grant_id": grant,
                    "agency_id": agency,
                    "via": via,
                    "consumed_at": int((T0 + timedelta(minutes=1)).timestamp() * 1000),
                    "size": 60,
                }
                for i in ids
            ]
        )

    def full(self) -> World:
        self.publish()
        self.deliver(self.g_tax, self.tax, "tax-audit", range(10))
        self.deliver(self.g_health, self.health, "epidemic-response", range(10))
        self.consume(self.g_tax, self.tax, range(10))
        return self
