"""The source and sink batch loops a connector task runs."""

from __future__ import annotations

import contextlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bus.connectors_runtime.common import POLICY_RECHECK, POLL_TIMEOUT, Blocked, Reload, now
from bus.connectors_runtime.delivery import (
    DeliveryReader,
    SourceRecordIds,
    grant_view_schema,
    make_publisher,
)
from bus.exchange.keyring import signing_secret_of
from bus.policy.decision import grant_refusal
from bus.store.models import Agency, Dataset, Grant, SchemaVersion
from bus.vocab import DatasetStatus, Header
from connectors.base import (
    PermanentFailure,
    RetryPolicy,
    Sink,
    SinkContext,
    SinkRecord,
    Source,
    SourceBatch,
    SourceContext,
    mask_text,
)

if TYPE_CHECKING:
    from bus.connectors_runtime.task import ConnectorTask


class BatchLoop(ABC):
    """What the source and sink loops share: the task, its retry policy and the fail-closed policy check."""

    def __init__(self, task: ConnectorTask, policy: RetryPolicy) -> None:
        self.task = task
        self.policy = policy
        self.ctx = task.ctx
        self._checked = 0.0

    @abstractmethod
    def _check(self, force: bool = False) -> None:
        """Raise ``Blocked`` while policy forbids moving data (``PermanentFailure`` when it never will)."""

    def _check_due(self, force: bool) -> bool:
        """Is a policy check due (forced, or ``POLICY_RECHECK`` seconds since the last one)?"""
        return force or time.monotonic() - self._checked >= POLICY_RECHECK

    def _start(self, start: Callable[[], object]) -> None:
        task = self.task
        task._attempt(start, self.policy, "starting")
        task.status["state"] = "running"
        task._save()

    def _admitted(self) -> bool:
        """One turn's policy check; when blocked, the status says why and the loop waits before the next."""
        try:
            self._check()
        except Blocked as exc:
            self._blocked(str(exc))
            return False
        return True

    def _blocked(self, why: str) -> None:
        if self.task.status.get("state") != "blocked":
            self.task.status.update(state="blocked", blocked_reason=why)
            self.task._save()
        self.task._wait(POLICY_RECHECK)
        self._checked = 0.0


class SourceLoop(BatchLoop):
    """Source -> ``ingress.<dataset>`` through the SDK's signed path, as the owning agency (R13, R14)."""

    def __init__(self, task: ConnectorTask, source: Source) -> None:
        super().__init__(task, source.config.retry)
        self.source = source
        self.schema_version = 0
        self.publisher: Any = None
        self.ids: SourceRecordIds | None = None

    def _check(self, force: bool = False) -> None:
        """R13: only an approved, unsuspended dataset of a unsuspended owner takes records (one read)."""
        if not self._check_due(force):
            return
        row = self.task.row
        with self.ctx.store.session() as s:
            found = s.execute(
                select(
                    Dataset.status,
                    Dataset.suspended,
                    Dataset.owner_id,
                    Dataset.schema_version,
                    Agency.suspended,
                )
                .join(Agency, Agency.id == Dataset.owner_id)
                .where(Dataset.id == row["dataset_id"])
            ).first()
        self._checked = time.monotonic()
        if found is None:
            raise PermanentFailure(f"dataset {row['dataset_id']} no longer exists")
        status, ds_suspended, owner, version, ag_suspended = found
        if owner != row["agency_id"]:
            raise PermanentFailure(f"dataset {row['dataset_id']} is no longer owned by {row['agency_id']}")
        if status == DatasetStatus.RETIRED:
            raise PermanentFailure(f"dataset {row['dataset_id']} was retired")
        if status != DatasetStatus.APPROVED or ds_suspended or ag_suspended:
            why = (
                f"dataset {row['dataset_id']} is {status}"
                if status != DatasetStatus.APPROVED
                else f"dataset {row['dataset_id']} is suspended"
                if ds_suspended
                else f"agency {row['agency_id']} is suspended"
            )
            raise Blocked(why)
        if self.schema_version and version != self.schema_version:
            raise Reload

    def _open(self) -> SourceContext:
        row = self.task.row
        with self.ctx.store.session() as s:
            ds = s.get(Dataset, row["dataset_id"])
            agency = s.get(Agency, row["agency_id"])
            if ds is None or agency is None:
                raise PermanentFailure("the connector's dataset or agency no longer exists")
            sv = s.get(SchemaVersion, (ds.id, ds.schema_version))
            if sv is None:
                raise PermanentFailure(f"dataset {ds.id} has no schema version {ds.schema_version}")
            self.schema_version = ds.schema_version
            schema = dict(sv.schema)
            secret = signing_secret_of(self.ctx.master_secret, agency.id, agency.signing_secret).hex()
        self.publisher = make_publisher(
            self.ctx, row["agency_id"], secret, row["dataset_id"], schema, self.schema_version
        )
        self.ids = SourceRecordIds(
            self.ctx.master_secret, self.task.name, row.get("created_at", ""), row["dataset_id"]
        )
        return SourceContext(self.task.name, row["dataset_id"], row["agency_id"], schema)

    def run(self) -> None:
        task = self.task
        try:
            context = self._open()
            self._start(lambda: self.source.start(context, task.row["position"]))
            while not task._stop.is_set():
                if not self._admitted():
                    continue
                batch = task._attempt(
                    lambda: self.source.poll(self.source.config.batch_size, POLL_TIMEOUT),
                    self.policy,
                    "reading",
                )
                if not len(batch):
                    task._save(force=False)
                    continue
                self._deliver(batch)
        finally:
            if self.publisher is not None:
                with contextlib.suppress(Exception):
                    self.publisher.close()

    def _deliver(self, batch: SourceBatch) -> None:
        task, row = self.task, self.task.row
        task.status["records_in"] = int(task.status.get("records_in", 0)) + len(batch)
        published, refused = task._attempt(lambda: self.publish_batch(batch), self.policy, "publishing")
        dead = [
            (u.raw, u.code, u.detail, {Header.DATASET: row["dataset_id"], Header.ORIGIN: u.origin})
            for u in batch.unreadable
        ]
        dead += [
            (
                json.dumps(r.value, default=str, ensure_ascii=False).encode(),
                code,
                detail,
                {Header.DATASET: row["dataset_id"], Header.ORIGIN: r.origin},
            )
            for r, code, detail in refused
        ]
        task._attempt(lambda: task._dead_letter(dead), self.policy, "dead-lettering")
        task.status["records_out"] = int(task.status.get("records_out", 0)) + published
        task.status.pop("blocked_reason", None)
        task.status["state"] = "running"
        task._save(batch.position)
        self.source.commit(batch.position)

    def publish_batch(self, batch: SourceBatch) -> tuple[int, list[tuple[Any, str, str]]]:
        """The one place a source batch enters the bus: signed, schema-checked, flushed before returning.

        Each batch starts a trace (one ``send`` span, R14): its records carry the span's context, and
        the validator, router and consumers continue it. Record ids come from ``SourceRecordIds``: a
        batch published again after a crash (position not saved) carries the ids it had the first time.
        """
        from bus.errors import RecordError
        from bus.lineage import tracing

        refused: list[tuple[Any, str, str]] = []
        sent = 0
        ids = self.ids
        assert ids is not None
        attrs = {"databus.connector": self.task.name, "databus.dataset": self.task.row["dataset_id"]}
        with tracing.send_span(self.publisher.topic, len(batch.records), attributes=attrs) as span:
            headers = {k: v.decode() for k, v in span.headers}
            for rec in batch.records:
                try:
                    self.publisher.publish(rec.value, key=rec.key, headers=headers, record_id=ids.of(rec))
                    sent += 1
                except RecordError as exc:
                    refused.append((rec, exc.code, exc.detail))
            span.set("databus.refused", len(refused))
            self.publisher.flush(30)
        return sent, refused


class SinkLoop(BatchLoop):
    """``deliver.<grant>`` -> the grantee's registered system, only while the grant is active (R7, R8)."""

    def __init__(self, task: ConnectorTask, sink: Sink) -> None:
        super().__init__(task, sink.config.retry)
        self.sink = sink
        self.reader: Any = None
        self.context: SinkContext | None = None

    def _check(self, force: bool = False) -> None:
        """Deliver only under an active, unexpired grant of an unsuspended grantee and dataset (fails closed).

        One store read, at most every ``POLICY_RECHECK`` seconds while idle and right before every write.
        """
        if not self._check_due(force):
            return
        row = self.task.row
        with self.ctx.store.session() as s:
            grant = s.get(Grant, row["grant_id"])
            ds = s.get(Dataset, grant.dataset_id) if grant is not None else None
            grantee = s.get(Agency, grant.agency_id) if grant is not None else None
            owner = s.get(Agency, ds.owner_id) if ds is not None else None
            if grant is None or ds is None:
                raise PermanentFailure(f"grant {row['grant_id']} no longer exists")
            facts = (grant.status, grant.valid_until, grant.agency_id, ds.status, bool(ds.suspended),
                     bool(grantee is None or grantee.suspended), bool(owner is None or owner.suspended))
        self._checked = time.monotonic()
        status, valid_until, grantee_id, ds_status, ds_suspended, grantee_suspended, owner_suspended = facts
        if grantee_id != row["agency_id"]:
            raise PermanentFailure(f"grant {row['grant_id']} is not held by {row['agency_id']}")
        refusal = grant_refusal(  # the one delivery rule (bus.policy.decision)
            status, valid_until, now(), grantee_suspended=grantee_suspended, dataset_suspended=ds_suspended,
            owner_suspended=owner_suspended, dataset_status=ds_status, grant_id=row["grant_id"],
        )
        if refusal is not None:
            raise Blocked(refusal.detail)

    def _open(self) -> SinkContext:
        from bus.gateway.routes_systems import check_egress

        row = self.task.row
        with self.ctx.store.session() as s:
            grant = s.get(Grant, row["grant_id"])
            if grant is None:
                raise PermanentFailure(f"grant {row['grant_id']} no longer exists")
            check_egress(s, self.sink.destination(), grant.id)  # R8/R16: a system may have been removed
            view = grant_view_schema(s, grant)
            context = SinkContext(
                self.task.name, grant.id, grant.agency_id, grant.dataset_id, grant.scenario_code, view
            )
        self.task.row["dataset_id"] = context.dataset_id
        self.reader = DeliveryReader(self.ctx, self.task.name, context, row["position"])
        return context

    def run(self) -> None:
        task = self.task
        context = self._open()
        self.context = context
        try:
            self._start(lambda: self.sink.start(context))
            while not task._stop.is_set():
                if not self._admitted():
                    continue
                records = task._attempt(
                    lambda: self.reader.poll(self.sink.config.batch_size, POLL_TIMEOUT),
                    self.policy,
                    "reading deliveries",
                )
                if not records and not self.reader.undecodable:
                    task.status["lag"] = self.reader.lag()
                    task.status["lag_unit"] = "records"
                    task._save(force=False)
                    continue
                try:
                    self._check(force=True)  # a revocation that arrived while reading stops this batch
                except Blocked as exc:
                    self.reader.rewind()
                    self._blocked(str(exc))
                    continue
                self._write(records)
        finally:
            if self.reader is not None:
                self.reader.close()

    def _write(self, records: list[SinkRecord]) -> None:
        task = self.task
        assert self.context is not None
        task.status["records_in"] = int(task.status.get("records_in", 0)) + len(records)
        where = f"writing to {mask_text(self.sink.destination())}"
        refused = self.write_batch(records, where) if records else []
        bad = {r.record.record_id for r in refused}
        grant = {Header.GRANT: self.context.grant_id}
        dead = [
            (
                json.dumps(r.record.value, default=str, ensure_ascii=False).encode(),
                "connector.record_refused",
                r.detail,
                {Header.RECORD_ID: r.record.record_id, **grant},
            )
            for r in refused
        ]
        dead += [
            (
                raw,
                "connector.record_refused",
                detail,
                {Header.RECORD_ID: h.get(Header.RECORD_ID, ""), **grant},
            )
            for raw, detail, h in self.reader.undecodable
        ]
        self.reader.undecodable.clear()
        task._attempt(lambda: task._dead_letter(dead), self.policy, "dead-lettering")
        written = [r for r in records if r.record_id not in bad]
        self.record_consumption(written)
        task.status["records_out"] = int(task.status.get("records_out", 0)) + len(written)
        task.status["lag"] = self.reader.lag()
        task.status["lag_unit"] = "records"
        task.status.pop("blocked_reason", None)
        task.status["state"] = "running"
        task._save(self.reader.position())

    def write_batch(self, records: list[SinkRecord], where: str) -> list[Any]:
        """The one place a sink batch leaves the bus: a span in each record's trace, retried with backoff."""
        from bus.lineage import tracing

        assert self.reader is not None
        attrs = {
            "databus.connector": self.task.name,
            "databus.destination": where.removeprefix("writing to "),
            "databus.grant": self.task.row["grant_id"],
        }
        header_lists = [[(k, v.encode()) for k, v in r.headers.items()] for r in records]
        with tracing.consume_batch(
            "process", self.reader.topic, header_lists, group=self.reader.group, attributes=attrs
        ):
            refused: list[Any] = self.task._attempt(lambda: self.sink.write(records), self.policy, where)
        return refused

    def record_consumption(self, written: list[SinkRecord]) -> None:
        """Lineage: the grantee consumed these records through this connector (one insert per batch)."""
        if not written:
            return
        from bus.lineage.recorder import LineageRecorder

        assert self.context is not None
        at = now()
        via = f"connector:{self.task.name}"[:32]
        LineageRecorder(self.ctx.store).consumed(
            [
                {
                    "record_id": r.record_id,
                    "grant_id": self.context.grant_id,
                    "agency_id": self.context.agency_id,
                    "via": via,
                    "consumed_at": at,
                    "size": len(json.dumps(r.value, default=str)),
                }
                for r in written
            ]
        )


# --- the bus side of sources and sinks (SDK and delivered view) ----------------------------------------
