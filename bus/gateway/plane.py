"""The gateway's share of the data plane: one policy cache, fingerprint guard and ledger per app.

Created on first use (no I/O at import or app creation) and shared by the publish, read and stream
endpoints of one gateway process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from fastapi import Request

from bus.context import BusContext
from bus.exchange.fingerprints import FingerprintGuard
from bus.exchange.ledger import BackgroundLedger
from bus.exchange.policy_cache import PolicyCache
from bus.gateway.auth import ctx_of

_lock = threading.Lock()


@dataclass
class Plane:
    ctx: BusContext
    cache: PolicyCache
    guard: FingerprintGuard
    ledger: BackgroundLedger


def plane_of(request: Request) -> Plane:
    state = request.app.state
    plane: Plane | None = getattr(state, "data_plane", None)
    if plane is None:
        with _lock:
            plane = getattr(state, "data_plane", None)
            if plane is None:
                ctx = ctx_of(request)
                plane = Plane(ctx, PolicyCache(ctx).start(), FingerprintGuard(ctx), BackgroundLedger(ctx))
                state.data_plane = plane
    return plane
