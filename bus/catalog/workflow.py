"""The review workflow of catalogue entries (R1) as a table: which action moves which status where.

``draft -> submitted -> approved | rejected``, ``rejected -> submitted`` (after fixing),
``approved -> retired``.
Pure code, no I/O.
"""

from __future__ import annotations

from enum import StrEnum

from bus.errors import BadState
from bus.vocab import DatasetStatus as S


class Action(StrEnum):
    SUBMIT = "submit"
    APPROVE = "approve"
    REJECT = "reject"
    RETIRE = "retire"


TRANSITIONS: dict[Action, tuple[frozenset[S], S]] = {
    Action.SUBMIT: (frozenset({S.DRAFT, S.REJECTED}), S.SUBMITTED),
    Action.APPROVE: (frozenset({S.SUBMITTED}), S.APPROVED),
    Action.REJECT: (frozenset({S.SUBMITTED}), S.REJECTED),
    Action.RETIRE: (frozenset({S.APPROVED}), S.RETIRED),
}

# A schema may change before review (no records exist yet) and after approval (checked for compatibility);
# never while a reviewer is looking at it, nor once retired.
SCHEMA_EDITABLE = frozenset({S.DRAFT, S.REJECTED, S.APPROVED})
# Entries other agencies can see; drafts and rejected entries are their owner's work in progress.
PUBLISHED = frozenset({S.SUBMITTED, S.APPROVED, S.RETIRED})

_HINT = {
    S.SUBMITTED: "it is waiting for review",
    S.APPROVED: "it is already approved",
    S.RETIRED: "it is retired; catalogue a new entry instead",
    S.DRAFT: "submit it for review first",
    S.REJECTED: "fix it and submit it again",
}


def next_status(current: str, action: Action, dataset_id: str = "") -> S:
    """The status after ``action``, or ``catalog.bad_state`` saying which states allow it."""
    allowed, target = TRANSITIONS[action]
    if current not in allowed:
        name = f"'{dataset_id}' " if dataset_id else ""
        raise BadState(
            f"cannot {action.value} dataset {name}in status '{current}' ({_HINT.get(S(current), current)}); "
            f"{action.value} needs status {' or '.join(sorted(allowed))}",
            current_status=current,
            allowed=sorted(allowed),
        )
    return target


def check_schema_editable(current: str, dataset_id: str = "") -> None:
    if current not in SCHEMA_EDITABLE:
        name = f"'{dataset_id}' " if dataset_id else ""
        raise BadState(
            f"the schema of dataset {name}cannot change in status '{current}' "
            f"({_HINT.get(S(current), current)}); allowed in {', '.join(sorted(SCHEMA_EDITABLE))}",
            current_status=current,
            allowed=sorted(SCHEMA_EDITABLE),
        )
