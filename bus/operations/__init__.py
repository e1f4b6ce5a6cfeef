"""Authorised operation (R11): licensed operators compute aggregates inside the bus.

Pure code (no I/O): ``rules`` (the data owner's analysis rule), ``spec`` (static checks of an
operation), ``windows`` (tumbling windows, k-suppression, clamping), ``noise`` (OpenDP). The edges:
``source`` (the one reader of ``data.<dataset>``), ``sink`` (the one publisher of result rows),
``service`` (store), ``executor`` (the worker), ``derived`` (the catalogued derived product).
"""

from __future__ import annotations


def make_worker(ctx):  # type: ignore[no-untyped-def]
    """``bus.stack.WORKERS`` entry: the in-bus executor of active operations."""
    from bus.operations.executor import OperatorWorker

    return OperatorWorker(ctx)
