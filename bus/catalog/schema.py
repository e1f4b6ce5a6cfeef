"""Catalogue schemas (R3): an Avro record whose top-level fields carry ``sensitivity`` and ``semantic``.

Pure code, no I/O. ``parse_catalog_schema`` is the gate every schema passes (the catalogue API and
schema versions); ``catalog_fields`` is how the rest of the bus reads a stored schema's fields
(grants, masking, overlap detection, the validator).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import avro.schema
import fastavro

from bus.errors import InvalidSchema
from bus.vocab import Sensitivity

DEFAULT_SENSITIVITY = Sensitivity.INTERNAL
# A shared concept: ``<entity>.<attribute>`` in lower case, e.g. person.id_number, enterprise.credit_code.
SEMANTIC_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
PROTECTED = frozenset({Sensitivity.PERSONAL, Sensitivity.SENSITIVE})


@dataclass(frozen=True)
class FieldSpec:
    """One top-level field of a catalogued record schema."""

    name: str
    type: Any  # the Avro type exactly as written in the schema (a name, a dict or a union list)
    sensitivity: Sensitivity
    semantic: str | None = None
    doc: str | None = None
    has_default: bool = False
    default: Any = None

    @property
    def type_name(self) -> str:
        """A short readable type: ``string``, ``long``, ``null|string``, ``record:Address``, ``array``."""
        return _type_name(self.type)

    @property
    def nullable(self) -> bool:
        return isinstance(self.type, list) and "null" in self.type

    @property
    def protected(self) -> bool:
        """Personal or sensitive: masked or pseudonymised on delivery (R12)."""
        return self.sensitivity in PROTECTED


def _type_name(t: Any) -> str:
    if isinstance(t, str):
        return t
    if isinstance(t, list):
        return "|".join(_type_name(b) for b in t)
    if isinstance(t, dict):
        kind = str(t.get("type", "?"))
        if t.get("logicalType"):
            return f"{kind}:{t['logicalType']}"
        if kind in ("record", "enum", "fixed") and t.get("name"):
            return f"{kind}:{t['name']}"
        return kind
    return str(t)


def _is_sensitivity(value: Any) -> bool:
    return isinstance(value, str) and value in Sensitivity._value2member_map_


def catalog_fields(schema: dict[str, Any]) -> list[FieldSpec]:
    """Top-level fields of a stored catalogue schema, with sensitivity (default ``internal``) and semantic."""
    out: list[FieldSpec] = []
    for f in schema.get("fields") or []:
        sens = f.get("sensitivity", DEFAULT_SENSITIVITY)
        out.append(
            FieldSpec(
                name=f["name"],
                type=f.get("type"),
                sensitivity=Sensitivity(sens) if _is_sensitivity(sens) else DEFAULT_SENSITIVITY,
                semantic=f.get("semantic"),
                doc=f.get("doc"),
                has_default="default" in f,
                default=f.get("default"),
            )
        )
    return out


def field_names(schema: dict[str, Any]) -> list[str]:
    return [f.name for f in catalog_fields(schema)]


def _problem(field: str, detail: str) -> dict[str, str]:
    return {"code": InvalidSchema.code, "field": field, "detail": detail}


def _refuse(problems: list[dict[str, str]]) -> InvalidSchema:
    first = problems[0]["detail"]
    more = f" (and {len(problems) - 1} more problem(s), see 'errors')" if len(problems) > 1 else ""
    return InvalidSchema(first + more, errors=problems)


def parse_catalog_schema(raw: Any) -> dict[str, Any]:
    """Validate a schema given as a JSON object or JSON text; return it as a plain JSON dict.

    Refuses (``catalog.invalid_schema``, every problem listed under ``errors``): text that is not JSON,
    anything but a record with at least one field, what Apache Avro or fastavro refuse (bad names,
    unknown types, defaults of the wrong type), a ``sensitivity`` outside public/internal/personal/
    sensitive, a ``semantic`` that is not a dotted lower-case concept name.
    """
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise _refuse([_problem("schema", f"the schema is not valid JSON: {exc}")]) from None
    if not isinstance(raw, dict):
        raise _refuse(
            [
                _problem(
                    "schema",
                    "the schema must be an Avro record: a JSON object with "
                    '"type": "record", a "name" and "fields"',
                )
            ]
        )
    try:
        schema: dict[str, Any] = json.loads(json.dumps(raw, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise _refuse([_problem("schema", f"the schema is not plain JSON: {exc}")]) from None
    if schema.get("type") != "record":
        raise _refuse(
            [
                _problem(
                    "schema.type",
                    f'the schema must be an Avro record ("type": "record"), '
                    f"got {json.dumps(schema.get('type'))[:80]}",
                )
            ]
        )
    fields = schema.get("fields")
    if not isinstance(fields, list) or not fields:
        raise _refuse([_problem("schema.fields", 'a record schema needs a non-empty "fields" list')])

    problems: list[dict[str, str]] = []
    for i, f in enumerate(fields):
        if not isinstance(f, dict):
            problems.append(
                _problem(f"schema.fields[{i}]", f"field {i} must be a JSON object with a name and a type")
            )
            continue
        label = f"schema.fields[{i}]" if not isinstance(f.get("name"), str) else f"schema.fields.{f['name']}"
        sens = f.get("sensitivity", DEFAULT_SENSITIVITY.value)
        if not _is_sensitivity(sens):
            allowed = ", ".join(s.value for s in Sensitivity)
            problems.append(
                _problem(
                    f"{label}.sensitivity",
                    f"field {f.get('name', i)!s}: unknown sensitivity {json.dumps(sens)[:40]}; "
                    f"use one of {allowed} (absent means internal)",
                )
            )
        sem = f.get("semantic")
        if sem is not None and not (isinstance(sem, str) and SEMANTIC_PATTERN.match(sem)):
            problems.append(
                _problem(
                    f"{label}.semantic",
                    f"field {f.get('name', i)!s}: semantic {json.dumps(sem)[:60]} must be a "
                    "dotted lower-case concept name such as person.id_number",
                )
            )
    try:
        avro.schema.parse(json.dumps(schema))
        fastavro.parse_schema(json.loads(json.dumps(schema)))
    except Exception as exc:  # both parsers raise assorted types for assorted mistakes; all mean "invalid"
        problems.append(_problem("schema", f"not a valid Avro schema: {_short(exc)}"))
    if problems:
        raise _refuse(problems)
    return schema


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def redact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A not-shared entry's schema as other agencies see it (R5): personal and sensitive fields left out."""
    kept = [
        f
        for f, spec in zip(schema.get("fields") or [], catalog_fields(schema), strict=True)
        if not spec.protected
    ]
    out = {k: v for k, v in schema.items() if k != "fields"}
    out["fields"] = kept
    out["redacted_fields"] = len(schema.get("fields") or []) - len(kept)
    return out
