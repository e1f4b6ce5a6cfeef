"""The bus's own Avro schemas (``schemas/*.avsc`` next to the package), loaded once, parsed with fastavro."""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path
from typing import Any, cast

import fastavro

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


@cache
def _text(name: str) -> str:
    return (SCHEMAS_DIR / f"{name}.avsc").read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """A fresh copy of ``schemas/<name>.avsc`` as JSON (``name`` may have a folder: ``examples/licence``)."""
    result: dict[str, Any] = json.loads(_text(name))
    return result


@cache
def parsed_schema(name: str) -> Any:
    """The fastavro-parsed schema for ``schemaless_writer``/``schemaless_reader`` (shared: do not mutate)."""
    return fastavro.parse_schema(load_schema(name))


def read_record(raw: bytes, writer: Any, reader: Any = None) -> dict[str, Any]:
    """One schemaless Avro record as a dict.

    fastavro types the result as any Avro value (a ``bytes``, a ``list``...); the bus only reads
    record schemas, whose values decode to dicts.
    """
    return cast("dict[str, Any]", fastavro.schemaless_reader(io.BytesIO(raw), writer, reader))
