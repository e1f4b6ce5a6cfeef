"""R2: a new schema version must keep every reader decoding; refusals name the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.catalog.compat import check_compatible, compatibility_problems
from bus.errors import SchemaIncompatible
from tests.helpers import licence_schema

Schema = dict[str, Any]


def changed(fn: Callable[[Schema], None]) -> Schema:
    s = copy.deepcopy(licence_schema())
    fn(s)
    return s


def _field(s: Schema, name: str) -> dict[str, Any]:
    return next(f for f in s["fields"] if f["name"] == name)


COMPATIBLE: list[tuple[str, Callable[[Schema], None]]] = [
    (
        "add a nullable field with a default",
        lambda s: s["fields"].append({"name": "email", "type": ["null", "string"], "default": None}),
    ),
    (
        "add a field with a default",
        lambda s: s["fields"].append({"name": "tier", "type": "int", "default": 0}),
    ),
    (
        "change docs and sensitivity",
        lambda s: _field(s, "phone").update(doc="mobile", sensitivity="sensitive"),
    ),
    ("reorder fields", lambda s: s["fields"].reverse()),
    ("remove a field that has a default", lambda s: None),  # see the fixture below
]


@pytest.mark.parametrize(("case", "change"), COMPATIBLE, ids=[c[0] for c in COMPATIBLE])
def test_r2_compatible_changes_are_accepted(case: str, change: Callable[[Schema], None]) -> None:
    old = licence_schema()
    if case == "remove a field that has a default":
        old = changed(lambda s: s["fields"].append({"name": "tier", "type": "int", "default": 0}))
        new = licence_schema()
    else:
        new = changed(change)
    assert compatibility_problems(old, new) == []
    check_compatible(old, new)


INCOMPATIBLE: list[tuple[str, Callable[[Schema], None], str, str]] = [
    (
        "add a field without a default",
        lambda s: s["fields"].append({"name": "email", "type": "string"}),
        "email",
        "added without a default",
    ),
    ("remove a field", lambda s: s["fields"].remove(_field(s, "phone")), "phone", "removed or renamed"),
    ("rename a field", lambda s: _field(s, "phone").update(name="mobile"), "phone", "removed or renamed"),
    (
        "change a type",
        lambda s: _field(s, "registered_capital").update(type="string"),
        "registered_capital",
        "changed type",
    ),
    ("widen int to long breaks old readers", lambda s: None, "n", "changed type"),  # see below
    (
        "narrow long to int",
        lambda s: _field(s, "registered_capital").update(type="int"),
        "registered_capital",
        "changed type",
    ),
    (
        "make a field nullable",
        lambda s: _field(s, "status").update(type=["null", "string"]),
        "status",
        "changed type",
    ),
    ("rename the record", lambda s: s.update(name="Licence"), "(record)", "record name changed"),
]


@pytest.mark.parametrize(("case", "change", "field", "says"), INCOMPATIBLE, ids=[c[0] for c in INCOMPATIBLE])
def test_r2_incompatible_changes_are_refused_naming_the_field(
    case: str, change: Callable[[Schema], None], field: str, says: str
) -> None:
    old, new = licence_schema(), changed(change)
    if case.startswith("widen"):
        old = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}]}
        new = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]}
    with pytest.raises(SchemaIncompatible) as err:
        check_compatible(old, new, old_version=3)
    assert err.value.code == "schema.incompatible" and err.value.status == 409
    assert field in err.value.extra["fields"]
    assert f"'{field}'" in err.value.detail or field == "(record)"
    assert says in err.value.detail
    assert "version 3" in err.value.detail


def test_r2_renaming_with_an_alias_keeps_new_readers_decoding_but_not_old_ones() -> None:
    new = changed(lambda s: _field(s, "phone").update(name="mobile", aliases=["phone"]))
    problems = compatibility_problems(licence_schema(), new)
    assert [(p["field"], p["direction"]) for p in problems] == [("phone", "old readers, new records")]


names = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
prims = st.sampled_from(["string", "int", "long", "double", "boolean", "bytes"])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(names, prims, min_size=1, max_size=6), st.dictionaries(names, prims, max_size=3))
def test_r2_adding_fields_with_defaults_is_always_compatible(
    base: dict[str, str], extra: dict[str, str]
) -> None:
    old = {"type": "record", "name": "R", "fields": [{"name": n, "type": t} for n, t in base.items()]}
    new = copy.deepcopy(old)
    new["fields"] += [
        {"name": n, "type": ["null", t], "default": None} for n, t in extra.items() if n not in base
    ]
    assert compatibility_problems(old, new) == []
    assert compatibility_problems(old, old) == []
