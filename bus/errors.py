"""One exception hierarchy whose members carry the stable error codes of the contract.

The gateway turns every ``BusError`` into an ``application/problem+json`` body in one place
(`bus.gateway.problems`); workers put ``code`` and ``detail`` on rejected records and receipts.
Codes are stable: add new ones, never rename.
"""

from __future__ import annotations

from typing import Any


class BusError(Exception):
    """Root of every error the bus reports to a caller."""

    code: str = "bus.error"
    status: int = 400
    title: str = "Request refused"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"/problems/{self.code}",  # relative (RFC 9457 3.1.1); the gateway makes it absolute
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


# --- authentication and authorisation (R14) ---------------------------------------------------
class AuthMissing(BusError):
    code, status, title = "auth.missing", 401, "Authentication required"


class AuthInvalid(BusError):
    code, status, title = "auth.invalid", 401, "Invalid credentials"


class AuthForbidden(BusError):
    code, status, title = "auth.forbidden", 403, "Not allowed"


# --- request shape ------------------------------------------------------------------------------
class RequestInvalid(BusError, ValueError):
    code, status, title = "request.invalid", 422, "Invalid request"


class RequestTooLarge(RequestInvalid):
    """R14: a request body over ``BUS_MAX_REQUEST_BYTES``, refused before it is parsed."""

    code, status, title = "request.too_large", 413, "Request body too large"


class NotFound(BusError, LookupError):
    code, status, title = "not_found", 404, "Not found"


class Conflict(BusError):
    code, status, title = "conflict", 409, "Conflict"


class MethodNotAllowed(BusError):
    code, status, title = "method_not_allowed", 405, "Method not allowed"


# --- catalogue (R1-R6) ---------------------------------------------------------------------------
class CatalogError(BusError, ValueError):
    code, status, title = "catalog.invalid", 422, "Catalogue entry refused"


class InvalidSchema(CatalogError):
    code = "catalog.invalid_schema"


class ReasonRequired(CatalogError):
    code = "catalog.reason_required"


class CoreNotUnconditional(CatalogError):
    code = "catalog.core_not_unconditional"


class CatalogNotFound(NotFound):
    code = "catalog.not_found"


class UnknownField(CatalogError):
    """Sharing names a field the schema does not have."""

    code = "catalog.unknown_field"


class ConditionsRequired(CatalogError):
    """R5: a conditional entry must say which fields and/or which agencies qualify."""

    code = "catalog.conditions_required"


class InvalidSharing(CatalogError):
    """Sharing details that contradict the attribute (e.g. eligible agencies on an unconditional entry)."""

    code = "catalog.invalid_sharing"


class UnknownAgency(CatalogError):
    code = "catalog.unknown_agency"


class CommentRequired(CatalogError):
    """A rejection must tell the owner what to fix."""

    code = "catalog.comment_required"


class DatasetExists(Conflict):
    code = "catalog.exists"


class AgencyExists(Conflict):
    code = "agency.exists"


class AgencyNotFound(NotFound):
    code = "agency.not_found"


class BadState(BusError):
    code, status, title = "catalog.bad_state", 409, "Not allowed in this state"


class DatasetNotApproved(BusError):
    code, status, title = "dataset.not_approved", 409, "Dataset is not approved"


class SchemaIncompatible(BusError):
    code, status, title = "schema.incompatible", 409, "Schema version is not backward compatible"


# --- re-collection and forwarding (R8, R9) -------------------------------------------------------
class RecollectionOverlap(BusError):
    code, status, title = (
        "recollection.overlap",
        409,
        "Data obtainable by sharing must not be collected again",
    )


class RecollectionDetected(BusError):
    code, status, title = "recollection.detected", 409, "Record re-collects another agency's data"


class ForwardingDetected(BusError):
    code, status, title = "forwarding.detected", 409, "Record forwards shared data"


# --- sharing and grants (R5, R7, R10) ------------------------------------------------------------
class SharingError(BusError):
    status, title = 403, "Sharing refused"


class NotShared(SharingError):
    code = "sharing.not_shared"


class FieldsNotShareable(SharingError):
    code = "sharing.fields_not_shareable"


class NotEligible(SharingError):
    code = "sharing.not_eligible"


class GrantError(BusError, ValueError):
    code, status, title = "grant.invalid", 422, "Grant request refused"


class ScenarioRequired(GrantError):
    code = "grant.scenario_required"


class LegalBasisRequired(GrantError):
    code = "grant.legal_basis_required"


class GrantNotActive(BusError):
    code, status, title = "grant.not_active", 409, "Grant is not active"


class GrantNotFound(NotFound):
    code = "grant.not_found"


class IdempotencyKeyReused(BusError):
    code, status, title = "idempotency.key_reused", 422, "Idempotency-Key reused with a different request"


class IdempotencyInProgress(BusError):
    code, status, title = "idempotency.in_progress", 409, "A request with this Idempotency-Key is in progress"


class EgressRefused(BusError):
    code, status, title = "egress.refused", 403, "Destination may not receive this data"


class Suspended(BusError):
    code, status, title = "suspended", 423, "Suspended"


# --- records (R13, R14) --------------------------------------------------------------------------
class RecordError(BusError, ValueError):
    code, status, title = "record.invalid", 422, "Record refused"


class RecordInvalid(RecordError):
    code = "record.invalid"


class RecordTooLarge(RecordError):
    code, status = "record.too_large", 413


class RecordUnauthenticated(RecordError):
    code, status = "record.unauthenticated", 401


# --- infrastructure --------------------------------------------------------------------------------
class Unavailable(BusError):
    code, status, title = "unavailable", 503, "A part of the bus is unavailable"


class CursorStale(Conflict):
    """R14: a cursor points past the end of its topic (the broker lost records); ``start`` is where to
    resume instead of silently skipping what comes next."""

    code, title = "cursor.stale", "Cursor is past the end of the topic"


class ConfigError(BusError):
    code, status, title = "config.invalid", 422, "Invalid configuration"


class KafkaAclsUnsupported(BusError):
    """The broker cannot hold ACLs (the embedded Tansu broker, or a Kafka without an authorizer): the bus
    refuses to manage them there rather than call ``create_acls``, which aborts librdkafka on Tansu."""

    code, status, title = "kafka.acls_unsupported", 501, "The broker does not enforce ACLs"


# --- connectors (R8, R13) -------------------------------------------------------------------------
class ConnectorExists(Conflict):
    code = "connector.exists"


class ConnectorNotFound(NotFound):
    code = "connector.not_found"


class ConnectorUnknownKind(ConfigError):
    code = "connector.unknown_kind"


class ConnectorConfigInvalid(ConfigError):
    """A connector's config does not fit its kind; ``errors`` names each field (values never echoed)."""

    code = "connector.config_invalid"


class ConnectorBindingInvalid(BusError):
    """R13/R8: a source must name an approved dataset of its agency, a sink an active grant of its agency."""

    code, status, title = "connector.binding_invalid", 422, "Connector binding refused"


class ConnectorUnavailable(BusError):
    """A connector's external system keeps failing; retried with backoff, then the connector stops."""

    code, status, title = "connector.unavailable", 503, "Connector endpoint unavailable"


class ConnectorFailed(BusError):
    """A connector cannot go on (misconfigured or refused destination); it stops and reports."""

    code, status, title = "connector.failed", 502, "Connector failed"


class ConnectorRecordRefused(BusError):
    """One record that a source could not read or a destination refused: it goes to the dead-letter topic."""

    code, status, title = "connector.record_refused", 422, "Record refused by the connector"


# --- incidents, receiving systems (R8, R15, R16) --------------------------------------------------
class IncidentNotFound(NotFound):
    code = "incident.not_found"


class LineageNotFound(NotFound):
    """No lineage is recorded for this record id (never published, or removed by retention)."""

    code = "lineage.not_found"


class SystemExists(Conflict):
    code = "system.exists"


class SystemNotFound(NotFound):
    code = "system.not_found"


# --- authorised operation (R11) ---------------------------------------------------------------------
class AnalysisRuleError(BusError, ValueError):
    """The data owner's analysis rule is refused; the subclass names why."""

    code, status, title = "analysis_rule.invalid", 422, "Analysis rule refused"


class RuleSensitiveField(AnalysisRuleError):
    """A dimension or measure is a ``sensitive`` field: it may never be grouped on or aggregated."""

    code = "analysis_rule.sensitive_field"


class RuleSubjectInDimensions(AnalysisRuleError):
    """The subject field (whose distinct values count as persons) may never be a dimension."""

    code = "analysis_rule.subject_in_dimensions"


class RuleKBelowFloor(AnalysisRuleError):
    """``min_group_size`` under the bus floor ``BUS_MIN_GROUP_SIZE``."""

    code = "analysis_rule.k_below_floor"


class RuleUnknownField(AnalysisRuleError):
    code = "analysis_rule.unknown_field"


class OperationError(BusError, ValueError):
    """An operation request refused by the static checks; the subclass names which."""

    code, status, title = "operation.invalid", 422, "Operation refused"


class OperationNoRule(OperationError):
    """The dataset has no analysis rule: nothing may be computed on it."""

    code, status = "operation.no_rule", 409


class OperationKTooSmall(OperationError):
    code = "operation.k_too_small"


class OperationFieldNotAllowed(OperationError):
    """Group-by, filter or measure outside what the analysis rule allows."""

    code = "operation.field_not_allowed"


class OperationSubjectOutput(OperationError):
    """The subject field (or a function of it) would be output, grouped on or filtered on."""

    code = "operation.subject_output"


class OperationWindowNotAllowed(OperationError):
    code = "operation.window_not_allowed"


class OperationDifferenceAttack(OperationError):
    """Differs from another of the operator's operations only by filters, without noise."""

    code, status = "operation.difference_attack", 409


class OperationBudgetExhausted(BusError):
    """The operator's privacy budget (epsilon per day on this dataset) cannot pay for a release."""

    code, status, title = "operation.budget_exhausted", 409, "Privacy budget exhausted"


class OperationNotFound(NotFound):
    code = "operation.not_found"


class OperationBadState(BusError):
    code, status, title = "operation.bad_state", 409, "Not allowed in this state"


def all_codes() -> set[str]:
    """Every stable code, for the README and the contract test."""
    seen: set[str] = set()
    stack: list[type[BusError]] = [BusError]
    while stack:
        cls = stack.pop()
        seen.add(cls.code)
        stack.extend(cls.__subclasses__())
    return seen
