"""Schema evolution (R2): a new version must not break anyone decoding the dataset's records.

Checked in both directions with Apache Avro's ``ReaderWriterCompatibilityChecker``:

- consumers still on the previous version must decode records written with the new one
  (a removed field needs a default, a type may only widen for the old reader: int -> long is refused);
- readers on the new version must decode the records already on the topics
  (an added field needs a default).

Pure code, no I/O. Every problem names the field it is about.
"""

from __future__ import annotations

import json
from typing import Any

import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    lookup_writer_field,
    schema_name_equals,
)

from bus.errors import SchemaIncompatible


def _parse(schema: dict[str, Any]) -> avro.schema.RecordSchema:
    parsed = avro.schema.parse(json.dumps(schema))
    if not isinstance(parsed, avro.schema.RecordSchema):
        raise TypeError("catalogue schemas are records")
    return parsed


def _direction_problems(
    reader: avro.schema.RecordSchema, writer: avro.schema.RecordSchema, old_reader: bool, old_version: int
) -> list[dict[str, str]]:
    """Field by field, so each problem names its field; the whole-schema verdict stays the checker's."""
    out: list[dict[str, str]] = []
    direction = "old readers, new records" if old_reader else "new readers, old records"

    def add(field: str, kind: str, detail: str) -> None:
        out.append({"field": field, "problem": kind, "direction": direction, "detail": detail})

    if not schema_name_equals(reader, writer):
        old_name, new_name = (
            (reader.fullname, writer.fullname) if old_reader else (writer.fullname, reader.fullname)
        )
        add(
            "(record)",
            "name_mismatch",
            f"the record name changed from '{old_name}' to '{new_name}'; keep the "
            f'name of version {old_version} or list the old name in "aliases"',
        )
    for reader_field in reader.fields:
        writer_field = lookup_writer_field(writer_schema=writer, reader_field=reader_field)
        name = reader_field.name
        if writer_field is None:
            if reader_field.has_default:
                continue
            if old_reader:
                add(
                    name,
                    "reader_field_missing_default_value",
                    f"field '{name}' was removed or renamed: consumers on version {old_version} read it "
                    "and it has no default; keep the field",
                )
            else:
                add(
                    name,
                    "reader_field_missing_default_value",
                    f"field '{name}' was added without a default: records written with version {old_version} "
                    'do not have it; give it a default (e.g. type ["null", ...] with default null)',
                )
            continue
        result = ReaderWriterCompatibilityChecker().get_compatibility(reader_field.type, writer_field.type)
        if result.compatibility is SchemaCompatibilityType.incompatible:
            old_t, new_t = (
                (reader_field.type, writer_field.type)
                if old_reader
                else (writer_field.type, reader_field.type)
            )
            why = "; ".join(sorted(result.messages))
            add(
                name,
                "type_mismatch",
                f"field '{name}' changed type from {_type_str(old_t)} to {_type_str(new_t)}: "
                + (
                    f"consumers on version {old_version} cannot decode it"
                    if old_reader
                    else f"records written with version {old_version} cannot be read as the new type"
                )
                + f" ({why}); add a new field instead of changing this one",
            )
    whole = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if whole.compatibility is SchemaCompatibilityType.incompatible and not out:
        add("(record)", "incompatible", "; ".join(sorted(whole.messages)) or "incompatible")
    return out


def _type_str(t: avro.schema.Schema) -> str:
    return json.dumps(t.to_json(), separators=(",", ":"))[:80]


def compatibility_problems(
    old: dict[str, Any], new: dict[str, Any], old_version: int = 1
) -> list[dict[str, str]]:
    """Every way ``new`` breaks decoding against ``old`` (empty when compatible)."""
    old_s, new_s = _parse(old), _parse(new)
    problems = _direction_problems(old_s, new_s, True, old_version)
    problems += _direction_problems(new_s, old_s, False, old_version)
    seen: set[tuple[str, str]] = set()
    unique = []
    for p in problems:
        key = (p["field"], p["problem"])
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def check_compatible(old: dict[str, Any], new: dict[str, Any], old_version: int = 1) -> None:
    """Raise ``schema.incompatible`` naming the fields when ``new`` cannot replace ``old``."""
    problems = compatibility_problems(old, new, old_version)
    if problems:
        fields = sorted({p["field"] for p in problems})
        raise SchemaIncompatible(
            f"the new schema is not compatible with version {old_version}: "
            + "; ".join(p["detail"] for p in problems),
            fields=fields,
            errors=problems,
        )
