"""The privacy budget ledger (R11): epsilon per operator, dataset and UTC day, debited atomically.

A debit is one conditional UPDATE (``spent + cost <= budget``) in the releasing transaction, so
concurrent releases, in one executor or several, can never spend more than the budget together.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bus.store.models import PrivacyBudget

SLACK = 1e-9  # float sums of equal debits must not refuse the last one that fits exactly


def today(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d")


def _ensure_row(s: Session, operator_id: str, dataset_id: str, day: str, budget: float) -> None:
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(PrivacyBudget).values(
        operator_id=operator_id, dataset_id=dataset_id, day=day, spent=0.0, budget=budget
    )
    s.execute(stmt.on_conflict_do_nothing(index_elements=["operator_id", "dataset_id", "day"]))


def debit(
    s: Session, operator_id: str, dataset_id: str, cost: float, budget: float, day: str | None = None
) -> bool:
    """Spend ``cost`` of today's ``budget``; False (nothing spent) when it does not fit."""
    day = day or today()
    _ensure_row(s, operator_id, dataset_id, day, budget)
    key = (
        PrivacyBudget.operator_id == operator_id,
        PrivacyBudget.dataset_id == dataset_id,
        PrivacyBudget.day == day,
    )
    result = s.execute(
        update(PrivacyBudget)
        .where(*key, PrivacyBudget.spent + cost <= PrivacyBudget.budget + SLACK)
        .values(spent=PrivacyBudget.spent + cost)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]


def spent(s: Session, operator_id: str, dataset_id: str, day: str | None = None) -> float:
    row = s.get(PrivacyBudget, (operator_id, dataset_id, day or today()))
    return float(row.spent) if row is not None else 0.0
