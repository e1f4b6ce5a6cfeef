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
from typing import Any

from confluent_kafka import Message, Producer
from sqlalchemy import select

from bus.context import BusContext
from bus.exchange.batch_worker import BatchWorker
from bus.exchange.kafka import ensure_topics, headers_of
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


def decode_receipt(value: bytes) -> dict[str, Any]:
    return read_record(value, parsed_schema("receipt"))


class ReceiptsWorker(BatchWorker):
    """A ``BatchWorker`` on ``bus.receipts``: the pipeline's loop, rewind and refused-commit handling."""

    name = "receipts"
    uses_policy = False

    def __init__(self, ctx: BusContext) -> None:
        super().__init__(ctx, topic_prefix=ctx.topics.receipts)
        self.group_id = f"{ctx.topics.prefix}bus-receipts"  # the group receipts were always committed under
        self.topic = ctx.topics.receipts
        self.recorder = LineageRecorder(ctx.store)
        self._signers: dict[str, Signer] = {}
        self._grants: dict[str, str] = {}  # grant id -> grantee agency
        self._batch: tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]] | None = None
        self.receipts = 0
        self.refused = 0

    def start(self) -> None:
        try:  # so the SDK's first receipt finds it; the topic scan assigns it either way
            ensure_topics(self.ctx.bootstrap, [self.topic], settings=self.ctx.settings)
        except Exception as exc:
            log.info("receipts: %s not created yet (%s); it is assigned once it exists", self.topic, exc)
        super().start()

    def wants_topic(self, topic: str) -> bool:
        return topic == self.topic

    def process(self, msgs: list[Message], producer: Producer) -> None:
        """Verify and decode one batch of receipts; ``after_delivery`` records them in one lineage write."""
        header_lists = [headers_of(m) for m in msgs]
        with tracing.consume_batch("process", self.topic, header_lists, group=self.group_id):
            self._load(header_lists)
            rows: list[dict[str, Any]] = []
            violations: list[dict[str, Any]] = []
            receipt_ids: list[str] = []
            for m, headers in zip(msgs, header_lists, strict=True):
                h: dict[str, bytes] = {k: v for k, v in headers if isinstance(v, bytes)}
                receipt_id = h.get(Header.RECORD_ID, b"").decode("utf-8", "replace")
                try:
                    receipt = self._verified(m, h, receipt_id)
                except _Refused as refusal:
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
            self._batch = (rows, receipt_ids, violations)

    def after_delivery(self) -> None:
        if self._batch is None:
            return
        rows, receipt_ids, violations = self._batch
        if rows:
            seen = self._already_recorded(receipt_ids)  # a replay (or a retried write) counts once
            fresh = [r for r in rows if r["receipt_id"] not in seen]
            if fresh:
                self.recorder.consumed(fresh)
            self.receipts += len(set(receipt_ids) - seen)
        if violations:
            record_violations(self.ctx, violations)
            self.refused += len(violations)
        self._batch = None

    def discard_batch(self) -> None:
        self._batch = None

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


def make_worker(ctx: BusContext) -> ReceiptsWorker:
    return ReceiptsWorker(ctx)
