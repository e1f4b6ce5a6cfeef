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
