"""R11: the analysis rule and the static checks of operations, as tables of every refusal code."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bus.catalog.schema import catalog_fields
from bus.errors import BusError
from bus.operations.rules import AnalysisRule, MeasureRule, rule_from_json, validate_rule
from bus.operations.spec import OperationSpec, check_spec, spec_from_json
from bus.vocab import MeasureFn

SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Licence",
    "fields": [
        {"name": "licence_no", "type": "string", "sensitivity": "public"},
        {"name": "credit_code", "type": "string", "sensitivity": "internal"},
        {"name": "county", "type": "string", "sensitivity": "public"},
        {"name": "industry", "type": ["null", "string"], "sensitivity": "public"},
        {"name": "capital", "type": "double"},
        {"name": "staff", "type": ["null", "long"]},
        {"name": "legal_rep_id", "type": "string", "sensitivity": "sensitive"},
        {"name": "phone", "type": "string", "sensitivity": "personal"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ],
}
FIELDS = catalog_fields(SCHEMA)

RULE = AnalysisRule(
    dimensions=("county", "industry"),
    measures=(
        MeasureRule("licence_no", (MeasureFn.COUNT,), None),
        MeasureRule("capital", (MeasureFn.SUM, MeasureFn.AVG, MeasureFn.MIN, MeasureFn.MAX), (0.0, 1e6)),
    ),
    subject_field="credit_code",
    min_group_size=10,
    windows=(60, 3600),
    epsilon_per_day=2.0,
)


def test_r11_valid_rule_is_normalised_and_round_trips() -> None:
    rule = validate_rule(replace(RULE, windows=(3600, 60, 60)), FIELDS, floor=10)
    assert rule.windows == (60, 3600)
    assert rule_from_json(rule.to_json()) == rule


@pytest.mark.parametrize(
    "change,code",
    [
        ({"dimensions": ("county", "legal_rep_id")}, "analysis_rule.sensitive_field"),
        (
            {"measures": (MeasureRule("legal_rep_id", (MeasureFn.COUNT,), None),)},
            "analysis_rule.sensitive_field",
        ),
        ({"dimensions": ("county", "credit_code")}, "analysis_rule.subject_in_dimensions"),
        (
            {"measures": (MeasureRule("credit_code", (MeasureFn.COUNT,), None),)},
            "analysis_rule.subject_in_dimensions",
        ),
        ({"min_group_size": 9}, "analysis_rule.k_below_floor"),
        ({"min_group_size": 1}, "analysis_rule.k_below_floor"),
        ({"dimensions": ("nope",)}, "analysis_rule.unknown_field"),
        ({"measures": (MeasureRule("nope", (MeasureFn.COUNT,), None),)}, "analysis_rule.unknown_field"),
        ({"subject_field": "nope"}, "analysis_rule.unknown_field"),
        ({"dimensions": ("county", "county")}, "analysis_rule.invalid"),
        ({"dimensions": ("tags",)}, "analysis_rule.invalid"),
        ({"dimensions": ("capital",)}, "analysis_rule.invalid"),
        ({"measures": ()}, "analysis_rule.invalid"),
        ({"measures": (MeasureRule("county", (MeasureFn.SUM,), (0.0, 1.0)),)}, "analysis_rule.invalid"),
        ({"measures": (MeasureRule("capital", (MeasureFn.SUM,), None),)}, "analysis_rule.invalid"),
        ({"measures": (MeasureRule("capital", (MeasureFn.SUM,), (5.0, 5.0)),)}, "analysis_rule.invalid"),
        ({"measures": (MeasureRule("capital", (), None),)}, "analysis_rule.invalid"),
        ({"windows": ()}, "analysis_rule.invalid"),
        ({"windows": (0,)}, "analysis_rule.invalid"),
        ({"epsilon_per_day": 0.0}, "analysis_rule.invalid"),
    ],
)
def test_r11_rule_refusals(change: dict[str, Any], code: str) -> None:
    with pytest.raises(BusError) as err:
        validate_rule(replace(RULE, **change), FIELDS, floor=10)
    assert err.value.code == code


def test_r11_personal_dimension_allowed_and_floor_configurable() -> None:
    """Only ``sensitive`` fields are refused as dimensions; the floor comes from the caller."""
    rule = validate_rule(replace(RULE, dimensions=("county", "phone"), min_group_size=3), FIELDS, floor=3)
    assert "phone" in rule.dimensions


def spec(**change: Any) -> OperationSpec:
    doc: dict[str, Any] = {
        "dataset": "market-licences",
        "group_by": ["county"],
        "measures": [{"field": "licence_no", "fn": "count"}, {"field": "capital", "fn": "avg"}],
        "filters": [],
        "window_seconds": 3600,
        "k": 10,
    }
    doc.update(change)
    return spec_from_json(doc)


@pytest.mark.parametrize(
    "change,code",
    [
        ({"group_by": ["credit_code"]}, "operation.subject_output"),
        ({"measures": [{"field": "credit_code", "fn": "count"}]}, "operation.subject_output"),
        ({"filters": [{"field": "credit_code", "op": "eq", "value": "X"}]}, "operation.subject_output"),
        ({"group_by": ["phone"]}, "operation.field_not_allowed"),
        ({"group_by": ["legal_rep_id"]}, "operation.field_not_allowed"),
        ({"filters": [{"field": "staff", "op": "eq", "value": 3}]}, "operation.field_not_allowed"),
        ({"measures": [{"field": "staff", "fn": "sum"}]}, "operation.field_not_allowed"),
        ({"measures": [{"field": "licence_no", "fn": "sum"}]}, "operation.field_not_allowed"),
        ({"k": 9}, "operation.k_too_small"),
        ({"k": 1}, "operation.k_too_small"),
        ({"window_seconds": 61}, "operation.window_not_allowed"),
        ({"measures": []}, "operation.invalid"),
        ({"group_by": ["county", "county"]}, "operation.invalid"),
        (
            {"measures": [{"field": "capital", "fn": "avg"}, {"field": "capital", "fn": "avg"}]},
            "operation.invalid",
        ),
        ({"epsilon": 0.0}, "operation.invalid"),
        ({"epsilon": 3.0}, "operation.invalid"),
    ],
)
def test_r11_operation_refusals(change: dict[str, Any], code: str) -> None:
    with pytest.raises(BusError) as err:
        check_spec(spec(**change), RULE)
    assert err.value.code == code


@pytest.mark.parametrize(
    "doc",
    [
        {"measures": [{"field": "capital", "fn": "median"}]},
        {"filters": [{"field": "county", "op": "like", "value": "x"}]},
        {"filters": [{"field": "county", "op": "in", "value": []}]},
        {"filters": [{"field": "county", "op": "in", "value": "x"}]},
        {"filters": [{"field": "county", "op": "eq", "value": {"a": 1}}]},
        {"window_seconds": "soon"},
        {"k": None},
    ],
)
def test_r11_malformed_specs_are_operation_invalid(doc: dict[str, Any]) -> None:
    with pytest.raises(BusError) as err:
        spec(**doc)
    assert err.value.code == "operation.invalid"


def test_r11_no_noise_offered_without_budget() -> None:
    with pytest.raises(BusError) as err:
        check_spec(spec(epsilon=0.5), replace(RULE, epsilon_per_day=None))
    assert err.value.code == "operation.invalid"


def test_r11_k_may_be_raised_and_filters_on_dimensions_pass() -> None:
    check_spec(spec(k=50, filters=[{"field": "industry", "op": "in", "value": ["retail", "food"]}]), RULE)


ISOLATING = [{"field": "county", "op": "in", "value": ["140902", "140921"]}]


@pytest.mark.parametrize(
    "new,others,refused",
    [
        (spec(filters=ISOLATING), [spec()], True),  # all minus a small group: subtract the two
        (spec(), [spec(filters=ISOLATING)], True),
        (
            spec(filters=[{"field": "county", "op": "eq", "value": "1"}]),
            [spec(filters=[{"field": "county", "op": "eq", "value": "2"}])],
            True,
        ),
        (spec(filters=ISOLATING, epsilon=0.5), [spec()], False),  # noise on: allowed
        (spec(filters=ISOLATING, group_by=["industry"]), [spec()], False),  # another shape
        (spec(filters=ISOLATING, window_seconds=60), [spec()], False),
        (spec(), [spec()], False),  # the same operation again reveals nothing new
        (spec(k=20), [spec()], False),
    ],
)
def test_r11_difference_attack(new: OperationSpec, others: list[OperationSpec], refused: bool) -> None:
    if refused:
        with pytest.raises(BusError) as err:
            check_spec(new, RULE, others)
        assert err.value.code == "operation.difference_attack"
    else:
        check_spec(new, RULE, others)


def test_r11_spec_round_trips() -> None:
    s = spec(filters=ISOLATING + [{"field": "industry", "op": "eq", "value": "food"}], epsilon=0.5)
    assert spec_from_json(s.to_json()) == s
