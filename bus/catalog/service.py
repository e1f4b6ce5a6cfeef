"""The catalogue service (R1-R6, R13, R16): store-touching operations behind the catalogue endpoints.

Each operation is one transaction that also appends its audit event (same transaction, so the log
and the catalogue never disagree); catalogue events go to ``bus.catalog`` only after the commit.
Validation itself is pure and lives in ``schema.py``, ``sharing.py``, ``workflow.py``, ``compat.py``.
"""

from __future__ import annotations

import logging
import statistics
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bus.catalog import events
from bus.catalog.compat import check_compatible
from bus.catalog.requests import DatasetIn, ReviewIn
from bus.catalog.schema import catalog_fields, parse_catalog_schema, redact_schema
from bus.catalog.sharing import validate_sharing
from bus.catalog.workflow import PUBLISHED, Action, check_schema_editable, next_status
from bus.context import BusContext
from bus.errors import (
    AuthForbidden,
    CatalogNotFound,
    CommentRequired,
    DatasetExists,
    RecollectionOverlap,
    UnknownAgency,
)
from bus.lineage import audit
from bus.store.models import Agency, Dataset, Grant, SchemaVersion
from bus.vocab import DatasetStatus, Grade, Role, SharingAttribute

log = logging.getLogger(__name__)


class Caller(Protocol):
    """Who is asking (``bus.gateway.auth.Principal`` fits)."""

    @property
    def id(self) -> str: ...

    @property
    def roles(self) -> frozenset[str]: ...

    @property
    def is_admin(self) -> bool: ...

    def has(self, *roles: str) -> bool: ...


# --- views --------------------------------------------------------------------------------------------
def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt is not None else None


def sees_everything(caller: Caller, ds: Dataset) -> bool:
    """Owner, reviewers, auditors and the admin see entries whole; others see not-shared ones redacted."""
    return caller.id == ds.owner_id or caller.has(Role.REVIEWER, Role.AUDITOR)


def can_see(caller: Caller, ds: Dataset) -> bool:
    """Drafts and rejected entries are their owner's work in progress."""
    return ds.status in PUBLISHED or sees_everything(caller, ds)


def _schema_view(caller: Caller, ds: Dataset, schema: dict[str, Any]) -> dict[str, Any]:
    if ds.sharing_attribute == SharingAttribute.NONE and not sees_everything(caller, ds):
        return redact_schema(schema)
    return schema


def dataset_json(ds: Dataset, schema: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """The dataset as ``GET /v1/datasets/{id}`` returns it (other parts of the bus read this shape)."""
    return {
        "id": ds.id,
        "owner": ds.owner_id,
        "title": ds.title,
        "description": ds.description,
        "category": ds.category,
        "grade": ds.grade,
        "tags": list(ds.tags or []),
        "domestic_only": ds.domestic_only,
        "sharing": {
            "attribute": ds.sharing_attribute,
            "reason": ds.sharing_reason,
            "legal_basis": ds.legal_basis,
            "shareable_fields": ds.shareable_fields,
            "eligible_agencies": ds.eligible_agencies,
        },
        "status": ds.status,
        "schema_version": ds.schema_version,
        "schema": _schema_view(caller, ds, schema),
        "overlap": ds.overlap if sees_everything(caller, ds) else None,  # R9 report: for owner and reviewers
        "created_at": _iso(ds.created_at),
        "submitted_at": _iso(ds.submitted_at),
        "reviewed_at": _iso(ds.reviewed_at),
        "reviewed_by": ds.reviewed_by,
        "review_comment": ds.review_comment,
        "retired_at": _iso(ds.retired_at),
        "suspended": ds.suspended,
    }


# --- helpers ------------------------------------------------------------------------------------------
def _load(s: Session, dataset_id: str, *, lock: bool = False) -> Dataset:
    q = select(Dataset).where(Dataset.id == dataset_id)
    if lock:
        q = q.with_for_update()
    ds = s.scalar(q)
    if ds is None:
        raise CatalogNotFound(f"no dataset '{dataset_id}' in the catalogue; list them with GET /v1/datasets")
    return ds


def _schema(s: Session, dataset_id: str, version: int) -> dict[str, Any]:
    sv = s.get(SchemaVersion, (dataset_id, version))
    if sv is None:
        raise CatalogNotFound(f"dataset '{dataset_id}' has no schema version {version}")
    return sv.schema


def _require_owner(caller: Caller, ds: Dataset, what: str, *, admin_too: bool = False) -> None:
    if caller.id == ds.owner_id or (admin_too and caller.is_admin):
        return
    who = "its owner or the admin" if admin_too else "its owner"
    raise AuthForbidden(f"only {who} ('{ds.owner_id}') can {what} dataset '{ds.id}'")


def _visible(s: Session, caller: Caller, dataset_id: str) -> Dataset:
    ds = _load(s, dataset_id)
    if not can_see(caller, ds):
        raise CatalogNotFound(f"no dataset '{dataset_id}' in the catalogue; list them with GET /v1/datasets")
    return ds


def _announce(ctx: BusContext, dataset_id: str) -> None:
    """Tell validators and routers to re-read the dataset (approval, retirement, new schema)."""
    try:
        from bus.exchange.policy_events import announce

        announce(ctx, "dataset", dataset_id)
    except Exception:  # workers also re-read the store on their own schedule; the change is committed
        log.warning("could not announce the change of dataset %s", dataset_id, exc_info=True)


def _sync_acls(ctx: BusContext, reason: str) -> None:
    """After the commit: the broker's ACLs follow the catalogue (``BUS_KAFKA_ACLS``; never raises)."""
    from bus.exchange.acl_sync import sync

    sync(ctx, reason)


def _unknown_agencies(s: Session, ids: list[str] | None) -> list[str]:
    if not ids:
        return []
    found = set(s.scalars(select(Agency.id).where(Agency.id.in_(ids))))
    return [i for i in ids if i not in found]


# --- operations ---------------------------------------------------------------------------------------
def create_dataset(ctx: BusContext, caller: Caller, body: DatasetIn) -> dict[str, Any]:
    """R1/R3-R6/R16: a new catalogue entry in ``draft``, owned by the caller."""
    if Role.AGENCY not in caller.roles:
        raise AuthForbidden("only agencies (role 'agency') catalogue datasets; use the owning agency's key")
    schema = parse_catalog_schema(body.avro_schema)
    sharing = validate_sharing(
        body.grade,
        body.sharing.attribute,
        body.sharing.reason,
        body.sharing.legal_basis,
        body.sharing.shareable_fields,
        body.sharing.eligible_agencies,
        catalog_fields(schema),
    )
    tags = list(dict.fromkeys(t.strip() for t in body.tags if t.strip()))
    try:
        with ctx.store.session() as s:
            unknown = _unknown_agencies(s, sharing.eligible_agencies)
            if unknown:
                raise UnknownAgency(
                    f"sharing.eligible_agencies names unknown agencies: {', '.join(unknown)}",
                    field="sharing.eligible_agencies",
                    unknown=unknown,
                )
            if s.get(Dataset, body.id) is not None:
                raise DatasetExists(
                    f"dataset '{body.id}' is already catalogued; choose another id or add a "
                    "schema version with PUT /v1/datasets/{id}/schema"
                )
            ds = Dataset(
                id=body.id,
                owner_id=caller.id,
                title=body.title.strip(),
                description=body.description,
                category=body.category.value,
                grade=body.grade.value,
                tags=tags,
                domestic_only=body.domestic_only,
                sharing_attribute=sharing.attribute.value,
                sharing_reason=sharing.reason,
                legal_basis=sharing.legal_basis,
                shareable_fields=sharing.shareable_fields,
                eligible_agencies=sharing.eligible_agencies,
                status=DatasetStatus.DRAFT.value,
                schema_version=1,
            )
            s.add(ds)
            s.flush()
            s.add(SchemaVersion(dataset_id=ds.id, version=1, schema=schema))
            row = audit.append(
                s,
                caller.id,
                "dataset.created",
                "dataset",
                ds.id,
                {
                    "owner": ds.owner_id,
                    "title": ds.title,
                    "category": ds.category,
                    "grade": ds.grade,
                    "sharing": sharing.to_json(),
                    "domestic_only": ds.domestic_only,
                    "schema_version": 1,
                },
            )
            s.flush()
    except IntegrityError:
        raise DatasetExists(f"dataset '{body.id}' is already catalogued; choose another id") from None
    events.publish(ctx, [events.catalog_event("dataset.created", caller.id, ds, audit_seq=row.seq)])
    return dataset_json(ds, schema, caller)


def submit(ctx: BusContext, caller: Caller, dataset_id: str) -> dict[str, Any]:
    """R1/R9: the owner submits for review; the overlap check may refuse or report a partial overlap."""
    from bus.catalog import overlap

    try:
        with ctx.store.session() as s:
            ds = _load(s, dataset_id, lock=True)
            _require_owner(caller, ds, "submit")
            target = next_status(ds.status, Action.SUBMIT, ds.id)
            schema = _schema(s, ds.id, ds.schema_version)
            report = overlap.check_on_submit(s, ds, schema)
            ds.overlap = report
            ds.status = target.value
            ds.submitted_at = datetime.now(UTC)
            row = audit.append(
                s,
                caller.id,
                "dataset.submitted",
                "dataset",
                ds.id,
                {"schema_version": ds.schema_version, "overlap": report},
            )
    except RecollectionOverlap as exc:
        _overlap_refused(ctx, caller.id, dataset_id, exc, "dataset.submit_refused")
        raise
    events.publish(ctx, [events.catalog_event("dataset.submitted", caller.id, ds, audit_seq=row.seq)])
    return dataset_json(ds, schema, caller)


def review(ctx: BusContext, caller: Caller, dataset_id: str, body: ReviewIn) -> dict[str, Any]:
    """R1: only a reviewer approves or rejects, never its own agency's entry; a rejection says why."""
    if Role.REVIEWER not in caller.roles:
        raise AuthForbidden(
            "only the data management department's reviewers (role 'reviewer') review catalogue entries"
        )
    comment = (body.comment or "").strip() or None
    if body.decision == "reject" and not comment:
        raise CommentRequired("a rejection needs a comment telling the owner what to fix", field="comment")
    with ctx.store.session() as s:
        ds = _load(s, dataset_id, lock=True)
        if ds.owner_id == caller.id:
            raise AuthForbidden(
                f"'{caller.id}' owns dataset '{ds.id}' and cannot review its own entry; another reviewer must"
            )
        target = next_status(
            ds.status, Action.APPROVE if body.decision == "approve" else Action.REJECT, ds.id
        )
        ds.status = target.value
        ds.reviewed_at = datetime.now(UTC)
        ds.reviewed_by = caller.id
        ds.review_comment = comment
        row = audit.append(
            s,
            caller.id,
            "dataset.reviewed",
            "dataset",
            ds.id,
            {
                "decision": body.decision,
                "comment": comment,
                "status": ds.status,
                "schema_version": ds.schema_version,
            },
        )
        schema = _schema(s, ds.id, ds.schema_version)
    events.publish(
        ctx,
        [
            events.catalog_event(
                "dataset.reviewed", caller.id, ds, decision=body.decision, comment=comment, audit_seq=row.seq
            )
        ],
    )
    if target is DatasetStatus.APPROVED:
        _announce(ctx, ds.id)
        _sync_acls(ctx, f"dataset {ds.id} approved")
    return dataset_json(ds, schema, caller)


def _overlap_refused(
    ctx: BusContext, agency_id: str, dataset_id: str, exc: RecollectionOverlap, action: str
) -> None:
    """R9/R15: a submit or a schema version refused as re-collection is a decision too: on the record
    (audit ``action``) and an incident, each outside the rolled-back transaction of the refused change."""
    with ctx.store.session() as s:
        audit.append(
            s,
            agency_id,
            action,
            "dataset",
            dataset_id,
            {
                "code": exc.code,
                "detail": exc.detail,
                **{k: v for k, v in exc.extra.items() if k != "errors"},
            },
        )
    _overlap_incident(ctx, agency_id, dataset_id, exc, action)


def _overlap_incident(
    ctx: BusContext, agency_id: str, dataset_id: str, exc: RecollectionOverlap, action: str
) -> None:
    """R9/R15: a change refused as re-collection opens (or grows) an incident, outside the rolled-back
    transaction; failing to record it never hides the refusal from the caller."""
    from bus.lineage.incidents import record_violations

    try:
        record_violations(
            ctx,
            [
                {
                    "kind": exc.code,
                    "code": exc.code,
                    "agency_id": agency_id,
                    "dataset_id": dataset_id,
                    "detail": exc.detail,
                }
            ],
        )
    except Exception:
        log.warning(
            "%s: %s refused (%s), but the incident could not be recorded",
            action,
            dataset_id,
            exc.code,
            exc_info=True,
        )


def retire(ctx: BusContext, caller: Caller, dataset_id: str) -> dict[str, Any]:
    """An approved entry leaves the catalogue: no more publishing or requests (its history stays)."""
    with ctx.store.session() as s:
        ds = _load(s, dataset_id, lock=True)
        _require_owner(caller, ds, "retire", admin_too=True)
        target = next_status(ds.status, Action.RETIRE, ds.id)
        ds.status = target.value
        ds.retired_at = datetime.now(UTC)
        row = audit.append(
            s, caller.id, "dataset.retired", "dataset", ds.id, {"schema_version": ds.schema_version}
        )
        schema = _schema(s, ds.id, ds.schema_version)
    events.publish(ctx, [events.catalog_event("dataset.retired", caller.id, ds, audit_seq=row.seq)])
    _announce(ctx, ds.id)
    _sync_acls(ctx, f"dataset {ds.id} retired")
    _forget_fingerprints(ctx, ds.id)
    return dataset_json(ds, schema, caller)


def _forget_fingerprints(ctx: BusContext, dataset_id: str) -> None:
    """R9: a retired dataset's record fingerprints leave Redis, so its records are no longer matched.

    Runs after the commit: the retirement stands even when Redis fails. NOTE: on failure the keys stay
    (``<prefix>bus:fp:<dataset>:*``) and take memory until someone unlinks them; the warning names them.
    """
    try:
        from bus.exchange.fingerprints import FingerprintGuard

        removed = FingerprintGuard(ctx).forget_dataset(dataset_id)
    except Exception:
        log.warning(
            "dataset %s is retired, but its record fingerprints could not be removed from Redis; "
            "they stay until deleted: unlink the keys matching %s",
            dataset_id,
            ctx.rkey("fp", dataset_id, "*"),
            exc_info=True,
        )
        return
    log.info("dataset %s retired: %d fingerprint keys removed from Redis", dataset_id, removed)


def add_schema_version(
    ctx: BusContext, caller: Caller, dataset_id: str, raw: Any
) -> tuple[dict[str, Any], bool]:
    """R2: a new schema version (compatible with the current one once approved); ``(view, created)``.

    The same schema as the current version is a no-op (``created`` is False), so retries are safe.
    R9: a new version of an approved dataset is checked for re-collection like a submit (drafts are
    checked when they are submitted): a full overlap is refused (``recollection.overlap``, audited as
    ``dataset.schema_refused``, an incident) and nothing is stored; a partial one is stored on the entry
    for the reviewers, recorded in the audit event and returned as ``overlap``.
    """
    try:
        return _add_schema_version(ctx, caller, dataset_id, raw)
    except RecollectionOverlap as exc:
        _overlap_refused(ctx, caller.id, dataset_id, exc, "dataset.schema_refused")
        raise


def _add_schema_version(
    ctx: BusContext, caller: Caller, dataset_id: str, raw: Any
) -> tuple[dict[str, Any], bool]:
    from bus.catalog import overlap

    schema = parse_catalog_schema(raw)
    with ctx.store.session() as s:
        ds = _load(s, dataset_id, lock=True)
        _require_owner(caller, ds, "change the schema of")
        check_schema_editable(ds.status, ds.id)
        current = _schema(s, ds.id, ds.schema_version)
        if current == schema:
            return _version_json(ds, ds.schema_version, current, caller), False
        if ds.status == DatasetStatus.APPROVED:
            check_compatible(current, schema, ds.schema_version)
        # the sharing declaration must still hold against the new fields
        validate_sharing(
            Grade(ds.grade),
            SharingAttribute(ds.sharing_attribute),
            ds.sharing_reason,
            ds.legal_basis,
            ds.shareable_fields,
            ds.eligible_agencies,
            catalog_fields(schema),
        )
        version = ds.schema_version + 1
        approved = ds.status == DatasetStatus.APPROVED
        facts: dict[str, Any] = {"version": version, "previous": version - 1, "status": ds.status}
        if approved:  # R9 for the entry's lifetime: it must not evolve into re-collecting
            facts["overlap"] = ds.overlap = overlap.check_on_new_version(s, ds, schema, version)
        s.add(SchemaVersion(dataset_id=ds.id, version=version, schema=schema))
        ds.schema_version = version
        row = audit.append(s, caller.id, "dataset.schema_added", "dataset", ds.id, facts)
    events.publish(ctx, [events.catalog_event("dataset.schema_added", caller.id, ds, audit_seq=row.seq)])
    view = _version_json(ds, version, schema, caller)
    if approved:
        _announce(ctx, ds.id)
        view["overlap"] = facts["overlap"]
    return view, True


def _version_json(ds: Dataset, version: int, schema: dict[str, Any], caller: Caller) -> dict[str, Any]:
    return {"dataset": ds.id, "version": version, "schema": _schema_view(caller, ds, schema)}


# --- reads --------------------------------------------------------------------------------------------
def get_dataset(ctx: BusContext, caller: Caller, dataset_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        ds = _visible(s, caller, dataset_id)
        return dataset_json(ds, _schema(s, ds.id, ds.schema_version), caller)


def get_schema(ctx: BusContext, caller: Caller, dataset_id: str, version: int | None) -> dict[str, Any]:
    with ctx.store.session() as s:
        ds = _visible(s, caller, dataset_id)
        v = version if version is not None else ds.schema_version
        return _version_json(ds, v, _schema(s, ds.id, v), caller)


def schema_versions(ctx: BusContext, caller: Caller, dataset_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        ds = _visible(s, caller, dataset_id)
        rows = s.execute(
            select(SchemaVersion.version, SchemaVersion.created_at)
            .where(SchemaVersion.dataset_id == ds.id)
            .order_by(SchemaVersion.version)
        ).all()
        return {
            "dataset": ds.id,
            "current": ds.schema_version,
            "versions": [{"version": v, "created_at": _iso(at)} for v, at in rows],
        }


def list_datasets(
    ctx: BusContext,
    caller: Caller,
    *,
    owner: str | None = None,
    category: str | None = None,
    grade: str | None = None,
    attribute: str | None = None,
    status: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> dict[str, Any]:
    """R1/R5: the catalogue, filtered; others' drafts and rejected entries are left out."""
    conds = []
    for col, value in (
        (Dataset.owner_id, owner),
        (Dataset.category, category),
        (Dataset.grade, grade),
        (Dataset.sharing_attribute, attribute),
        (Dataset.status, status),
    ):
        if value is not None:
            conds.append(col == value)
    if not caller.has(Role.REVIEWER, Role.AUDITOR):
        conds.append((Dataset.status.in_([st.value for st in PUBLISHED])) | (Dataset.owner_id == caller.id))
    base = select(Dataset, SchemaVersion.schema).join(
        SchemaVersion,
        and_(SchemaVersion.dataset_id == Dataset.id, SchemaVersion.version == Dataset.schema_version),
    )
    with ctx.store.session() as s:
        total = s.scalar(select(func.count()).select_from(Dataset).where(*conds)) or 0
        rows = s.execute(base.where(*conds).order_by(Dataset.id).limit(limit).offset(offset)).all()
        items = [dataset_json(row[0], row[1], caller) for row in rows]
    return {"datasets": items, "total": total, "limit": limit, "offset": offset}


def _durations(pairs: list[tuple[datetime | None, datetime | None]]) -> dict[str, Any]:
    secs = sorted((b - a).total_seconds() for a, b in pairs if a is not None and b is not None and b >= a)
    if not secs:
        return {
            "count": 0,
            "mean_seconds": None,
            "median_seconds": None,
            "p90_seconds": None,
            "max_seconds": None,
        }
    p90 = secs[min(len(secs) - 1, int(round(0.9 * (len(secs) - 1))))]
    return {
        "count": len(secs),
        "mean_seconds": round(statistics.fmean(secs), 3),
        "median_seconds": round(statistics.median(secs), 3),
        "p90_seconds": round(p90, 3),
        "max_seconds": round(secs[-1], 3),
    }


def stats(ctx: BusContext) -> dict[str, Any]:
    """R2: catalogue counts by agency, category, grade, attribute and status; review and decision times."""
    out: dict[str, Any] = {}
    with ctx.store.session() as s:
        out["total"] = s.scalar(select(func.count()).select_from(Dataset)) or 0
        for key, col in (
            ("by_agency", Dataset.owner_id),
            ("by_category", Dataset.category),
            ("by_grade", Dataset.grade),
            ("by_attribute", Dataset.sharing_attribute),
            ("by_status", Dataset.status),
        ):
            out[key] = {
                k: n for k, n in s.execute(select(col, func.count()).group_by(col).order_by(col)).all()
            }
        reviewed = s.execute(
            select(Dataset.submitted_at, Dataset.reviewed_at).where(
                Dataset.status.in_(["approved", "rejected", "retired"])
            )
        ).all()
        pending = list(s.scalars(select(Dataset.submitted_at).where(Dataset.status == "submitted")))
        decided = s.execute(
            select(Grant.requested_at, Grant.decided_at).where(Grant.decided_at.is_not(None))
        ).all()
    now = datetime.now(UTC)
    out["review_times"] = _durations([(a, b) for a, b in reviewed])
    out["pending_reviews"] = {
        "count": len(pending),
        "oldest_seconds": round(
            max(((now - a).total_seconds() for a in pending if a is not None), default=0.0), 3
        )
        if pending
        else None,
    }
    out["grant_decision_times"] = _durations([(a, b) for a, b in decided])
    return out
