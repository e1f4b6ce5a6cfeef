"""The receipts worker: consumption acknowledgements on ``bus.receipts`` become consumption lineage.

Grantees' SDKs (and sink connectors) send one signed receipt per ``ack()`` (``schemas/receipt.avsc``).
A receipt counts only if its signature verifies under the sending agency's secret and the grant is
that agency's; anything else is refused and raised as a violation (R8, R15), never recorded as
consumption. Each batch of receipts becomes one ``LineageRecorder.consumed`` call (lineage rows, a
``consumption.batch`` audit event per grant, usage counters), then the offsets are committed. A receipt
seen again after a crash (same receipt id) is skipped, so replays do not double-count consumption.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Message, TopicPartition
from sqlalchemy import select

from bus.context import BusContext
from bus.exchange.kafka import assign_from_committed, ensure_topics, new_consumer
from bus.exchange.keyring import signing_secret_of
from bus.exchange.signing import Signer
from bus.lineage import tracing
from bus.lineage.incidents import record_violations
from bus.lineage.recorder import LineageRecorder
from bus.schemas import parsed_schema, read_record
from bus.store.models import Agency, ConsumptionLineage, Grant
from bus.vocab import Header

log = logging.getLogger(__name__)

RECEIPTS_DATASET = "bus.receipts"  # the dataset slot of a receipt's signature
BATCH = 500
POLL_TIMEOUT = 0.1
MAX_BACKOFF = 2.0


def decode_receipt(value: bytes) -> dict[str, Any]:
    return read_record(value, parsed_schema("receipt"))


class ReceiptsWorker:
    name = "receipts"

    def __init__(self, ctx: BusContext) -> None:
        self.ctx = ctx
        self.topic = ctx.topics.receipts
        self.group = f"{ctx.topics.prefix}bus-receipts"
        self.recorder = LineageRecorder(ctx.store)
        self._signers: dict[str, Signer] = {}
        self._grants: dict[str, str] = {}  # grant id -> grantee agency
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_loop = 0.0
        self._ok = False
        self.receipts = 0
        self.refused = 0
        self.last_error: str | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None

    def healthy(self) -> bool:
        alive = self._thread is not None and self._thread.is_alive()
        return alive and self._ok and time.monotonic() - self._last_loop < 10

    # --- the loop ----------------------------------------------------------------------------------
    def _run(self) -> None:
        consumer = None
        backoff = 0.1
        try:
            while not self._stop.is_set() and consumer is None:
                try:
                    ensure_topics(self.ctx.bootstrap, [self.topic])
                    consumer = new_consumer(self.ctx.bootstrap, self.group, self.ctx.settings)
                    if not assign_from_committed(consumer, [self.topic]):
                        raise RuntimeError(f"no partitions for {self.topic}")
                except Exception as exc:  # broker not reachable yet: retry, never give up silently
                    self.last_error = str(exc)
                    if consumer is not None:
                        consumer.close()
                        consumer = None
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
            self._ok = True
            backoff = 0.1
            while consumer is not None and not self._stop.is_set():
                self._last_loop = time.monotonic()
                msgs = [m for m in consumer.consume(BATCH, POLL_TIMEOUT) if m.error() is None]
                if not msgs:
                    continue
                try:
                    self.process(msgs)
                except Exception as exc:  # the store is down or a bug: rewind, retry, lose nothing
                    log.warning("receipts: batch failed, retrying: %s", exc, exc_info=True)
                    self.last_error = str(exc)
                    _rewind(consumer, msgs)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                consumer.commit(offsets=_next_offsets(msgs), asynchronous=False)
                backoff = 0.1
                self.last_error = None
        finally:
            self._ok = False
            if consumer is not None:
                consumer.close()

    def process(self, msgs: list[Any]) -> None:
        """Verify, decode and record one batch of receipts (one lineage write for all of them)."""
        with tracing.consume_batch("process", self.topic, [m.headers() for m in msgs], group=self.group):
            self._load([m.headers() for m in msgs])
            rows: list[dict[str, Any]] = []
            violations: list[dict[str, Any]] = []
            receipt_ids: list[str] = []
            for m in msgs:
                h: dict[str, bytes] = {k: v for k, v in (m.headers() or ()) if isinstance(v, bytes)}
                receipt_id = h.get(Header.RECORD_ID, b"").decode("utf-8", "replace")
                try:
                    receipt = self._verified(m, h, receipt_id)
                except _Refused as refusal:
                    self.refused += 1
                    violations.append(refusal.violation)
                    continue
                receipt_ids.append(receipt_id)
                at = receipt["at"]
                for item in receipt["records"]:
                    rows.append(
                        {
                            "record_id": item["record_id"][:40],
                            "grant_id": receipt["grant_id"],
                            "agency_id": receipt["agency_id"],
                            "via": receipt["via"][:32],
                            "consumed_at": at,
                            "size": item["size"],
                            "receipt_id": receipt_id,
                        }
                    )
            if rows:
                seen = self._already_recorded(receipt_ids)
                fresh = [r for r in rows if r["receipt_id"] not in seen]
                self.recorder.consumed(fresh)
                self.receipts += len(set(receipt_ids) - seen)
            if violations:
                record_violations(self.ctx, violations)

    def _verified(self, m: Any, h: dict[str, bytes], receipt_id: str) -> dict[str, Any]:
        publisher = h.get(Header.PUBLISHER, b"").decode("utf-8", "replace")
        version = h.get(Header.SCHEMA_VERSION, b"").decode("utf-8", "replace")
        signature = h.get(Header.SIGNATURE, b"").decode("ascii", "replace")
        if not self._signed(publisher, signature, m, receipt_id, version):
            raise _Refused(
                "record.unauthenticated",
                publisher,
                None,
                f"receipt {receipt_id!r} is not signed by agency {publisher!r}",
            )
        try:
            receipt = decode_receipt(m.value() or b"")
        except Exception as exc:
            raise _Refused(
                "record.invalid",
                publisher,
                None,
                f"receipt {receipt_id!r} does not match schemas/receipt.avsc: {exc}",
            ) from None
        grant = receipt["grant_id"]
        if receipt["agency_id"] != publisher or self._grants.get(grant) != publisher:
            raise _Refused(
                "auth.forbidden",
                publisher,
                grant,
                f"agency {publisher!r} acknowledged records of grant {grant!r}, which is not its own",
            )
        return receipt

    def _signed(self, publisher: str, signature: str, m: Message, receipt_id: str, version: str) -> bool:
        for attempt in range(2):
            signer = self._signers.get(publisher)
            if signer is not None and signer.verify(
                signature, m.key(), m.value(), receipt_id, publisher, RECEIPTS_DATASET, version
            ):
                return True
            if attempt == 0 and publisher in self._signers:  # the agency's key may have been rotated
                del self._signers[publisher]
                self._load([[(Header.PUBLISHER, publisher.encode())]])
            else:
                return False
        return False

    def _load(self, header_lists: list[Any]) -> None:
        """Signing secrets and grantees for this batch, one query each for what is not cached yet."""
        agencies, grants = set(), set()
        for headers in header_lists:
            for k, v in headers or ():
                if k == Header.PUBLISHER and v:
                    agencies.add(v.decode("utf-8", "replace"))
                elif k == Header.GRANT and v:
                    grants.add(v.decode("utf-8", "replace"))
        agencies -= set(self._signers)
        grants -= set(self._grants)
        if not agencies and not grants:
            return
        with self.ctx.store.session() as s:
            if agencies:
                for aid, secret in s.execute(
                    select(Agency.id, Agency.signing_secret).where(Agency.id.in_(agencies))
                ):
                    self._signers[aid] = Signer(signing_secret_of(self.ctx.master_secret, aid, secret))
            if grants:
                stmt = select(Grant.id, Grant.agency_id).where(Grant.id.in_(grants))
                self._grants.update({gid: aid for gid, aid in s.execute(stmt)})

    def _already_recorded(self, receipt_ids: list[str]) -> set[str]:
        if not receipt_ids:
            return set()
        with self.ctx.store.session() as s:
            return set(
                s.scalars(
                    select(ConsumptionLineage.receipt_id)
                    .distinct()
                    .where(ConsumptionLineage.receipt_id.in_(set(receipt_ids)))
                )
            )


class _Refused(Exception):
    def __init__(self, code: str, agency: str, grant: str | None, detail: str) -> None:
        super().__init__(detail)
        self.violation: dict[str, Any] = {
            "code": code,
            "agency_id": agency or None,
            "dataset_id": None,
            "grant_id": grant,
            "record_ids": [],
            "trace_ids": [],
            "detail": detail,
            "count": 1,
        }


def _next_offsets(msgs: list[Any]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in msgs:
        key = (m.topic(), m.partition())
        last[key] = max(last.get(key, -1), m.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _rewind(consumer: Any, msgs: list[Any]) -> None:
    first: dict[tuple[str, int], int] = {}
    for m in msgs:
        key = (m.topic(), m.partition())
        first[key] = min(first.get(key, m.offset()), m.offset())
    for (t, p), o in first.items():
        try:
            consumer.seek(TopicPartition(t, p, o))
        except Exception:
            log.warning("receipts: could not rewind %s[%d] to %d", t, p, o, exc_info=True)


def make_worker(ctx: BusContext) -> ReceiptsWorker:
    return ReceiptsWorker(ctx)
