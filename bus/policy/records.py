"""What a record must be to enter the bus (R1, R13, R14, R15): admission, size, exact Avro decoding.

Pure functions over a ``PolicySnapshot``, called by the one batch decision (``bus.policy.batch``) for the
Kafka pipeline and HTTP publishing alike, and by the SDK to check a record before sending it.
"""

from __future__ import annotations

import io
import threading
from typing import Any, cast

import fastavro
from fastavro.validation import validate

from bus.errors import (
    AuthForbidden,
    BusError,
    CatalogNotFound,
    DatasetNotApproved,
    RecordInvalid,
    RecordTooLarge,
    Suspended,
)
from bus.policy.projection import strip_logical_types
from bus.policy.snapshot import PolicySnapshot
from bus.vocab import DatasetStatus

_parsed: dict[tuple[str, int], Any] = {}
_parsed_lock = threading.Lock()


def parsed_schema(dataset_id: str, version: int, schema: dict[str, Any]) -> Any:
    """The fastavro-parsed data-path schema (logical types stripped) of one immutable schema version."""
    key = (dataset_id, version)
    found = _parsed.get(key)
    if found is None:
        found = fastavro.parse_schema(strip_logical_types(schema), named_schemas={})
        with _parsed_lock:
            _parsed[key] = found
    return found


def admission(snap: PolicySnapshot, dataset_id: str, publisher_id: str) -> BusError | None:
    """May ``publisher_id`` publish to ``dataset_id`` right now? ``None`` if yes, else the refusal."""
    ds = snap.datasets.get(dataset_id)
    if ds is None:
        return CatalogNotFound(
            f"no catalogue entry {dataset_id}: the bus accepts data only for catalogued datasets (R13)"
        )
    if ds.status != DatasetStatus.APPROVED:
        return DatasetNotApproved(
            f"dataset {dataset_id} is {ds.status}; records are accepted only for approved datasets (R13)"
        )
    if publisher_id != ds.owner_id:
        return AuthForbidden(f"only the owner {ds.owner_id} publishes to dataset {dataset_id}")
    agency = snap.agencies.get(publisher_id)
    if agency is not None and agency.suspended:
        return Suspended(
            f"agency {publisher_id} is suspended by the emergency switch; its records are refused"
        )
    if ds.suspended:
        return Suspended(f"dataset {dataset_id} is suspended by the emergency switch; records are refused")
    return None


def too_large(size: int, limit: int) -> RecordTooLarge:
    return RecordTooLarge(f"the record is {size} bytes; the limit is {limit} bytes (BUS_MAX_RECORD_BYTES)")


def decode_exact(value: bytes, writer: Any, reader: Any = None) -> dict[str, Any]:
    """Decode one Avro record; refuse (``record.invalid``) what does not decode or leaves bytes over."""
    buf = io.BytesIO(value)
    try:
        # a record schema decodes to a dict; fastavro types the result as any Avro value
        record = cast("dict[str, Any]", fastavro.schemaless_reader(buf, writer, reader))
    except Exception as exc:  # fastavro raises assorted types for assorted corruptions
        raise RecordInvalid(
            f"the value does not decode with the schema version it names: "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    if buf.tell() != len(value):
        raise RecordInvalid(
            f"the value has {len(value) - buf.tell()} bytes after the record: it was not written "
            "with the schema version it names"
        )
    return record


def encode(record: Any, parsed: Any, names: frozenset[str]) -> bytes:
    """Encode one record strictly; refuse (``record.invalid``) unknown fields, missing fields, wrong types
    (fastavro's writer alone would turn 1.5 into 1 and ignore extra keys), naming the problem."""
    if (
        not isinstance(record, dict)
        or not names.issuperset(record)
        or not validate(record, parsed, raise_errors=False)
    ):
        raise RecordInvalid(explain_invalid(record, parsed))
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, parsed, record)
    except Exception:
        raise RecordInvalid(explain_invalid(record, parsed)) from None
    return buf.getvalue()


def field_names(parsed: Any) -> frozenset[str]:
    return frozenset(f["name"] for f in parsed["fields"])


def explain_invalid(record: Any, parsed: Any) -> str:
    """A readable reason a record does not match its schema (only computed on the failure path)."""
    if not isinstance(record, dict):
        return f"a record must be a JSON object, got {type(record).__name__}"
    names = [f["name"] for f in parsed.get("fields", [])] if isinstance(parsed, dict) else []
    unknown = sorted(set(record) - set(names))
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}; the schema has {', '.join(names)}"
    try:
        fastavro.validate(record, parsed, raise_errors=True)
    except Exception as exc:
        return f"the record does not match the dataset schema: {str(exc)[:300]}"
    return "the record does not match the dataset schema"
