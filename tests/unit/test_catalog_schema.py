"""R3: catalogue schemas are Avro records whose fields carry a sensitivity and optionally a semantic."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.catalog.schema import FieldSpec, catalog_fields, field_names, parse_catalog_schema, redact_schema
from bus.errors import InvalidSchema
from bus.schemas import load_schema
from bus.vocab import Sensitivity
from tests.helpers import licence_schema


def record(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields)}


@pytest.mark.parametrize("name", ["examples/licence", "examples/clinic", "examples/resident"])
def test_r3_example_schemas_are_valid_catalogue_schemas(name: str) -> None:
    schema = load_schema(name)
    assert parse_catalog_schema(schema) == schema
    assert all(f.sensitivity in Sensitivity for f in catalog_fields(schema))


def test_r3_schema_may_be_given_as_json_text() -> None:
    assert parse_catalog_schema(json.dumps(licence_schema())) == licence_schema()


def test_r3_catalog_fields_reads_sensitivity_semantic_and_defaults() -> None:
    schema = record(
        {"name": "id", "type": "string", "sensitivity": "sensitive", "semantic": "person.id_number"},
        {"name": "note", "type": ["null", "string"], "default": None, "doc": "free text"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    )
    fields = catalog_fields(parse_catalog_schema(schema))
    assert fields[0] == FieldSpec("id", "string", Sensitivity.SENSITIVE, "person.id_number")
    assert fields[0].protected
    assert fields[1].sensitivity is Sensitivity.INTERNAL  # the default when absent
    assert fields[1].nullable and fields[1].has_default and fields[1].default is None
    assert fields[1].type_name == "null|string" and fields[1].doc == "free text"
    assert fields[2].type_name == "long:timestamp-millis"
    assert field_names(schema) == ["id", "note", "at"]


INVALID: list[tuple[str, Any, str]] = [
    ("not JSON text", "{not json", "not valid JSON"),
    ("a JSON list", [1, 2], "must be an Avro record"),
    ("a primitive schema", {"type": "string"}, "must be an Avro record"),
    ("an enum schema", {"type": "enum", "name": "E", "symbols": ["A"]}, "must be an Avro record"),
    ("a record without fields", {"type": "record", "name": "R", "fields": []}, 'non-empty "fields"'),
    ("fields not a list", {"type": "record", "name": "R", "fields": "x"}, 'non-empty "fields"'),
    ("a field that is not an object", record("x"), "must be a JSON object"),
    ("an unknown field type", record({"name": "a", "type": "strin"}), "not a valid Avro schema"),
    ("a bad record name", record({"name": "a", "type": "string"}, name="1bad"), "not a valid Avro schema"),
    (
        "a duplicate field",
        record({"name": "a", "type": "string"}, {"name": "a", "type": "int"}),
        "not a valid Avro schema",
    ),
    (
        "a default of the wrong type",
        record({"name": "a", "type": "int", "default": "x"}),
        "not a valid Avro schema",
    ),
    (
        "an unknown sensitivity",
        record({"name": "a", "type": "string", "sensitivity": "secret"}),
        'unknown sensitivity "secret"',
    ),
    (
        "a non-string sensitivity",
        record({"name": "a", "type": "string", "sensitivity": 3}),
        "unknown sensitivity 3",
    ),
    (
        "a semantic that is not a concept",
        record({"name": "a", "type": "string", "semantic": "ID Number"}),
        "dotted lower-case concept name",
    ),
    (
        "a semantic without a dot",
        record({"name": "a", "type": "string", "semantic": "person"}),
        "dotted lower-case concept name",
    ),
]


@pytest.mark.parametrize(("case", "schema", "says"), INVALID, ids=[c[0] for c in INVALID])
def test_r3_invalid_schemas_are_refused_with_what_to_fix(case: str, schema: Any, says: str) -> None:
    with pytest.raises(InvalidSchema) as err:
        parse_catalog_schema(schema)
    assert err.value.code == "catalog.invalid_schema"
    assert says in err.value.detail
    assert err.value.extra["errors"] and all(
        e["code"] == "catalog.invalid_schema" for e in err.value.extra["errors"]
    )


def test_r3_every_schema_problem_is_listed_at_once() -> None:
    schema = record(
        {"name": "a", "type": "string", "sensitivity": "secret"},
        {"name": "b", "type": "string", "semantic": "Bad"},
    )
    with pytest.raises(InvalidSchema) as err:
        parse_catalog_schema(schema)
    fields = [e["field"] for e in err.value.extra["errors"]]
    assert fields == ["schema.fields.a.sensitivity", "schema.fields.b.semantic"]
    assert "1 more problem" in err.value.detail


def test_r5_redacted_schema_leaves_out_personal_and_sensitive_fields() -> None:
    schema = load_schema("examples/resident")
    red = redact_schema(schema)
    kept = {f["name"] for f in red["fields"]}
    assert kept == {"region_code", "registered_on"}
    assert red["redacted_fields"] == len(schema["fields"]) - 2
    assert red["name"] == schema["name"]
    assert schema == load_schema("examples/resident")  # the stored schema is untouched


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=20,
)
avro_types = st.sampled_from(
    ["string", "int", "long", "double", "boolean", "bytes", "null", "strin", "record"]
)
field_dicts = st.fixed_dictionaries(
    {
        "name": st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True) | st.text(max_size=4),
        "type": avro_types | json_values,
    },
    optional={
        "sensitivity": st.sampled_from([s.value for s in Sensitivity]) | json_values,
        "semantic": st.sampled_from(["person.id_number", "x"]) | json_values,
        "default": json_values,
    },
)
schemas = st.one_of(
    json_values,
    st.builds(
        lambda fs, name: {"type": "record", "name": name, "fields": fs},
        st.lists(field_dicts, max_size=5),
        st.sampled_from(["R", "1R", "", "a.b"]),
    ),
)


@settings(max_examples=300, deadline=None)
@given(schemas)
def test_r3_any_input_is_either_a_valid_schema_or_invalid_schema(raw: Any) -> None:
    """Fuzz: whatever arrives, the only refusal is catalog.invalid_schema; accepted ones read back cleanly."""
    try:
        schema = parse_catalog_schema(copy.deepcopy(raw))
    except InvalidSchema as exc:
        assert exc.detail
        return
    assert [f.name for f in catalog_fields(schema)] == [f["name"] for f in schema["fields"]]
