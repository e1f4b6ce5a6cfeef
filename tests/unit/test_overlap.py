"""R9 at submit time: the pure comparison of a new entry's semantic fields with what sharing offers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.policy.overlap import (
    Field,
    SourceDataset,
    compare_entry,
    fields_of_schema,
    norm_semantic,
    obtainable_fields,
)
from tests.helpers import licence_schema

LICENCE = fields_of_schema(licence_schema())


def market(
    attribute: str = "unconditional",
    *,
    shareable: set[str] | None = None,
    eligible: set[str] | None = None,
    owner: str = "market",
    ds_id: str = "market-licences",
) -> SourceDataset:
    return SourceDataset(
        ds_id,
        owner,
        attribute,
        LICENCE,
        frozenset(shareable) if shareable else None,
        frozenset(eligible) if eligible else None,
    )


def entry(*pairs: tuple[str, str | None]) -> list[Field]:
    return [Field(name, sem) for name, sem in pairs]


COPY = entry(("cc", "enterprise.credit_code"), ("nm", "enterprise.name"), ("addr", "enterprise.address"))
MIXED = entry(("cc", "enterprise.credit_code"), ("tax_due", "tax.amount_due"))


@pytest.mark.parametrize(
    ("source", "agency", "expected"),
    [
        (market("unconditional"), "tax", {f.name for f in LICENCE}),
        (market("unconditional", owner="tax"), "tax", set()),  # own data is not obtained by sharing
        (market("none"), "tax", set()),
        (market("conditional", shareable={"credit_code", "address"}), "tax", {"credit_code", "address"}),
        (market("conditional", eligible={"tax"}), "tax", {f.name for f in LICENCE}),
        (market("conditional", eligible={"health"}), "tax", set()),
        (market("conditional", shareable={"credit_code"}, eligible={"tax"}), "tax", {"credit_code"}),
        (market("conditional", shareable={"credit_code"}, eligible={"health"}), "tax", set()),
    ],
    ids=[
        "unconditional",
        "own",
        "not-shared",
        "conditional-fields",
        "conditional-eligible",
        "conditional-not-eligible",
        "conditional-both",
        "conditional-both-not-eligible",
    ],
)
def test_r9_r5_obtainable_fields_follow_the_sharing_attribute(
    source: SourceDataset, agency: str, expected: set[str]
) -> None:
    assert {f.name for f in obtainable_fields(source, agency)} == expected


def test_r9_entry_collecting_nothing_new_is_a_full_overlap_naming_the_dataset_to_request() -> None:
    report = compare_entry(COPY, "tax", [market()])
    assert report.full and not report.partial
    assert [c.field for c in report.covered] == ["cc", "nm", "addr"]
    assert len(report.request_instead) == 1
    s = report.request_instead[0]
    assert (s.dataset, s.owner, s.fields) == ("market-licences", "market", ("cc", "nm", "addr"))
    assert s.source_fields == ("credit_code", "enterprise_name", "address")


def test_r9_partial_overlap_reports_covered_and_new_fields() -> None:
    report = compare_entry(MIXED, "tax", [market()])
    assert report.partial and not report.full
    body = report.as_dict()
    assert body["kind"] == "partial"
    assert body["new_fields"] == ["tax_due"]
    assert body["covered_fields"][0]["available_from"] == [
        {"dataset": "market-licences", "owner": "market", "field": "credit_code"}
    ]


@pytest.mark.parametrize(
    ("fields", "sources", "kind"),
    [
        (COPY, [market("none")], "none"),  # not shared: nothing obtainable, R9 does not apply
        (COPY, [market(owner="tax")], "none"),  # the submitter's own dataset
        (COPY, [market("conditional", shareable={"credit_code", "enterprise_name"})], "partial"),
        (COPY, [market("conditional", eligible={"health"})], "none"),
        (entry(("cc", "enterprise.credit_code"), ("note", None)), [market()], "partial"),  # no semantic = new
        (entry(("note", None)), [market()], "none"),
        ([], [market()], "none"),
        (entry(("cc", " Enterprise.Credit_Code ")), [market()], "full"),  # semantic names compare loosely
    ],
    ids=[
        "not-shared",
        "own",
        "conditional-part",
        "not-eligible",
        "no-semantic",
        "nothing-comparable",
        "empty",
        "case-insensitive",
    ],
)
def test_r9_overlap_kind_table(fields: list[Field], sources: list[SourceDataset], kind: str) -> None:
    assert compare_entry(fields, "tax", sources).as_dict()["kind"] == kind


def test_r9_request_instead_is_a_small_cover_over_several_datasets() -> None:
    a = SourceDataset(
        "a-names", "x", "unconditional", (Field("n", "enterprise.name"), Field("c", "enterprise.credit_code"))
    )
    b = SourceDataset(
        "b-addr",
        "y",
        "unconditional",
        (Field("addr", "enterprise.address"), Field("c2", "enterprise.credit_code")),
    )
    c = SourceDataset(
        "c-all",
        "z",
        "unconditional",
        (
            Field("n", "enterprise.name"),
            Field("c", "enterprise.credit_code"),
            Field("a", "enterprise.address"),
        ),
    )
    report = compare_entry(COPY, "tax", [a, b, c])
    assert [s.dataset for s in report.request_instead] == ["c-all"]  # one dataset covers all three
    report = compare_entry(COPY, "tax", [a, b])
    assert sorted(s.dataset for s in report.request_instead) == ["a-names", "b-addr"]
    covered = {f for s in report.request_instead for f in s.fields}
    assert covered == {"cc", "nm", "addr"}


SEMS = st.sampled_from(
    [
        "person.id_number",
        "person.name",
        "person.phone",
        "enterprise.credit_code",
        "enterprise.name",
        "enterprise.address",
        "licence.number",
        None,
    ]
)


@given(
    st.lists(
        st.tuples(st.text("abcdefgh", min_size=1, max_size=4), SEMS), max_size=8, unique_by=lambda p: p[0]
    ),
    st.lists(
        st.tuples(
            st.sampled_from(["unconditional", "conditional", "none"]),
            st.lists(SEMS, max_size=6),
            st.booleans(),
        ),
        max_size=4,
    ),
)
def test_r9_report_invariants(
    pairs: list[tuple[str, str | None]], specs: list[tuple[str, list, bool]]
) -> None:
    """Every field is covered or new; full means nothing new; the suggestions cover exactly the covered."""
    sources = []
    for i, (attr, sems, eligible) in enumerate(specs):
        fields = tuple(Field(f"f{j}", s) for j, s in enumerate(sems))
        sources.append(
            SourceDataset(
                f"d{i}", f"owner{i}", attr, fields, None, None if eligible else frozenset({"someone-else"})
            )
        )
    fields = entry(*pairs)
    report = compare_entry(fields, "me", sources)
    covered = [c.field for c in report.covered]
    assert sorted(covered + list(report.new_fields)) == sorted(f.name for f in fields)
    assert report.full == (bool(fields) and not report.new_fields and bool(covered))
    assert {f for s in report.request_instead for f in s.fields} == set(covered)
    for c in report.covered:
        assert c.semantic == norm_semantic(next(f.semantic for f in fields if f.name == c.field))
        for src in c.sources:
            ds = next(d for d in sources if d.id == src.dataset)
            assert src.field in {f.name for f in obtainable_fields(ds, "me")}
