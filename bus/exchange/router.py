"""The router (R5, R7, R8, R10, R12): ``data.<dataset>`` -> ``deliver.<grant>`` for every active grant.

One read of a dataset's records serves all its grants. Per grant, each record is projected to the
granted fields, personal fields masked, sensitive fields pseudonymised with the grant's key, and
produced with the grant's view schema, stamped ``bus-grant`` and ``bus-scenario``; ``bus-record-id``
and the trace headers pass through so consumers drop duplicates and traces continue. A grant carries
the records accepted (``bus-published-at``) while it is active: nothing from before its approval.

The set of deliverable grants is re-checked every batch (`PolicyCache.fresh`: one Redis GET, and a
store read only when a change was announced), so revocation, suspension and expiry stop delivery
within a second. When the policy cannot be checked the batch is not delivered and is retried (fail
closed). Offsets are committed only after every delivery of the batch is acknowledged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message, Producer

from bus.context import BusContext
from bus.errors import RecordInvalid
from bus.exchange.batch_worker import BatchWorker
from bus.exchange.kafka import ProduceHeaders, headers_of, topic_of
from bus.exchange.ledger import Ledger
from bus.exchange.policy_cache import DatasetState, GrantState, PolicySnapshot, parsed_schema
from bus.exchange.publishing import decode_exact
from bus.lineage import tracing
from bus.lineage.recorder import position_callback
from bus.policy.projection import (
    SharedView,
    ViewEncoder,
    compile_view_encoder,
    field_rules,
    rules_key,
    shared_view,
)
from bus.policy.pseudonyms import grant_key, grant_tag
from bus.vocab import Header

log = logging.getLogger(__name__)

EXPIRY_SWEEP_INTERVAL = 2.0
_DROPPED_HEADERS = frozenset({Header.SIGNATURE, Header.GRANT, Header.SCENARIO, *tracing.TRACE_HEADERS})


@dataclass(frozen=True)
class Route:
    """Everything needed to deliver one dataset record under one grant, compiled once per grant version."""

    grant: GrantState
    topic: str
    shared: SharedView  # the same object for every grant with the same rules on the same schema version
    encode: ViewEncoder  # (record, shared.parts(record)) -> the encoded view (fastavro's bytes)
    headers: ProduceHeaders  # appended to every delivery's headers (never mutated)


def compile_route(
    ctx: BusContext, ds: DatasetState, grant: GrantState, shared: dict[tuple[Any, ...], SharedView]
) -> Route:
    rules = field_rules(ds.schema, grant.fields, grant.unmasked_fields)
    skey = (ds.id, ds.schema_version, rules_key(rules))
    view = shared.get(skey)
    if view is None:
        view = shared[skey] = shared_view(ds.schema, rules)
    return Route(
        grant=grant,
        topic=ctx.topics.deliver(grant.id),
        shared=view,
        encode=compile_view_encoder(
            view, grant_key(ctx.master_secret, grant.id), grant_tag(ctx.master_secret, grant.id)
        ),
        headers=[(Header.GRANT, grant.id.encode()), (Header.SCENARIO, grant.scenario_code.encode())],
    )


class Router(BatchWorker):
    name = "router"

    def __init__(self, ctx: BusContext, *, group: str | None = None, **kw: Any) -> None:
        super().__init__(
            ctx,
            topic_prefix=ctx.topics.data(""),
            group=group,
            **kw,
        )
        self.ledger = Ledger(ctx)
        self._compiled: dict[tuple[str, int, int], Route] = {}
        self._shared: dict[tuple[Any, ...], SharedView] = {}
        self._rows: list[dict[str, Any]] = []
        self._spans: tracing.ConsumeBatch | None = None
        self._next_sweep = 0.0
        self.delivered = 0
        self.skipped_invalid = 0

    def idle(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + EXPIRY_SWEEP_INTERVAL
            try:
                from bus.grants.service import expire_due

                expire_due(self.ctx)
            except Exception:
                log.debug("expiry sweep failed; retrying later", exc_info=True)

    def routes(self, snap: PolicySnapshot, dataset_id: str, now: datetime) -> list[Route]:
        ds = snap.datasets.get(dataset_id)
        if ds is None:
            return []
        out = []
        for g in snap.deliverable_grants(dataset_id, now):
            key = (g.id, g.version, ds.schema_version)
            route = self._compiled.get(key)
            if route is None:
                route = self._compiled[key] = compile_route(self.ctx, ds, g, self._shared)
            out.append(route)
        return out

    def process(self, msgs: list[Message], producer: Producer) -> None:
        spans = self._spans = tracing.consume_messages("process", msgs, group=self.group_id)
        snap = self.cache.fresh()
        now = datetime.now(UTC)
        plen = len(self.topic_prefix)
        routes_of: dict[str, list[Route]] = {}
        readers: dict[tuple[str, bytes], tuple[Any, Any]] = {}
        rows = self._rows = []
        produce = producer.produce
        on_delivery = self._on_delivery
        for m in msgs:
            dataset_id = topic_of(m)[plen:]
            routes = routes_of.get(dataset_id)
            if routes is None:
                routes = routes_of[dataset_id] = self.routes(snap, dataset_id, now)
            if not routes:
                continue
            consumed = headers_of(m)
            headers: ProduceHeaders = [(k, v) for k, v in consumed if k not in _DROPPED_HEADERS]
            record_id = version = published = b""
            for k, v in consumed:  # none of the names read here is dropped
                if k == Header.RECORD_ID:
                    record_id = v or b""
                elif k == Header.SCHEMA_VERSION:
                    version = v or b""
                elif k == Header.PUBLISHED_AT:
                    published = v or b""
            published_ms = int(published) if published.isdigit() else 0
            try:
                record = self._decode(snap, dataset_id, version, m.value() or b"", readers)
            except RecordInvalid as err:  # the validator let it through: never stop the stream on it
                self.skipped_invalid += 1
                log.warning(
                    "router: skipping undecodable record %r of %s: %s", record_id, dataset_id, err.detail
                )
                continue
            key = m.key()
            rid = record_id.decode()
            trace_id = spans.trace_id_of(m)
            headers += spans.headers_of(m)  # same trace id, this hop as parent
            parts_of: dict[int, list[bytes]] = {}  # one projection per distinct rule set, per record
            for r in routes:
                if published_ms < r.grant.active_since_ms:
                    continue  # accepted before this grant was active: not part of it
                parts = parts_of.get(id(r.shared))
                if parts is None:
                    parts = parts_of[id(r.shared)] = r.shared.parts(record)
                value = r.encode(record, parts)
                g = r.grant
                row = {
                    "record_id": rid,
                    "grant_id": g.id,
                    "dataset_id": dataset_id,
                    "agency_id": g.agency_id,
                    "scenario_code": g.scenario_code,
                    "delivered_at": now,
                    "partition": None,
                    "offset": None,
                    "size": len(value),
                    "trace_id": trace_id,
                }
                rows.append(row)
                produce(
                    r.topic,
                    value,
                    key,
                    headers=headers + r.headers,
                    on_delivery=position_callback(row, on_delivery),  # fills partition and offset
                )
        producer.poll(0)  # once per batch: serving delivery reports per record costs more than routing it

    def _decode(
        self,
        snap: PolicySnapshot,
        dataset_id: str,
        version: bytes,
        value: bytes,
        readers: dict[tuple[str, bytes], tuple[Any, Any]],
    ) -> dict[str, Any]:
        pair = readers.get((dataset_id, version))
        if pair is None:
            ds = snap.datasets[dataset_id]
            try:
                v = int(version)
                writer_schema = ds.schemas[v]
            except (ValueError, KeyError):
                raise RecordInvalid(f"unknown schema version {version!r}") from None
            writer = parsed_schema(dataset_id, v, writer_schema)
            reader = (
                None if v == ds.schema_version else parsed_schema(dataset_id, ds.schema_version, ds.schema)
            )
            pair = readers[(dataset_id, version)] = (writer, reader)
        return decode_exact(value, pair[0], pair[1])

    def after_delivery(self) -> None:
        self._end_spans()
        rows, self._rows = self._rows, []
        self.ledger.delivered(rows)
        self.delivered += len(rows)

    def discard_batch(self) -> None:
        self._end_spans("batch not delivered; retrying")
        self._rows = []

    def _end_spans(self, error: str | None = None) -> None:
        spans, self._spans = self._spans, None
        if spans is not None:
            if error:
                spans.fail(error)
            spans.end()


def make_worker(ctx: BusContext, group: str | None = None) -> Router:
    return Router(ctx, group=group)
