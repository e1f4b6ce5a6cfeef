"""R11: the derived product's sharing never wider than its source; its schema carries no subject."""

from __future__ import annotations

import fastavro
import pytest

from bus.catalog.schema import catalog_fields, parse_catalog_schema
from bus.operations.derived import derived_schema, narrowest, result_row
from bus.operations.spec import spec_from_json
from bus.samples import licence_schema


@pytest.mark.parametrize(
    "source,wanted,expected",
    [
        ("unconditional", None, "unconditional"),
        ("unconditional", "conditional", "conditional"),
        ("unconditional", "none", "none"),
        ("conditional", "unconditional", "conditional"),
        ("conditional", "none", "none"),
        ("none", "unconditional", "none"),
        ("none", "conditional", "none"),
        ("none", None, "none"),
    ],
)
def test_r11_derived_sharing_never_wider_than_source(source: str, wanted: str | None, expected: str) -> None:
    assert narrowest(source, wanted) == expected


def test_r11_derived_schema_is_a_valid_catalogue_schema_without_the_subject() -> None:
    spec = spec_from_json(
        {
            "dataset": "d",
            "group_by": ["region_code", "status"],
            "window_seconds": 60,
            "k": 10,
            "measures": [
                {"field": "licence_no", "fn": "count"},
                {"field": "registered_capital", "fn": "avg"},
            ],
        }
    )
    schema = derived_schema("op-1a2b", spec, catalog_fields(licence_schema()))
    parse_catalog_schema(schema)  # the catalogue's own gate accepts it
    names = [f["name"] for f in schema["fields"]]
    assert names == [
        "window_start",
        "window_end",
        "region_code",
        "status",
        "count_licence_no",
        "avg_registered_capital",
    ]
    row = result_row(
        0,
        60_000,
        {"region_code": "140902", "status": None},
        {"count_licence_no": 12.0, "avg_registered_capital": None},
    )
    assert row["count_licence_no"] == 12 and isinstance(row["count_licence_no"], int)
    parsed = fastavro.parse_schema({k: v for k, v in schema.items()})
    assert fastavro.validate(row, parsed)
