"""R1: the review workflow as a table: every (status, action) pair either moves or is catalog.bad_state."""

from __future__ import annotations

import itertools

import pytest

from bus.catalog.workflow import PUBLISHED, SCHEMA_EDITABLE, Action, check_schema_editable, next_status
from bus.errors import BadState
from bus.vocab import DatasetStatus as S

ALLOWED = {
    (S.DRAFT, Action.SUBMIT): S.SUBMITTED,
    (S.REJECTED, Action.SUBMIT): S.SUBMITTED,
    (S.SUBMITTED, Action.APPROVE): S.APPROVED,
    (S.SUBMITTED, Action.REJECT): S.REJECTED,
    (S.APPROVED, Action.RETIRE): S.RETIRED,
}


@pytest.mark.parametrize(
    ("status", "action"),
    list(itertools.product(S, Action)),
    ids=[f"{s.value}-{a.value}" for s, a in itertools.product(S, Action)],
)
def test_r1_lifecycle_transitions(status: S, action: Action) -> None:
    if (status, action) in ALLOWED:
        assert next_status(status.value, action, "ds") is ALLOWED[(status, action)]
        return
    with pytest.raises(BadState) as err:
        next_status(status.value, action, "ds")
    assert err.value.code == "catalog.bad_state" and err.value.status == 409
    assert f"in status '{status.value}'" in err.value.detail and "'ds'" in err.value.detail
    assert err.value.extra["current_status"] == status.value


@pytest.mark.parametrize("status", list(S))
def test_r2_schema_changes_only_outside_review_and_before_retirement(status: S) -> None:
    if status in SCHEMA_EDITABLE:
        check_schema_editable(status.value)
    else:
        with pytest.raises(BadState):
            check_schema_editable(status.value)
    assert (status in SCHEMA_EDITABLE) == (status in (S.DRAFT, S.REJECTED, S.APPROVED))


def test_r1_only_submitted_approved_and_retired_entries_are_published() -> None:
    assert frozenset({S.SUBMITTED, S.APPROVED, S.RETIRED}) == PUBLISHED
