"""Turning rows of external systems (CSV strings, JSON values, SQL types) into records of a dataset's schema.

Source columns are renamed by the connector's ``mapping`` (source name -> schema field); columns that
are neither mapped nor schema fields are dropped. Values are converted to the field's Avro type
(``"42"`` -> 42 for ``long``, ``""`` -> null for optional fields, datetimes -> ISO strings for ``string``).
A row that cannot fit raises ``ValueError`` with a reason naming the field: it becomes a dead letter.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

_MISSING = object()
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _branches(ftype: Any) -> tuple[bool, Any]:
    """(nullable, the non-null type) of an Avro field type."""
    if isinstance(ftype, list):
        rest = [t for t in ftype if t != "null"]
        return len(rest) < len(ftype), rest[0] if len(rest) == 1 else rest
    return ftype == "null", ftype


def _primitive(ftype: Any) -> tuple[str, str | None, dict[str, Any]]:
    """(base type, logical type, the type dict) of a non-union Avro type."""
    if isinstance(ftype, dict):
        return str(ftype.get("type")), ftype.get("logicalType"), ftype
    return str(ftype), None, {}


def _to_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(v, int):
        return v
    if isinstance(v, float | Decimal):
        if v != int(v):
            raise ValueError(f"{v} is not a whole number")
        return int(v)
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                raise ValueError(f"{v!r} is not a number") from None
            if f != int(f):
                raise ValueError(f"{v!r} is not a whole number") from None
            return int(f)
    raise ValueError(f"{type(v).__name__} is not a number")


def _to_datetime(v: Any) -> datetime:
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, tzinfo=UTC)
    if isinstance(v, int | float) and not isinstance(v, bool):
        return datetime.fromtimestamp(v / 1000 if v > 1e11 else v, UTC)
    if isinstance(v, str):
        d = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        return d if d.tzinfo else d.replace(tzinfo=UTC)
    raise ValueError(f"{type(v).__name__} is not a timestamp")


def convert(value: Any, ftype: Any) -> Any:
    """``value`` converted to the Avro type ``ftype``; raises ``ValueError`` with a reason."""
    nullable, inner = _branches(ftype)
    if value is None or (nullable and isinstance(value, str) and value == ""):
        if nullable:
            return None
        raise ValueError("is required (null given)")
    if isinstance(inner, list):  # a union of several non-null types: keep JSON-native values as they are
        return value
    base, logical, spec = _primitive(inner)
    if logical in ("timestamp-millis", "timestamp-micros", "local-timestamp-millis"):
        return _to_datetime(value)
    if logical == "date":
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        return _to_datetime(value).date()
    if base == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, datetime | date):
            return value.isoformat()
        if isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False, default=str)
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, Decimal):
            return format(value, "f")
        return str(value)
    if base in ("int", "long"):
        return _to_int(value)
    if base in ("float", "double"):
        if isinstance(value, bool):
            raise ValueError("a boolean is not a number")
        return float(value)
    if base == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{value!r} is not a boolean")
    if base == "bytes":
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return base64.b64decode(value)
        raise ValueError(f"{type(value).__name__} is not bytes")
    if base == "enum":
        s = str(value)
        if s not in spec.get("symbols", []):
            raise ValueError(f"{s!r} is not one of {spec.get('symbols')}")
        return s
    return value  # records, arrays, maps: JSON values as they are; the SDK's schema check decides


class RecordShaper:
    """Renames and converts external rows to one dataset schema (built once per connector start)."""

    def __init__(
        self,
        schema: Mapping[str, Any],
        mapping: Mapping[str, str] | None = None,
        key_field: str | None = None,
    ) -> None:
        self.fields: list[dict[str, Any]] = list(schema.get("fields", []))
        self.names = {f["name"] for f in self.fields}
        self.mapping = dict(mapping or {})
        unknown = sorted(set(self.mapping.values()) - self.names)
        if unknown:
            raise ValueError(
                f"mapping targets {unknown} are not fields of the dataset schema "
                f"(fields: {sorted(self.names)})"
            )
        self.key_field = key_field
        if key_field and key_field not in self.names:
            raise ValueError(f"key_field {key_field!r} is not a field of the dataset schema")

    def shape(self, row: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The record and its key; ``ValueError`` naming the field when the row does not fit."""
        renamed: dict[str, Any] = {}
        for col, v in row.items():
            target = self.mapping.get(col, col)
            if target in self.names:
                renamed[target] = v
        out: dict[str, Any] = {}
        for f in self.fields:
            name = f["name"]
            raw = renamed.get(name, _MISSING)
            if raw is _MISSING:
                if "default" in f:
                    out[name] = f["default"]
                    continue
                nullable, _ = _branches(f["type"])
                if nullable:
                    out[name] = None
                    continue
                raise ValueError(f"field {name!r} is missing")
            try:
                out[name] = convert(raw, f["type"])
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise ValueError(f"field {name!r}: {exc}") from None
        key = None
        if self.key_field is not None and out.get(self.key_field) is not None:
            key = str(out[self.key_field])
        return out, key
