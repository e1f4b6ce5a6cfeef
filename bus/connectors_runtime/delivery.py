"""Where connectors meet the bus: sources' publisher, sinks' reader of a grant's delivered view."""

from __future__ import annotations

import contextlib
import io
import json
import time
from typing import Any

import fastavro

from bus.context import BusContext
from bus.exchange.record_ids import derived_record_id
from bus.grants.keys import GrantKeys
from bus.keys import derive
from bus.store.models import Dataset, Grant, SchemaVersion
from bus.vocab import Header
from connectors.base import (
    PermanentFailure,
    SinkContext,
    SinkRecord,
    SourceRecord,
)


def make_publisher(
    ctx: BusContext,
    agency_id: str,
    signing_secret_hex: str,
    dataset_id: str,
    schema: dict[str, Any],
    schema_version: int,
) -> Any:
    """A ``bus.client.Publisher`` signing as ``agency_id`` with its stored signing secret."""
    from bus.client import Publisher

    return Publisher.with_signing_secret(
        ctx.bootstrap,
        agency_id,
        bytes.fromhex(signing_secret_hex),
        dataset_id,
        schema,
        schema_version,
        topic_prefix=ctx.topics.prefix,
        max_record_bytes=ctx.settings.max_record_bytes,
    )


class SourceRecordIds:
    """The ``bus-record-id`` of each source record: derived from where it came from, not drawn at random.

    HMAC (a sub-key of the bus's master secret) over the connector's identity (name, registration time,
    dataset), the record's ``position_id`` in the source and its content (key and value). Re-reading a
    batch after a crash (published, position not yet saved) yields the same ids, so consumers that drop
    duplicates by record id drop the repeat and lineage keeps one row per source record. The content is
    part of it so a record that changed at the same place (a file truncated and rewritten, a row updated
    in between) is new data with a new id, never mistaken for a repeat. A record without a
    ``position_id`` (MQTT) gets a new, time-ordered id.
    """

    LABEL = "connector-record-ids"

    def __init__(self, master_secret: bytes, connector: str, created_at: str, dataset_id: str) -> None:
        self._key = derive(master_secret, self.LABEL)
        self._connector = (connector, created_at, dataset_id)

    def of(self, record: SourceRecord) -> str | None:
        """The record's id, or ``None`` (a new one is made) when its source has no replayable position."""
        if record.position_id is None:
            return None
        content = json.dumps(
            [record.key, record.value], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
        return derived_record_id(self._key, *self._connector, record.position_id, content)


def grant_view_schema(session: Any, grant: Grant, version: int | None = None) -> dict[str, Any]:
    """The Avro schema of what ``grant`` delivers for one dataset schema version (default: current)."""
    from bus.policy.projection import field_rules, view_schema

    if version is None:
        ds = session.get(Dataset, grant.dataset_id)
        version = ds.schema_version
    sv = session.get(SchemaVersion, (grant.dataset_id, version))
    if sv is None:
        raise PermanentFailure(f"dataset {grant.dataset_id} has no schema version {version}")
    schema = dict(sv.schema)
    rules = field_rules(schema, list(grant.fields or []), list(grant.unmasked_fields or []))
    return view_schema(schema, rules, grant.id)


class DeliveryReader:
    """Reads ``deliver.<grant>`` from the offsets kept in the connector's row.

    The embedded broker forgets committed offsets when it restarts; the store does not, so positions
    live there (saved by the loop after each written batch). Records are decoded with the grant's view
    schema, as the SDK's ``Subscriber`` does.
    """

    def __init__(self, ctx: BusContext, name: str, context: SinkContext, position: dict[str, Any]) -> None:
        from bus.exchange.kafka import new_consumer

        self.ctx = ctx
        self.grant_id = context.grant_id
        self.topic = ctx.topics.deliver(context.grant_id)
        self.group = f"{ctx.topics.prefix}connector.{name}"
        self.consumer = new_consumer(ctx.bootstrap, self.group, ctx.settings)
        self._views: dict[str, Any] = {}
        self.saved = {int(p): int(o) for p, o in (position.get("offsets") or {}).items()}
        self.next = dict(self.saved)
        self.undecodable: list[tuple[bytes, str, dict[str, str]]] = []
        self.keys = GrantKeys(ctx)
        self.dropped = 0  # records on the topic the bus did not deliver (never written to the sink)
        self._assigned = False
        self._next_try = 0.0

    def _assign(self) -> bool:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        from bus.exchange.kafka import partitions_of

        if time.monotonic() < self._next_try:
            return False
        self._next_try = time.monotonic() + 0.5
        parts = partitions_of(self.consumer, self.topic)
        if not parts:
            return False  # the router has not delivered anything under this grant yet
        self.consumer.assign(
            [TopicPartition(self.topic, p, self.saved.get(p, OFFSET_BEGINNING)) for p in parts]
        )
        self.next = dict(self.saved)
        self._assigned = True
        return True

    def poll(self, max_records: int, timeout: float) -> list[SinkRecord]:
        from bus.exchange.delivered import open_delivered
        from bus.exchange.kafka import position_of

        if not self._assigned and not self._assign():
            time.sleep(timeout)
            return []
        out: list[SinkRecord] = []
        msgs: list[Any] = self.consumer.consume(max_records, timeout)
        for m in msgs:
            if m.error() is None:
                _, partition, offset = position_of(m)
                self.next[partition] = offset + 1  # past dropped records too
        opened, dropped = open_delivered(self.keys, self.grant_id, msgs)
        if dropped is not None:
            from bus.lineage.incidents import record_violations

            self.dropped += len(dropped.reasons)
            record_violations(self.ctx, [dropped.violation(None, None)])
        for o in opened:
            try:
                value: Any = fastavro.schemaless_reader(io.BytesIO(o.value), self._view(o.headers))
            except Exception as exc:  # not written with this view: dead-letter it rather than stall
                self.undecodable.append((o.value, f"cannot decode with the grant's view schema: {exc}", o.headers))
                continue
            out.append(SinkRecord(o.meta.record_id, value, o.headers))
        return out

    def _view(self, headers: dict[str, str]) -> Any:
        """The parsed view schema the router wrote this record with (by its dataset schema version)."""
        from bus.policy.projection import strip_logical_types

        version = headers.get(Header.SCHEMA_VERSION, "")
        parsed = self._views.get(version)
        if parsed is None:
            with self.ctx.store.session() as s:
                grant = s.get(Grant, self.grant_id)
                if grant is None:
                    raise PermanentFailure(f"grant {self.grant_id} no longer exists")
                view = grant_view_schema(s, grant, int(version) if version.isdigit() else None)
            parsed = self._views[version] = fastavro.parse_schema(strip_logical_types(view), named_schemas={})
        return parsed

    def position(self) -> dict[str, Any]:
        """The offsets after everything polled; becomes the saved position once the batch is written."""
        self.saved = dict(self.next)
        return {"offsets": {str(p): o for p, o in sorted(self.saved.items())}}

    def rewind(self) -> None:
        """Forget what was polled since the last saved position (e.g. a batch withheld after a revocation)."""
        if self._assigned:
            self.consumer.unassign()
        self._assigned = False
        self._next_try = 0.0
        self.undecodable.clear()

    def lag(self) -> int | None:
        """Records delivered under the grant and not yet written (from the last fetch's high watermarks)."""
        from confluent_kafka import TopicPartition

        if not self._assigned:
            return None
        total = 0
        for tp in self.consumer.assignment():
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), cached=True
            )
            if high >= 0:
                total += max(0, high - max(self.next.get(tp.partition, low), low))
        return total

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close()


# --- the supervisor ----------------------------------------------------------------------------------
