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


class Header:
    """Kafka header names of the contract."""

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
    """R15: what an incident is about. Violations are classified into these from their error code
    (``incidents.kind_for``); ``BAD_SIGNATURE_BURST`` and ``REFUSAL_SPIKE`` are anomalies the bus
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


ViolationKind = IncidentKind  # the kind a violation is recorded under: one vocabulary for both


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


class Via(StrEnum):
    """R14, R18: the path a grantee consumed a record by (``lineage_consumptions.via``); a sink
    connector's is ``connector:<name>`` (``Via.connector(name)``)."""

    SDK = "sdk"
    HTTP = "http"
    SSE = "sse"
    CONNECTOR = "connector"

    @staticmethod
    def connector(name: str) -> str:
        return f"{Via.CONNECTOR}:{name}"
