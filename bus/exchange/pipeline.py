"""The one pipeline (R1, R5, R7-R10, R12-R15): ``ingress.*`` -> ``deliver.<grant>`` + ``data.<dataset>``.

One worker kind consumes every ``ingress.*`` topic, opens each sealed record under its publisher's key
(the AEAD tag proves who wrote it: a forged ``publisher`` or a changed header gives
``record.unauthenticated``), decides the batch with ``bus.policy.batch.process_batch``, and produces in
the same batch each grant's sealed view to ``deliver.<grant>``, the accepted record sealed under the
dataset key to ``data.<dataset>`` (the accepted log for operators, federation and replay) and
refusals to ``rejected.<dataset>``. Publish -> subscriber is two broker hops. Its ingress offsets are
committed only after every output is acknowledged and the batch's evidence is stored
(``BatchWorker``): a crash repeats at most the batch, with the same record ids.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message, Producer

from bus.context import BusContext
from bus.errors import RecordUnauthenticated
from bus.exchange import keyring
from bus.exchange.batch_worker import BatchWorker
from bus.exchange.emit import Emitter, SentRecord
from bus.exchange.envelope import EnvelopeError, Meta, Sealer, meta_of
from bus.exchange.fingerprints import FingerprintGuard
from bus.exchange.kafka import headers_of, topic_of
from bus.exchange.ledger import Ledger, PublishBatch
from bus.exchange.record_ids import new_record_id
from bus.lineage import tracing
from bus.lineage.subjects import record_subjects
from bus.policy.batch import BatchOutcome, Incoming, Refused, process_batch
from bus.policy.routes import RouteTable
from bus.policy.snapshot import PolicySnapshot
from bus.vocab import TopicKind, Via

log = logging.getLogger(__name__)

EXPIRY_SWEEP_INTERVAL = 2.0


class IngressOpener:
    """Opens sealed ingress records under their publishers' keys (cached per agency and secret)."""

    def __init__(self) -> None:
        self._sealers: dict[tuple[str, bytes], Sealer] = {}

    def sealer(self, agency_id: str, signing_secret: bytes) -> Sealer:
        key = (agency_id, signing_secret)
        found = self._sealers.get(key)
        if found is None:
            found = self._sealers[key] = Sealer(keyring.INGRESS_KID, keyring.ingress_key(signing_secret))
        return found

    def open(
        self,
        snap: PolicySnapshot,
        ref: int,
        dataset_id: str,
        raw_meta: bytes | None,
        key: bytes | None,
        value: bytes | None,
        trace_id: str | None,
    ) -> Incoming | Refused:
        """One ingress message as an ``Incoming``, or its refusal (``record.unauthenticated``)."""
        try:
            meta = Meta.unpack(raw_meta)
        except EnvelopeError as exc:
            return Refused(
                ref,
                new_record_id(),
                dataset_id,
                "",
                0,
                len(value or b""),
                trace_id,
                RecordUnauthenticated(f"not a sealed bus record ({exc}); publish with the SDK (R14)"),
            )
        agency = snap.agencies.get(meta.publisher)
        error: str | None = None
        if meta.dataset != dataset_id:
            error = f"the record was sealed for dataset {meta.dataset!r}, not {dataset_id!r}"
        elif agency is None:
            error = f"{meta.publisher or 'the named publisher'} is not an agency of this bus"
        else:
            try:
                opened_key, opened = self.sealer(agency.id, agency.signing_secret).open(
                    TopicKind.INGRESS, dataset_id, raw_meta or b"", value
                )
            except EnvelopeError:
                error = (
                    f"the record does not open under the key of {meta.publisher}: it was not written by it"
                )
        if error is not None:
            return Refused(
                ref,
                meta.record_id,
                dataset_id,
                meta.publisher,
                meta.schema_version,
                len(value or b""),
                trace_id,
                RecordUnauthenticated(f"{error} (R14)"),
            )
        return Incoming(
            ref, meta.record_id, dataset_id, meta.publisher, meta.schema_version, opened_key, opened, trace_id
        )


class Pipeline(BatchWorker):
    name = "pipeline"

    def __init__(self, ctx: BusContext, *, group: str | None = None, **kw: Any) -> None:
        super().__init__(ctx, topic_prefix=ctx.topics.ingress(""), group=group, **kw)
        self.ledger = Ledger(ctx)
        self.guard = FingerprintGuard(ctx)
        self.opener = IngressOpener()
        self.routes = RouteTable(ctx.master_secret)
        self.emitter = Emitter(ctx)
        self.limit = ctx.settings.max_record_bytes
        self._done: tuple[BatchOutcome, PublishBatch, list[dict[str, Any]]] | None = None
        self._spans: tracing.ConsumeBatch | None = None
        self._next_sweep = 0.0
        self.accepted = 0
        self.refused = 0
        self.delivered = 0

    def scan_due(self) -> bool:
        # a new dataset or grant was announced: its topics may exist now, look before the periodic scan
        if self.cache.changed.is_set():
            self.cache.changed.clear()
            return True
        return False

    def idle(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + EXPIRY_SWEEP_INTERVAL
            try:
                from bus.grants.service import expire_due

                expire_due(self.ctx)
            except Exception:
                log.debug("expiry sweep failed; retrying later", exc_info=True)

    def process(self, msgs: list[Message], producer: Producer) -> None:
        spans = self._spans = tracing.consume_messages("process", msgs, group=self.group_id)
        snap = self.cache.fresh()
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        plen = len(self.topic_prefix)
        items: list[Incoming] = []
        early: list[Refused] = []
        metas: list[bytes | None] = []
        for i, m in enumerate(msgs):
            raw_meta = meta_of(headers_of(m))
            metas.append(raw_meta)
            opened = self.opener.open(
                snap, i, topic_of(m)[plen:], raw_meta, m.key(), m.value(), spans.trace_id_of(m)
            )
            if isinstance(opened, Incoming):
                items.append(opened)
            else:
                early.append(opened)

        def copies(dataset_id: str, publisher: str, records: Any) -> Any:
            return self.guard.check_batch(dataset_id, publisher, records, version=snap.version)

        outcome = process_batch(
            snap, items, copies=copies, routes=self.routes, limit=self.limit, accepted_at_ms=now_ms
        )
        outcome.refused[:0] = early

        def sent(ref: int) -> SentRecord:
            m = msgs[ref]
            return SentRecord(m.key(), m.value(), metas[ref], spans.headers(ref))

        evidence = self.emitter.emit(
            outcome,
            producer,
            via=Via.PIPELINE,
            report=self._on_delivery,
            trace=spans.headers,
            trace_id=lambda ref: spans.trace_id(ref),
            sent=sent,
        )
        batch = PublishBatch(
            via=Via.PIPELINE,
            lineage=evidence.published,
            violations=[v.as_row() for v in outcome.violations()],
        )
        self._done = (outcome, batch, evidence.delivered)
        producer.poll(0)

    def after_delivery(self) -> None:
        done = self._done
        if done is None:
            return
        outcome, batch, delivered = done
        remember: dict[tuple[str, str], tuple[list[Any], list[str]]] = {}
        for a in outcome.accepted:
            records, ids = remember.setdefault((a.item.dataset_id, a.item.publisher_id), ([], []))
            records.append(a.record)
            ids.append(a.item.record_id)
        for (dataset_id, publisher), (records, ids) in remember.items():
            self.guard.remember_batch(dataset_id, publisher, records, ids)
        record_subjects(self.ctx, [(d, p, r, i) for (d, p), (r, i) in remember.items()])  # who received (R14)
        self.ledger.published(batch)
        self.ledger.delivered(delivered)
        self._done = None
        self._end_spans()
        self.accepted += len(outcome.accepted)
        self.refused += len(outcome.refused)
        self.delivered += len(delivered)

    def discard_batch(self) -> None:
        self._end_spans("batch not delivered; retrying")
        self._done = None

    def _end_spans(self, error: str | None = None) -> None:
        spans, self._spans = self._spans, None
        if spans is not None:
            if error:
                spans.fail(error)
            spans.end()


def make_worker(ctx: BusContext, group: str | None = None) -> Pipeline:
    return Pipeline(ctx, group=group)
