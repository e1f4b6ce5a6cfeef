"""The bus's vocabulary: one enum per concept, imported everywhere so names mean one thing."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    AGENCY = "agency"
    REVIEWER = "reviewer"
    AUDITOR = "auditor"
    OPERATOR = "operator"
    ADMIN = "admin"  # the bus's own admin key; never granted to an agency


class Category(StrEnum):
    """R4: basic information, industry themes, application topics."""

    BASIC = "basic"
    INDUSTRY = "industry"
    APPLICATION = "application"


class Grade(StrEnum):
    """R3: grading per the Data Security Law."""

    GENERAL = "general"
    IMPORTANT = "important"
    CORE = "core"


class Sensitivity(StrEnum):
    """R3/R12: per-field sensitivity driving masking on delivery."""

    PUBLIC = "public"
    INTERNAL = "internal"
    PERSONAL = "personal"
    SENSITIVE = "sensitive"


class SharingAttribute(StrEnum):
    """R5: sharing is the norm, not sharing the exception."""

    UNCONDITIONAL = "unconditional"
    CONDITIONAL = "conditional"
    NONE = "none"


class DatasetStatus(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    RETIRED = "retired"


class GrantStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    DENIED = "denied"
    REVOKED = "revoked"
    EXPIRED = "expired"
    SUSPENDED = "suspended"


class TopicKind(StrEnum):
    """The kinds of bus topic a sealed record can belong to (bound into its envelope's associated data)."""

    INGRESS = "ingress"
    DATA = "data"
    DELIVER = "deliver"
    DEADLETTER = "deadletter"


class ViolationKind(StrEnum):
    """What a refused record or request says about its sender (R15): each opens or joins an incident."""

    UNAUTHENTICATED = "record.unauthenticated"
    RECOLLECTION = "recollection.detected"
    FORWARDING = "forwarding.detected"
    SUSPENDED = "suspended"
    FORBIDDEN = "auth.forbidden"
    FORGED_DELIVERY = "forged_delivery"


class Via(StrEnum):
    """How a record entered the bus (lineage) or was read (consumption, ``lineage_consumptions.via``;
    a sink connector's is ``connector:<name>``, ``Via.connector(name)``)."""

    PIPELINE = "pipeline"  # the Kafka pipeline worker (SDK and source connectors)
    VALIDATOR = "validator"  # lineage written before the one pipeline (kept for old rows)
    HTTP = "http"
    SDK = "sdk"  # consumption: a Subscriber's receipt
    SSE = "sse"  # consumption: GET /v1/grants/{id}/stream
    CONNECTOR = "connector"

    @staticmethod
    def connector(name: str) -> str:
        return f"{Via.CONNECTOR}:{name}"


class OperationStatus(StrEnum):
    """R11: an operation's lifecycle, like a grant's."""

    PENDING = "pending"
    ACTIVE = "active"
    DENIED = "denied"
    REVOKED = "revoked"
    EXPIRED = "expired"
    SUSPENDED = "suspended"


class MeasureFn(StrEnum):
    """R11: the aggregate functions an analysis rule may allow on a measure."""

    COUNT = "count"
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"




class Header:
    """Kafka header names of the contract."""

    META = "bus-meta"  # the one compact header of bus metadata on internal topics (bus.exchange.envelope)

    RECORD_ID = "bus-record-id"
    PUBLISHER = "bus-publisher"
    DATASET = "bus-dataset"
    SCHEMA_VERSION = "bus-schema-version"
    SIGNATURE = "bus-signature"
    GRANT = "bus-grant"
    SCENARIO = "bus-scenario"
    PUBLISHED_AT = "bus-published-at"
    ERROR_CODE = "bus-error-code"
    ERROR_DETAIL = "bus-error-detail"
    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"
    CONNECTOR = "bus-connector"  # on dead letters: the connector that gave up on the record
    ORIGIN = "bus-origin"  # on dead letters: where the record came from (file@offset, table:id, topic)


class IncidentKind(StrEnum):
    """R15: what an incident is about. Violations (``ViolationKind``, by error code) are classified into
    these (``incidents.kind_for``); ``BAD_SIGNATURE_BURST`` and ``REFUSAL_SPIKE`` are anomalies the bus
    detects from its own counters."""

    FORWARDING = "forwarding"
    RECOLLECTION = "recollection"
    EGRESS = "egress"
    ACCESS_REFUSED = "access_refused"
    VIOLATION = "violation"  # a refusal whose code names no more specific kind
    SUSPENDED = "suspended"
    BAD_SIGNATURE = "bad_signature"
    RECORD_REFUSED = "record_refused"
    BAD_SIGNATURE_BURST = "bad_signature_burst"
    REFUSAL_SPIKE = "refusal_spike"
    FORGED_DELIVERY = "forged_delivery"  # records on a deliver.<grant> topic that the bus did not seal there
    BROKER_LOST = "broker_lost"  # the broker came back without its topics (bus.exchange.broker_identity)
    WORKER_STALLED = "worker_stalled"  # a worker held one batch for BUS_STALL_SECONDS (bus.exchange.stalls)



class Severity(StrEnum):
    """R15: severity of an incident, in increasing order (``list(Severity)`` is the order)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class LineageOutcome(StrEnum):
    """R14: the validation outcome of a published record (``lineage_records.outcome`` keeps ``accepted``
    or the refusal's error code; the record lineage reports ``accepted`` / ``refused`` and the code)."""

    ACCEPTED = "accepted"
    REFUSED = "refused"

