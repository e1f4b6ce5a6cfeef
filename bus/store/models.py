"""Tables of the control plane. Everything that must survive a broker restart lives here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on SQLite (which forgets tzinfo) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def _first_time(context: Any) -> Any:
    """Default of ``DeliveryLineage.last_at``: a row written without it covers one instant."""
    return context.get_current_parameters()["delivered_at"]


BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements only INTEGER keys


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class Agency(Base):
    __tablename__ = "agencies"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(32))
    level: Mapped[str] = mapped_column(String(16), default="city")
    roles: Mapped[list[Any]] = mapped_column(JSON)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    signing_secret: Mapped[str] = mapped_column(String(128))  # derives record signatures; never returned
    suspended: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class System(Base):
    """A receiving system registered to an agency (egress control, R8/R16)."""

    __tablename__ = "systems"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(500))  # URL or host
    host: Mapped[str] = mapped_column(String(255), index=True)
    in_jurisdiction: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(16), index=True)
    grade: Mapped[str] = mapped_column(String(16), index=True)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    domestic_only: Mapped[bool] = mapped_column(Boolean, default=False)
    sharing_attribute: Mapped[str] = mapped_column(String(16), index=True)
    sharing_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    legal_basis: Mapped[str | None] = mapped_column(Text, nullable=True)
    shareable_fields: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    eligible_agencies: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="draft")
    schema_version: Mapped[int] = mapped_column(Integer, default=1)
    overlap: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # partial overlap report (R9)
    suspended: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    review_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(nullable=True)


class SchemaVersion(Base):
    __tablename__ = "schema_versions"
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Grant(Base):
    __tablename__ = "grants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    fields: Mapped[list[Any]] = mapped_column(JSON)
    unmasked_fields: Mapped[list[Any]] = mapped_column(JSON, default=list)
    scenario_code: Mapped[str] = mapped_column(String(64))
    scenario_description: Mapped[str] = mapped_column(Text)
    legal_basis: Mapped[str] = mapped_column(Text)
    valid_until: Mapped[datetime | None] = mapped_column(nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped on every status change
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AuditEvent(Base):
    """One link of the hash chain (R14): ``hash = sha256(prev_hash || canonical(event))``."""

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(128), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """A single row locked while appending, so concurrent writers extend the chain in order."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigId, default=0)
    hash: Mapped[str] = mapped_column(String(64))


class Incident(Base):
    __tablename__ = "incidents"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    agency_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    dataset_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    grant_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    count: Mapped[int] = mapped_column(Integer, default=1)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    first_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Connector(Base):
    __tablename__ = "connectors"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    agency_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"))
    dataset_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    grant_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    desired_state: Mapped[str] = mapped_column(String(16), default="stopped")
    position: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RecordLineage(Base):
    """One row per accepted or refused record (R14): who published what, when, under which trace."""

    __tablename__ = "lineage_records"
    record_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), index=True)
    publisher_id: Mapped[str] = mapped_column(String(64), index=True)
    published_at: Mapped[datetime] = mapped_column(index=True)
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    outcome: Mapped[str] = mapped_column(String(40))  # accepted | refused code
    schema_version: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer, default=0)
    partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # the audit event whose digest covers this row (tamper evidence, R14); set by LineageRecorder
    audit_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)


class DeliveryLineage(Base):
    """Delivery evidence of one batch for one grant and partition (R14, R18): see ``bus.lineage.evidence``.

    One row stands for ``records`` deliveries: the ids packed in ``record_ids``, per-record offsets,
    sizes, times and trace ids in the arrays (``None`` when they follow from the shared columns).
    ``delivered_at``/``last_at`` bound the records' delivery times; ``size`` is their total bytes.
    """

    __tablename__ = "lineage_delivery_batches"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    grant_id: Mapped[str] = mapped_column(String(64), index=True)
    dataset_id: Mapped[str] = mapped_column(String(64), index=True)
    agency_id: Mapped[str] = mapped_column(String(64))
    scenario_code: Mapped[str] = mapped_column(String(64))
    partition: Mapped[int | None] = mapped_column(Integer, nullable=True)
    delivered_at: Mapped[datetime] = mapped_column(index=True)
    last_at: Mapped[datetime] = mapped_column(default=_first_time)
    first_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    records: Mapped[int] = mapped_column(Integer, default=1)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    record_ids: Mapped[bytes] = mapped_column(LargeBinary)
    offsets: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sizes: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    times: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    traces: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    audit_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)

    @property
    def record_id(self) -> str | None:
        """The id of a one-record batch (``None`` for larger ones): rows made one delivery at a time."""
        from bus.lineage.evidence import unpack_ids

        ids = unpack_ids(self.record_ids) if self.record_ids else []
        return ids[0] if len(ids) == 1 else None

    @record_id.setter
    def record_id(self, value: str) -> None:
        from bus.lineage.evidence import pack_ids

        self.record_ids = pack_ids([value])
        self.records = 1


class DeliveryKey(Base):
    """Index of delivery evidence by record id: which recorder calls (audit seqs) hold a record.

    ``key`` is ``evidence.id_key(record_id)`` (its first 8 bytes); one row per distinct key per call, so
    a batch of time-ordered ids from one publisher needs a handful. A lookup reads the batches attested
    by events ``seq_lo..seq_hi`` and matches the id in them.
    """

    __tablename__ = "lineage_delivery_keys"
    key: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    seq_lo: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    seq_hi: Mapped[int] = mapped_column(BigInteger, index=True)


class ConsumptionLineage(Base):
    __tablename__ = "lineage_consumptions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(String(40), index=True)
    grant_id: Mapped[str] = mapped_column(String(64), index=True)
    agency_id: Mapped[str] = mapped_column(String(64), index=True)
    via: Mapped[str] = mapped_column(String(96))  # sdk | http | sse | connector:<name> (name <= 63)
    consumed_at: Mapped[datetime] = mapped_column(index=True)
    size: Mapped[int] = mapped_column(Integer, default=0)
    dataset_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    audit_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    receipt_id: Mapped[str | None] = mapped_column(
        String(40), nullable=True, index=True
    )  # SDK receipt (dedup)


Index("ix_delivery_batches_grant_time", DeliveryLineage.grant_id, DeliveryLineage.delivered_at)
Index("ix_records_dataset_time", RecordLineage.dataset_id, RecordLineage.published_at)


class LineageSpan(Base):
    """A finished span kept for lineage when no OpenTelemetry Collector is configured (embedded stack)."""

    __tablename__ = "lineage_spans"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(String(32), index=True)
    span_id: Mapped[str] = mapped_column(String(16))
    parent_span_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    start_at: Mapped[datetime] = mapped_column(index=True)
    end_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="unset")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    links: Mapped[list[Any]] = mapped_column(JSON, default=list)


class UsageHour(Base):
    """Usage metering (R18): records and bytes per hour, direction, dataset, grant and agency.

    Updated once per data-plane batch (upsert), kept when lineage rows age out.
    ``grant_id`` is ``""`` for published and refused records.
    """

    __tablename__ = "usage_hours"
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    direction: Mapped[str] = mapped_column(
        String(16), primary_key=True
    )  # published|refused|delivered|consumed
    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agency_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    records: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


Index("ix_consumptions_grant_time", ConsumptionLineage.grant_id, ConsumptionLineage.consumed_at)
Index("ix_usage_dataset_hour", UsageHour.dataset_id, UsageHour.hour)
Index("ix_usage_agency_hour", UsageHour.agency_id, UsageHour.hour)


class GrantKey(Base):
    """One version of a grant's data key (R8, R12): random, stored only wrapped under the master secret.

    ``epoch`` is ``<grant version>.<rotation period>``: every change of the grant bumps its version, so the
    first record sealed after a change makes a new key; ``not_after`` is set when a newer key supersedes
    it; ``wrapped`` is emptied when the key is destroyed (crypto-shredding, ``destroyed_at``).
    """

    __tablename__ = "grant_keys"
    kid: Mapped[str] = mapped_column(String(16), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), index=True)
    epoch: Mapped[str] = mapped_column(String(32))
    wrapped: Mapped[str | None] = mapped_column(String(128), nullable=True)
    not_before: Mapped[datetime] = mapped_column(default=utcnow)
    not_after: Mapped[datetime | None] = mapped_column(nullable=True)
    destroyed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    __table_args__ = (Index("ux_grant_keys_epoch", "grant_id", "epoch", unique=True),)


class SubjectIndex(Base):
    """Keyed subject values of accepted records (bus.lineage.subjects): HMAC under the master secret,
    never the raw value; answers ``GET /v1/lineage/subjects`` with the record's lineage."""

    __tablename__ = "subject_index"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(String(40))
    semantic: Mapped[str] = mapped_column(String(128))
    value_key: Mapped[str] = mapped_column(String(64))
    indexed_at: Mapped[datetime] = mapped_column(index=True)


# (semantic, value_key, id): the lookup filters and takes the newest rows from one index
Index("ix_subject_index_lookup", SubjectIndex.semantic, SubjectIndex.value_key, SubjectIndex.id)


# --- authorised operation (R11) ----------------------------------------------------------------------
class AnalysisRuleVersion(Base):
    """A dataset owner's analysis rule (R11), versioned: operations name the version they ran on."""

    __tablename__ = "analysis_rules"
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Operation(Base):
    """An operator's aggregate computation over one dataset (R11); lifecycle like a grant's."""

    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    operator_id: Mapped[str] = mapped_column(ForeignKey("agencies.id"), index=True)
    scenario_code: Mapped[str] = mapped_column(String(64))
    scenario_description: Mapped[str] = mapped_column(Text)
    legal_basis: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    rule_version: Mapped[int] = mapped_column(Integer)
    sharing_attribute: Mapped[str] = mapped_column(String(16))  # of the derived product, never wider
    status: Mapped[str] = mapped_column(String(16), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped on every status change
    valid_until: Mapped[datetime | None] = mapped_column(nullable=True)
    derived_dataset_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    grant_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)


class OperationCheckpoint(Base):
    """The executor's window state of one operation with the input offsets it covers (one transaction)."""

    __tablename__ = "operation_checkpoints"
    operation_id: Mapped[str] = mapped_column(ForeignKey("operations.id"), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    offsets: Mapped[dict[str, Any]] = mapped_column(JSON)  # partition (str) -> next offset to read
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OperationRelease(Base):
    """One closed window's surviving rows: stored (with the budget debit) before they are published."""

    __tablename__ = "operation_releases"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    operation_id: Mapped[str] = mapped_column(ForeignKey("operations.id"), index=True)
    window_start_ms: Mapped[int] = mapped_column(BigInteger)
    window_end_ms: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[list[Any]] = mapped_column(JSON)
    suppressed: Mapped[int] = mapped_column(Integer, default=0)
    source_records: Mapped[int] = mapped_column(Integer, default=0)
    epsilon: Mapped[float | None] = mapped_column(nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | published | refused | dropped
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(nullable=True)


class OperationResult(Base):
    """Lineage of one released result row: which operation, rule version, window, k, epsilon, how many."""

    __tablename__ = "operation_results"
    record_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    operation_id: Mapped[str] = mapped_column(ForeignKey("operations.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(String(64), index=True)  # the source
    derived_dataset_id: Mapped[str] = mapped_column(String(64), index=True)
    rule_version: Mapped[int] = mapped_column(Integer)
    window_start_ms: Mapped[int] = mapped_column(BigInteger)
    window_end_ms: Mapped[int] = mapped_column(BigInteger)
    k: Mapped[int] = mapped_column(Integer)
    epsilon: Mapped[float | None] = mapped_column(nullable=True)
    source_records: Mapped[int] = mapped_column(Integer)
    released_at: Mapped[datetime] = mapped_column(default=utcnow)


class PrivacyBudget(Base):
    """Epsilon spent by one operator on one dataset on one UTC day; debited by a conditional UPDATE."""

    __tablename__ = "privacy_budget"
    operator_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD (UTC)
    spent: Mapped[float] = mapped_column(default=0.0)
    budget: Mapped[float] = mapped_column()  # the rule's per_operator_per_day when the day began
