"""The one publisher of operation results (R11): result rows go into the bus like any owner's records.

``publish_results`` hands the rows of a released window to the HTTP publish path's in-process logic
(admission, strict encoding against the derived dataset's schema, lineage), as the derived dataset's
owner, the operator. From ``data.<derived>`` the ordinary pipeline delivers them to the operator's
grant. When the data plane gets its single in-process pipeline function, only this function changes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from bus.context import BusContext
from bus.errors import BusError, Unavailable

_lock = threading.Lock()
_planes: dict[int, Any] = {}  # id(ctx) -> bus.gateway.plane.Plane: the executor's own share of the data plane


def _plane(ctx: BusContext) -> Any:
    from bus.exchange.emit import Emitter
    from bus.exchange.fingerprints import FingerprintGuard
    from bus.exchange.ledger import BackgroundLedger
    from bus.exchange.policy_cache import PolicyCache
    from bus.gateway.plane import Plane
    from bus.policy.routes import RouteTable

    with _lock:
        plane = _planes.get(id(ctx))
        if plane is None:
            plane = Plane(ctx, PolicyCache(ctx).start(), FingerprintGuard(ctx), BackgroundLedger(ctx),
                          Emitter(ctx), RouteTable(ctx.master_secret))
            _planes[id(ctx)] = plane
        return plane


def publish_results(
    ctx: BusContext, dataset_id: str, operator_agency_id: str, rows: Sequence[dict[str, Any]]
) -> list[str]:
    """Publish ``rows`` to the derived dataset; the record id of each row, in order. Raises (nothing is
    confirmed) when any row is refused or the broker does not acknowledge: the caller retries the whole
    release, which is stored until it is published."""
    from bus.gateway.routes_records import publish_records

    if not rows:
        return []
    plane = _plane(ctx)
    plane.cache.invalidate()  # a derived dataset approved a moment ago must be in the snapshot
    answer = publish_records(plane, operator_agency_id, dataset_id, list(rows))
    if answer["rejected"]:
        first = answer["rejected"][0]
        raise BusError(
            f"result row {first['index']} refused by {dataset_id}: {first['detail']}", code=first["code"]
        )
    ids = list(answer["record_ids"])
    if len(ids) != len(rows):
        raise Unavailable(f"published {len(ids)} of {len(rows)} result rows")
    plane.ledger.flush()  # the rows' lineage is written before the release is marked published
    return ids


def close_sink(ctx: BusContext) -> None:
    """Release the executor's data-plane share (the worker is stopping)."""
    with _lock:
        plane = _planes.pop(id(ctx), None)
    if plane is not None:
        plane.close()
