"""The validator (R1, R9, R13, R14): ``ingress.<dataset>`` -> ``data.<dataset>`` or ``rejected.<dataset>``.

A record passes only if it is for an approved dataset, written by that dataset's owner, carries a
valid signature under the owner's signing secret (a forged ``bus-publisher`` header cannot pass),
names a schema version it decodes with exactly, is under the size limit, and does not re-collect or
forward another agency's data. Accepted records keep their bytes and get the bus headers; refused
ones go to ``rejected.<dataset>`` with ``bus-error-code`` and ``bus-error-detail`` (the publisher's
receipt, read by ``Publisher.rejections()``). A poison record is refused like any other: the stream
never stops on it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message, Producer

from bus.context import BusContext
from bus.errors import BusError, RecordInvalid, RecordUnauthenticated
from bus.exchange.batch_worker import BatchWorker, header_map
from bus.exchange.fingerprints import FingerprintGuard
from bus.exchange.kafka import ProduceHeaders, headers_of, topic_of
from bus.exchange.ledger import Ledger, PublishBatch
from bus.exchange.policy_cache import PolicySnapshot, parsed_schema
from bus.exchange.publishing import admission, decode_exact, too_large
from bus.exchange.record_ids import is_record_id, new_record_id
from bus.exchange.signing import Signer
from bus.lineage import tracing
from bus.lineage.recorder import position_callback
from bus.lineage.subjects import record_subjects
from bus.vocab import Header

VIOLATION_CODES = frozenset(
    {"record.unauthenticated", "recollection.detected", "forwarding.detected", "suspended", "auth.forbidden"}
)


class _Pending:
    """One decoded, authenticated record waiting for the fingerprint check."""

    __slots__ = ("msg", "record_id", "record", "version", "trace_id")

    def __init__(
        self, msg: Message, record_id: str, record: dict[str, Any], version: int, trace_id: str | None
    ) -> None:
        self.msg, self.record_id, self.record, self.version, self.trace_id = (
            msg,
            record_id,
            record,
            version,
            trace_id,
        )


class Validator(BatchWorker):
    name = "validator"

    def __init__(self, ctx: BusContext, *, group: str | None = None, **kw: Any) -> None:
        super().__init__(
            ctx,
            topic_prefix=ctx.topics.ingress(""),
            group=group,
            **kw,
        )
        self.ledger = Ledger(ctx)
        self.guard = FingerprintGuard(ctx)
        self.limit = ctx.settings.max_record_bytes
        self._signers: dict[tuple[str, bytes], Signer] = {}
        self._batch: PublishBatch | None = None
        self._remember: list[tuple[str, str, list[dict[str, Any]], list[str]]] = []
        self._spans: tracing.ConsumeBatch | None = None
        self.accepted = 0
        self.refused = 0

    def _signer(self, agency_id: str, secret: bytes) -> Signer:
        signer = self._signers.get((agency_id, secret))
        if signer is None:
            signer = self._signers[(agency_id, secret)] = Signer(secret)
        return signer

    def process(self, msgs: list[Message], producer: Producer) -> None:
        spans = self._spans = tracing.consume_messages("process", msgs, group=self.group_id)
        snap = self.cache.fresh()
        now = datetime.now(UTC)
        now_ms = str(int(now.timestamp() * 1000)).encode()
        batch = PublishBatch(via="validator")
        plen = len(self.topic_prefix)
        pending: dict[tuple[str, str], list[_Pending]] = defaultdict(list)
        admitted: dict[tuple[str, str], BusError | None] = {}

        for m in msgs:
            dataset_id = topic_of(m)[plen:]
            h = header_map(headers_of(m))
            value = m.value() or b""
            raw_id = h.get(Header.RECORD_ID, b"").decode("utf-8", "replace")
            publisher = h.get(Header.PUBLISHER, b"").decode("utf-8", "replace")
            version_text = h.get(Header.SCHEMA_VERSION, b"").decode("utf-8", "replace")
            trace_id = spans.trace_id_of(m)
            try:
                if len(value) > self.limit:
                    raise too_large(len(value), self.limit)
                if not is_record_id(raw_id):
                    raise RecordUnauthenticated(
                        "missing or malformed bus-record-id: records are signed with "
                        "their id (use the SDK Publisher)"
                    )
                agency = snap.agencies.get(publisher)
                signature = h.get(Header.SIGNATURE, b"").decode("ascii", "replace")
                if agency is None or not self._signer(publisher, agency.signing_secret).verify(
                    signature, m.key(), m.value(), raw_id, publisher, dataset_id, version_text
                ):
                    raise RecordUnauthenticated(
                        f"the signature does not prove the record was written by "
                        f"{publisher or 'the named publisher'} (R14)"
                    )
                key = (dataset_id, publisher)
                if key not in admitted:
                    admitted[key] = admission(snap, dataset_id, publisher)
                refusal = admitted[key]
                if refusal is not None:
                    raise refusal
                record, version = self._decode(snap, dataset_id, version_text, value)
            except BusError as err:
                self._refuse(
                    producer, batch, m, dataset_id, raw_id, publisher, version_text, trace_id, err, now
                )
                continue
            pending[(dataset_id, publisher)].append(_Pending(m, raw_id, record, version, trace_id))

        self._remember = []
        for (dataset_id, publisher), items in pending.items():
            verdicts = self.guard.check_batch(dataset_id, publisher, [p.record for p in items])
            kept: list[_Pending] = []
            for p, verdict in zip(items, verdicts, strict=True):
                if verdict is None:
                    kept.append(p)
                else:
                    self._refuse(
                        producer,
                        batch,
                        p.msg,
                        dataset_id,
                        p.record_id,
                        publisher,
                        str(p.version),
                        p.trace_id,
                        verdict,
                        now,
                    )
            data_topic = self.ctx.topics.data(dataset_id)
            for p in kept:
                m = p.msg
                headers: ProduceHeaders = [
                    (k, v)
                    for k, v in headers_of(m)
                    if not k.startswith("bus-") and k not in tracing.TRACE_HEADERS
                ]
                headers += spans.headers_of(m)  # same trace id, this hop as parent
                headers += [
                    (Header.RECORD_ID, p.record_id.encode()),
                    (Header.PUBLISHER, publisher.encode()),
                    (Header.DATASET, dataset_id.encode()),
                    (Header.SCHEMA_VERSION, str(p.version).encode()),
                    (Header.PUBLISHED_AT, now_ms),
                ]
                row = {
                    "record_id": p.record_id,
                    "dataset_id": dataset_id,
                    "publisher_id": publisher,
                    "published_at": now,
                    "trace_id": p.trace_id,
                    "outcome": "accepted",
                    "schema_version": p.version,
                    "size": len(m.value() or b""),
                    "partition": None,  # filled in by the delivery callback: its place in data.<dataset>
                    "offset": None,
                }
                batch.add(row)
                producer.produce(
                    data_topic,
                    m.value(),
                    m.key(),
                    headers=headers,
                    on_delivery=position_callback(row, self._on_delivery),
                )
            if kept:
                self._remember.append(
                    (dataset_id, publisher, [p.record for p in kept], [p.record_id for p in kept])
                )
        self._batch = batch
        producer.poll(0)

    def _decode(
        self, snap: PolicySnapshot, dataset_id: str, version_text: str, value: bytes
    ) -> tuple[dict[str, Any], int]:
        ds = snap.datasets[dataset_id]
        try:
            version = int(version_text)
        except ValueError:
            raise RecordInvalid(f"bus-schema-version {version_text!r} is not a version number") from None
        schema = ds.schemas.get(version)
        if schema is None:
            raise RecordInvalid(
                f"dataset {dataset_id} has no schema version {version} (current: {ds.schema_version})"
            )
        return decode_exact(value, parsed_schema(dataset_id, version, schema)), version

    def _refuse(
        self,
        producer: Producer,
        batch: PublishBatch,
        m: Message,
        dataset_id: str,
        raw_id: str,
        publisher: str,
        version_text: str,
        trace_id: str | None,
        err: BusError,
        now: datetime,
    ) -> None:
        record_id = raw_id if is_record_id(raw_id) else new_record_id()
        headers: ProduceHeaders = [
            (Header.ERROR_CODE, err.code.encode()),
            (Header.ERROR_DETAIL, err.detail.encode()[:1000]),
            (Header.RECORD_ID, record_id.encode()),
            (Header.PUBLISHER, publisher.encode()),
            (Header.DATASET, dataset_id.encode()),
        ]
        if raw_id and raw_id != record_id:
            headers.append(("bus-claimed-record-id", raw_id.encode()[:100]))
        headers += [(k, v) for k, v in headers_of(m) if k in (Header.TRACEPARENT, Header.TRACESTATE) and v]
        value = None if err.code == "record.too_large" else m.value()
        producer.produce(
            self.ctx.topics.rejected(dataset_id),
            value,
            m.key(),
            headers=headers,
            on_delivery=self._on_delivery,
        )
        try:
            version = int(version_text)
        except ValueError:
            version = 0
        batch.add(
            {
                "record_id": record_id,
                "dataset_id": dataset_id[:64],
                "publisher_id": publisher[:64] or "unknown",
                "published_at": now,
                "trace_id": trace_id,
                "outcome": err.code,
                "schema_version": version,
                "size": len(m.value() or b""),
                "partition": None,
                "offset": None,
            }
        )
        if err.code in VIOLATION_CODES:
            batch.violations.append(
                {
                    "kind": err.code,
                    "code": err.code,
                    "agency_id": publisher or None,
                    "dataset_id": dataset_id,
                    "grant_id": err.extra.get("grant"),  # forwarding names the grant the data came under
                    "record_ids": [record_id],
                    "trace_ids": [trace_id] if trace_id else [],
                    "detail": err.detail,
                }
            )

    def after_delivery(self) -> None:
        self._end_spans()
        batch, self._batch = self._batch, None
        if batch is None:
            return
        for dataset_id, publisher, records, ids in self._remember:
            self.guard.remember_batch(dataset_id, publisher, records, ids)
        record_subjects(self.ctx, self._remember)  # keyed subject index (GET /v1/lineage/subjects)
        self._remember = []
        batch.violations = _group_violations(batch.violations)
        self.ledger.published(batch)
        refused = sum(1 for r in batch.lineage if r["outcome"] != "accepted")
        self.refused += refused
        self.accepted += len(batch.lineage) - refused

    def discard_batch(self) -> None:
        self._end_spans("batch not delivered; retrying")
        self._batch = None
        self._remember = []

    def _end_spans(self, error: str | None = None) -> None:
        spans, self._spans = self._spans, None
        if spans is not None:
            if error:
                spans.fail(error)
            spans.end()


def _group_violations(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One violation per (code, agency, dataset) per batch, carrying every record and trace id."""
    grouped: dict[tuple[str, Any, str], dict[str, Any]] = {}
    for v in violations:
        key = (v["code"], v["agency_id"], v["dataset_id"])
        if key in grouped:
            grouped[key]["record_ids"] += v["record_ids"]
            grouped[key]["trace_ids"] += v["trace_ids"]
        else:
            grouped[key] = dict(v)
    return list(grouped.values())


def make_worker(ctx: BusContext, group: str | None = None) -> Validator:
    return Validator(ctx, group=group)
