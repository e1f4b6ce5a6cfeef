"""R9 at submit time, as a pure function: which fields of a new entry are already obtainable by sharing.

A field is *obtainable* by an agency when another agency's approved dataset carries a field with the same
``semantic`` and would share it with that agency: the dataset is unconditional, or conditional with the
field among its shareable fields (none named: every field) and the agency among its eligible agencies
(none named: every agency). Not-shared datasets and the agency's own datasets never count.

An entry whose every field is obtainable collects nothing new and is refused; an entry with some
obtainable fields is a partial overlap, reported to the reviewer together with the datasets to request
instead. Fields without a ``semantic`` cannot be compared and therefore always count as new.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bus.vocab import SharingAttribute


@dataclass(frozen=True)
class Field:
    """One top-level field of a catalogued schema, as far as overlap and fingerprints care."""

    name: str
    semantic: str | None = None
    sensitivity: str = "internal"


@dataclass(frozen=True)
class SourceDataset:
    """Another agency's approved dataset, with what it shares."""

    id: str
    owner: str
    attribute: str
    fields: tuple[Field, ...]
    shareable_fields: frozenset[str] | None = None  # None or empty: every field
    eligible_agencies: frozenset[str] | None = None  # None or empty: every agency


@dataclass(frozen=True)
class Source:
    """Where one field of the entry can be obtained: a dataset and its field of the same semantic."""

    dataset: str
    owner: str
    field: str


@dataclass(frozen=True)
class Coverage:
    field: str
    semantic: str
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class Suggestion:
    """A dataset to request instead of collecting: which of the entry's fields it provides."""

    dataset: str
    owner: str
    attribute: str
    fields: tuple[str, ...]  # the entry's field names it covers
    source_fields: tuple[str, ...]  # the dataset's own field names for them

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "owner": self.owner,
            "attribute": self.attribute,
            "fields": list(self.fields),
            "source_fields": list(self.source_fields),
        }


@dataclass(frozen=True)
class OverlapReport:
    covered: tuple[Coverage, ...]
    new_fields: tuple[str, ...]
    request_instead: tuple[Suggestion, ...] = field(default=())

    @property
    def full(self) -> bool:
        """Nothing new: every field of the entry is obtainable by sharing."""
        return bool(self.covered) and not self.new_fields

    @property
    def partial(self) -> bool:
        return bool(self.covered) and bool(self.new_fields)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "full" if self.full else "partial" if self.partial else "none",
            "covered_fields": [
                {
                    "field": c.field,
                    "semantic": c.semantic,
                    "available_from": [
                        {"dataset": s.dataset, "owner": s.owner, "field": s.field} for s in c.sources
                    ],
                }
                for c in self.covered
            ],
            "new_fields": list(self.new_fields),
            "request_instead": [s.as_dict() for s in self.request_instead],
        }


def norm_semantic(semantic: Any) -> str | None:
    """Semantic names compare case- and space-insensitively; blank means none."""
    if not isinstance(semantic, str):
        return None
    text = semantic.strip().lower()
    return text or None


def fields_of_schema(schema: dict[str, Any]) -> tuple[Field, ...]:
    """The top-level fields of a stored catalogue schema (name, semantic, sensitivity)."""
    from bus.catalog.schema import catalog_fields

    return tuple(Field(f.name, norm_semantic(f.semantic), str(f.sensitivity)) for f in catalog_fields(schema))


def obtainable_fields(source: SourceDataset, agency_id: str) -> tuple[Field, ...]:
    """The fields of ``source`` that ``agency_id`` could obtain by sharing (R5, R10)."""
    if source.owner == agency_id:
        return ()
    if source.attribute == SharingAttribute.UNCONDITIONAL:
        return source.fields
    if source.attribute != SharingAttribute.CONDITIONAL:
        return ()
    if source.eligible_agencies and agency_id not in source.eligible_agencies:
        return ()
    if source.shareable_fields:
        return tuple(f for f in source.fields if f.name in source.shareable_fields)
    return source.fields


def _suggest(covered: Sequence[Coverage], sources: dict[str, SourceDataset]) -> tuple[Suggestion, ...]:
    """A small set of datasets covering every covered field: greedy set cover, deterministic order."""
    remaining = {c.field for c in covered}
    by_dataset: dict[str, dict[str, str]] = {}  # dataset -> entry field -> source field
    for c in covered:
        for s in c.sources:
            by_dataset.setdefault(s.dataset, {})[c.field] = s.field
    chosen: list[Suggestion] = []
    while remaining:
        best = max(sorted(by_dataset), key=lambda d: len(remaining & by_dataset[d].keys()))
        gain = [f for f in (c.field for c in covered) if f in remaining and f in by_dataset[best]]
        if not gain:
            break
        ds = sources[best]
        chosen.append(
            Suggestion(ds.id, ds.owner, ds.attribute, tuple(gain), tuple(by_dataset[best][f] for f in gain))
        )
        remaining -= set(gain)
    return tuple(chosen)


def compare_entry(
    entry_fields: Iterable[Field], submitter: str, sources: Iterable[SourceDataset]
) -> OverlapReport:
    """Which of the entry's fields are obtainable by sharing, from which datasets, and what to request."""
    entry = list(entry_fields)
    all_sources = {s.id: s for s in sources if s.owner != submitter}
    offered: dict[str, list[Source]] = {}  # semantic -> where it is obtainable
    for ds in sorted(all_sources.values(), key=lambda d: d.id):
        for f in obtainable_fields(ds, submitter):
            if f.semantic:
                offered.setdefault(f.semantic, []).append(Source(ds.id, ds.owner, f.name))
    covered: list[Coverage] = []
    new: list[str] = []
    for f in entry:
        sem = norm_semantic(f.semantic)
        if sem and sem in offered:
            covered.append(Coverage(f.name, sem, tuple(offered[sem])))
        else:
            new.append(f.name)
    return OverlapReport(tuple(covered), tuple(new), _suggest(covered, all_sources))
