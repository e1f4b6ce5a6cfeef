"""R11: the privacy budget is never exceeded, even under concurrent releases (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

import pytest

from bus.operations import budget

THREADS, EACH, COST, LIMIT = 6, 10, 0.1, 1.0


def test_r11_budget_never_exceeded_under_concurrent_debits(ctx) -> None:
    granted: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def spend() -> None:
        try:
            start.wait()
            for _ in range(EACH):
                with ctx.store.session() as s:
                    ok = budget.debit(s, "oper", "ds", COST, LIMIT, day="2026-12-03")
                with lock:
                    granted.append(ok)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=spend) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(granted) == THREADS * EACH
    assert sum(granted) == round(LIMIT / COST)  # exactly what fits, never one more
    with ctx.store.session() as s:
        assert budget.spent(s, "oper", "ds", day="2026-12-03") == pytest.approx(LIMIT)
        assert budget.spent(s, "oper", "other", day="2026-12-03") == 0.0


def test_r11_budget_is_per_operator_dataset_and_day(ctx) -> None:
    with ctx.store.session() as s:
        assert budget.debit(s, "a", "ds", 1.0, 1.0, day="2026-12-01")
        assert not budget.debit(s, "a", "ds", 0.01, 1.0, day="2026-12-01")
        assert budget.debit(s, "a", "ds", 1.0, 1.0, day="2026-12-02")
        assert budget.debit(s, "b", "ds", 1.0, 1.0, day="2026-12-01")
        assert budget.debit(s, "a", "ds2", 1.0, 1.0, day="2026-12-01")
