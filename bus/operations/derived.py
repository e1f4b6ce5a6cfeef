"""Derived products (R11): each active operation's results are a catalogued dataset owned by the operator.

``derived_schema`` (pure) makes the Avro schema of the result rows from the spec; ``create_derived``
(in the approving transaction) catalogues ``derived-<operation>`` (category ``application``, approved,
sharing never wider than the source's) and the operator's grant on it, through which the ordinary
pipeline delivers the rows (SDK, HTTP cursor, SSE).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from bus.catalog.schema import FieldSpec, catalog_fields
from bus.operations.rules import base_type
from bus.operations.spec import OperationSpec
from bus.store.models import Dataset, Grant, Operation, SchemaVersion
from bus.vocab import Category, DatasetStatus, GrantStatus, MeasureFn, Sensitivity, SharingAttribute

WIDTH = {SharingAttribute.NONE: 0, SharingAttribute.CONDITIONAL: 1, SharingAttribute.UNCONDITIONAL: 2}


def derived_id(operation_id: str) -> str:
    return f"derived-{operation_id}"


def narrowest(source: str, wanted: str | None) -> str:
    """The derived product's sharing attribute: the operator's choice, never wider than the source's."""
    if wanted is None:
        return source
    return wanted if WIDTH[SharingAttribute(wanted)] <= WIDTH[SharingAttribute(source)] else source


def _dimension_field(spec: FieldSpec) -> dict[str, Any]:
    kind = base_type(spec)
    avro: Any = kind
    if kind == "enum":
        t = spec.type if isinstance(spec.type, dict) else next(b for b in spec.type if b != "null")
        avro = t
    sensitivity = spec.sensitivity if spec.sensitivity != Sensitivity.SENSITIVE else Sensitivity.PERSONAL
    return {"name": spec.name, "type": ["null", avro], "default": None, "sensitivity": sensitivity.value}


def derived_schema(operation_id: str, spec: OperationSpec, source_fields: list[FieldSpec]) -> dict[str, Any]:
    """The result rows' schema: window bounds (epoch ms), the group-by values, one column per measure."""
    by_name = {f.name: f for f in source_fields}
    fields: list[dict[str, Any]] = [
        {"name": "window_start", "type": "long", "sensitivity": "public", "doc": "epoch ms, inclusive"},
        {"name": "window_end", "type": "long", "sensitivity": "public", "doc": "epoch ms, exclusive"},
    ]
    fields += [_dimension_field(by_name[g]) for g in spec.group_by]
    for m in spec.measures:
        t: Any = "long" if m.fn == MeasureFn.COUNT else ["null", "double"]  # noisy counts are rounded
        col: dict[str, Any] = {
            "name": m.column,
            "type": t,
            "sensitivity": "internal",
            "doc": f"{m.fn.value}({m.field}) over the window's group",
        }
        if isinstance(t, list):
            col["default"] = None
        fields.append(col)
    name = "Derived_" + "".join(c if c.isalnum() else "_" for c in operation_id)
    return {"type": "record", "name": name, "fields": fields}


def result_row(
    window_start_ms: int, window_end_ms: int, group: dict[str, Any], measures: dict[str, float | int | None]
) -> dict[str, Any]:
    """One result row as a record of ``derived_schema``."""
    out: dict[str, Any] = {"window_start": window_start_ms, "window_end": window_end_ms, **group}
    for col, value in measures.items():
        out[col] = int(value) if col.startswith("count_") and value is not None else value
    return out


def _dataset_row(op: Operation, source: Dataset, now: datetime) -> Dataset:
    """The catalogue entry of the derived product: approved with the operation, never shared wider."""
    attribute = op.sharing_attribute
    restricted = attribute != SharingAttribute.UNCONDITIONAL
    return Dataset(
        id=derived_id(op.id),
        owner_id=op.operator_id,
        title=f"Results of operation {op.id} on {source.id}"[:200],
        description=f"Aggregates of {source.id} computed inside the bus (R11): {op.scenario_description}",
        category=Category.APPLICATION.value,
        grade=source.grade,
        tags=["derived", f"derived-from:{source.id}", f"operation:{op.id}"],
        domestic_only=bool(source.domestic_only),
        sharing_attribute=attribute,
        sharing_reason=f"derived product of {source.id}, shared no wider than its source"
        if restricted
        else None,
        legal_basis=op.legal_basis if restricted else None,
        shareable_fields=None,
        eligible_agencies=(list(source.eligible_agencies or []) or [op.operator_id])
        if attribute == SharingAttribute.CONDITIONAL
        else None,
        status=DatasetStatus.APPROVED.value,
        schema_version=1,
        created_at=now,
        submitted_at=now,
        reviewed_at=now,
        reviewed_by=source.owner_id,
        review_comment=f"derived product of operation {op.id}, approved with the operation",
    )


def create_derived(
    s: Session,
    op: Operation,
    source: Dataset,
    spec: OperationSpec,
    source_schema: dict[str, Any],
    now: datetime,
) -> tuple[Dataset, Grant]:
    """Catalogue the derived dataset of ``op`` and the operator's grant on it (same transaction)."""
    ds = _dataset_row(op, source, now)
    ds_id = ds.id
    schema = derived_schema(op.id, spec, catalog_fields(source_schema))
    s.add(ds)
    s.flush()
    s.add(SchemaVersion(dataset_id=ds_id, version=1, schema=schema, created_at=now))
    grant = Grant(
        id=f"gr-{op.id.removeprefix('op-')}",
        dataset_id=ds_id,
        agency_id=op.operator_id,
        fields=[f["name"] for f in schema["fields"]],
        unmasked_fields=[],
        scenario_code=op.scenario_code,
        scenario_description=op.scenario_description,
        legal_basis=op.legal_basis,
        valid_until=op.valid_until,
        status=GrantStatus.ACTIVE.value,
        version=1,
        requested_at=now,
        decided_at=now,
        decision_reason=f"results of operation {op.id} (R11)",
    )
    s.add(grant)
    s.flush()
    return ds, grant


def end_grant(s: Session, op: Operation, status: GrantStatus) -> None:
    """The operator's result grant follows the operation: revoked, suspended, expired or active again."""
    if op.grant_id is None:
        return
    grant = s.get(Grant, op.grant_id)
    if grant is None or grant.status in (GrantStatus.REVOKED, GrantStatus.EXPIRED):
        return
    grant.status, grant.version = status.value, grant.version + 1
    if status in (GrantStatus.REVOKED, GrantStatus.EXPIRED):
        grant.ended_at = datetime.now(UTC)
