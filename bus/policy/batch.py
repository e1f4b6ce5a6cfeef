"""The data plane's whole decision for a batch of records (R1, R5, R7-R10, R12-R15), written once.

``process_batch(snapshot, items, ...) -> BatchOutcome`` decides, for every record, whether it is
accepted and what each active grant receives: admission (approved dataset, its owner, nothing
suspended), the size limit, exact decoding with the schema version it names, the copy check (R8/R9,
answered by the caller's ``copies`` function per dataset and publisher), then for every deliverable grant
the projected, masked and pseudonymised view. One bad record becomes that record's refusal with a stable
code; nothing here raises for a record. The Kafka pipeline (``bus.exchange.pipeline``) and HTTP
publishing (``bus.gateway.routes_records``) both call it; sealing, producing and evidence are theirs.

No I/O: everything comes in through the arguments (the copy check is the caller's function).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bus.errors import BusError, RecordInvalid
from bus.policy.records import admission, decode_exact, parsed_schema, too_large
from bus.policy.routes import Route, RouteTable
from bus.policy.snapshot import GrantState, PolicySnapshot
from bus.vocab import ViolationKind

# (dataset, publisher, decoded records) -> one verdict per record: None, or the copy error (R8/R9)
CopyCheck = Callable[[str, str, Sequence[Mapping[str, Any]]], Sequence[BusError | None]]

_VIOLATIONS = {k.value: k for k in ViolationKind}


def classify(code: str) -> ViolationKind | None:
    """The violation a refusal code stands for (an incident, R15), or ``None`` for a data-quality refusal."""
    return _VIOLATIONS.get(code)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One record as the bus sees it, already opened (authenticated) by the wire layer."""

    ref: int  # the caller's index (message or request position), to map the outcome back
    record_id: str
    dataset_id: str
    publisher_id: str
    schema_version: int
    key: bytes | None
    value: bytes  # the Avro value
    trace_id: str | None = None
    record: dict[str, Any] | None = None  # already decoded (HTTP publishing encodes from JSON)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One grant's view of an accepted record: only the granted fields, masked as the grant says."""

    grant: GrantState
    value: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    item: Incoming
    record: dict[str, Any]
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    ref: int
    record_id: str
    dataset_id: str
    publisher_id: str
    schema_version: int
    size: int
    trace_id: str | None
    error: BusError

    @property
    def code(self) -> str:
        return self.error.code


@dataclass
class Violation:
    """What one batch's refusals of one kind say about one agency and dataset (grouped per batch)."""

    kind: ViolationKind
    agency_id: str | None
    dataset_id: str
    grant_id: str | None
    detail: str
    record_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    count: int = 0

    def as_row(self) -> dict[str, Any]:
        """The shape ``bus.lineage.incidents.record_violations`` takes."""
        return {
            "kind": self.kind.value,
            "code": self.kind.value,
            "agency_id": self.agency_id,
            "dataset_id": self.dataset_id,
            "grant_id": self.grant_id,
            "record_ids": self.record_ids,
            "trace_ids": self.trace_ids,
            "detail": self.detail,
            "count": self.count or len(self.record_ids),
        }


@dataclass
class BatchOutcome:
    accepted_at_ms: int
    accepted: list[Accepted] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)

    def refuse(self, refused: Refused) -> None:
        self.refused.append(refused)

    def violations(self) -> list[Violation]:
        """One violation per (kind, agency, dataset, grant) of the batch, with every record and trace id."""
        grouped: dict[tuple[str, str, str, str | None], Violation] = {}
        for r in self.refused:
            kind = classify(r.code)
            if kind is None:
                continue
            grant = r.error.extra.get("grant")
            key = (kind.value, r.publisher_id, r.dataset_id, grant)
            v = grouped.get(key)
            if v is None:
                # what a record claims is clipped to the store's columns (a poison name costs only its record)
                v = grouped[key] = Violation(
                    kind, r.publisher_id[:64] or None, r.dataset_id[:64], grant[:64] if grant else None,
                    r.error.detail,
                )
            v.record_ids.append(r.record_id)
            if r.trace_id:
                v.trace_ids.append(r.trace_id)
        return list(grouped.values())


def refusal(item: Incoming, error: BusError) -> Refused:
    return Refused(
        item.ref,
        item.record_id,
        item.dataset_id,
        item.publisher_id,
        item.schema_version,
        len(item.value),
        item.trace_id,
        error,
    )


def _decode(snap: PolicySnapshot, item: Incoming) -> dict[str, Any]:
    ds = snap.datasets[item.dataset_id]
    schema = ds.schemas.get(item.schema_version)
    if schema is None:
        raise RecordInvalid(
            f"dataset {item.dataset_id} has no schema version {item.schema_version} "
            f"(current: {ds.schema_version})"
        )
    writer = parsed_schema(item.dataset_id, item.schema_version, schema)
    reader = (
        None
        if item.schema_version == ds.schema_version
        else parsed_schema(item.dataset_id, ds.schema_version, ds.schema)
    )
    return decode_exact(item.value, writer, reader)


def _admit(
    snap: PolicySnapshot, items: Sequence[Incoming], limit: int, out: BatchOutcome
) -> dict[tuple[str, str], list[tuple[Incoming, dict[str, Any]]]]:
    """Admission, size and decoding: what passes, grouped by (dataset, publisher) for the copy check."""
    admitted: dict[tuple[str, str], BusError | None] = {}
    passed: dict[tuple[str, str], list[tuple[Incoming, dict[str, Any]]]] = {}
    for item in items:
        group = (item.dataset_id, item.publisher_id)
        if group not in admitted:
            admitted[group] = admission(snap, item.dataset_id, item.publisher_id)
        error = admitted[group]
        try:
            if error is None and len(item.value) > limit:
                error = too_large(len(item.value), limit)
            if error is None:
                record = item.record if item.record is not None else _decode(snap, item)
                passed.setdefault(group, []).append((item, record))
                continue
        except BusError as err:
            error = err
        except Exception as exc:  # a poison record costs only itself
            error = RecordInvalid(f"the record cannot be read: {type(exc).__name__}")
        out.refuse(refusal(item, error))
    return passed


def _deliveries(routes: Sequence[Route], record: dict[str, Any], accepted_at_ms: int) -> tuple[Delivery, ...]:
    parts_of: dict[int, list[bytes]] = {}  # one projection per distinct rule set, per record
    out = []
    for r in routes:
        if accepted_at_ms < r.grant.active_since_ms:
            continue
        parts = parts_of.get(id(r.shared))
        if parts is None:
            parts = parts_of[id(r.shared)] = r.shared.parts(record)
        out.append(Delivery(r.grant, r.encode(record, parts)))
    return tuple(out)


def process_batch(
    snap: PolicySnapshot,
    items: Sequence[Incoming],
    *,
    copies: CopyCheck,
    routes: RouteTable,
    limit: int,
    accepted_at_ms: int,
) -> BatchOutcome:
    """Decide a batch: each item is accepted with its deliveries per grant, or refused with a stable code."""
    out = BatchOutcome(accepted_at_ms)
    for (dataset_id, publisher_id), group in _admit(snap, items, limit, out).items():
        try:
            verdicts = copies(dataset_id, publisher_id, [record for _, record in group])
        except BusError:
            raise  # the copy check could not be made (Redis down): the batch is retried, fail closed
        grant_routes = routes.for_dataset(snap, dataset_id, accepted_at_ms)
        for (item, record), verdict in zip(group, verdicts, strict=True):
            if verdict is not None:
                out.refuse(refusal(item, verdict))
                continue
            try:
                deliveries = _deliveries(grant_routes, record, accepted_at_ms)
            except Exception as exc:  # a value the view cannot encode costs only its record
                out.refuse(
                    refusal(item, RecordInvalid(f"the record cannot be delivered: {type(exc).__name__}"))
                )
                continue
            out.accepted.append(Accepted(item, record, deliveries))
    return out
