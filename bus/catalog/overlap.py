"""R9 in the catalogue: refuse an entry that only re-collects data obtainable by sharing.

Called inside the transaction of the submit endpoint (``check_on_submit``) and of a new schema version of
an approved dataset (``check_on_new_version``): an approved entry must not evolve its way into collecting
another agency's data. The comparison itself is the pure ``bus.policy.overlap.compare_entry``; this module
reads the other agencies' approved datasets and their current schemas from the store and turns the answer
into a refusal or a reviewer's report.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from bus.errors import RecollectionOverlap
from bus.policy.overlap import SourceDataset, compare_entry, fields_of_schema
from bus.store.models import Dataset, SchemaVersion
from bus.vocab import DatasetStatus, SharingAttribute


def shareable_sources(session: Session, exclude_owner: str | None = None) -> list[SourceDataset]:
    """Approved, shared datasets (of every agency but ``exclude_owner``) with their current fields."""
    q = (
        select(Dataset, SchemaVersion.schema)
        .join(
            SchemaVersion,
            and_(SchemaVersion.dataset_id == Dataset.id, SchemaVersion.version == Dataset.schema_version),
        )
        .where(Dataset.status == DatasetStatus.APPROVED, Dataset.sharing_attribute != SharingAttribute.NONE)
    )
    if exclude_owner is not None:
        q = q.where(Dataset.owner_id != exclude_owner)
    return [source_of(row[0], row[1]) for row in session.execute(q).all()]


def source_of(ds: Dataset, schema: dict[str, Any]) -> SourceDataset:
    return SourceDataset(
        id=ds.id,
        owner=ds.owner_id,
        attribute=ds.sharing_attribute,
        fields=fields_of_schema(schema),
        shareable_fields=frozenset(ds.shareable_fields) if ds.shareable_fields else None,
        eligible_agencies=frozenset(ds.eligible_agencies) if ds.eligible_agencies else None,
    )


def check_on_submit(session: Session, dataset: Dataset, schema: dict[str, Any]) -> dict[str, Any] | None:
    """Raise ``RecollectionOverlap`` for a full overlap; return a report dict for a partial one, else None."""
    return _check(session, dataset, schema, f"dataset {dataset.id} collects nothing new")


def check_on_new_version(
    session: Session, dataset: Dataset, schema: dict[str, Any], version: int
) -> dict[str, Any] | None:
    """The same check for schema ``version`` of an already approved dataset (R9 holds for its lifetime)."""
    return _check(
        session,
        dataset,
        schema,
        f"schema version {version} of dataset {dataset.id} would collect nothing new",
        version=version,
    )


def _check(
    session: Session, dataset: Dataset, schema: dict[str, Any], what: str, **extra: Any
) -> dict[str, Any] | None:
    report = compare_entry(
        fields_of_schema(schema), dataset.owner_id, shareable_sources(session, exclude_owner=dataset.owner_id)
    )
    if report.full:
        names = ", ".join(
            f"{s.dataset} (owner {s.owner}: {', '.join(s.fields)})" for s in report.request_instead
        )
        raise RecollectionOverlap(
            f"{what}: every field is already obtainable by sharing (R9). "
            f"Request a grant on {names} instead of collecting the data again.",
            request_instead=[s.as_dict() for s in report.request_instead],
            fields=[c.field for c in report.covered],
            **extra,
        )
    if report.partial:
        return report.as_dict()
    return None
