"""Leases in Redis: each connector runs in exactly one runtime, even with several runtimes."""

from __future__ import annotations

import contextlib
import logging
import time

from bus.context import BusContext

log = logging.getLogger(__name__)


# --- leases: one runtime per connector ----------------------------------------------------------------
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
    "else return 0 end"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class Leases:
    """Redis leases ``<prefix>bus:connector-lease:<name>`` held by one runtime (its ``owner`` id)."""

    def __init__(self, ctx: BusContext, owner: str, seconds: float) -> None:
        self.ctx = ctx
        self.owner = owner
        self.ms = int(seconds * 1000)
        self._valid_until: dict[str, float] = {}

    def _key(self, name: str) -> str:
        return self.ctx.rkey("connector-lease", name)

    def acquire(self, name: str) -> bool:
        try:
            got = self.ctx.redis.set(self._key(name), self.owner, nx=True, px=self.ms)
            if not got:
                got = bool(self.ctx.redis.eval(_RENEW, 1, self._key(name), self.owner, self.ms))
        except Exception:  # Redis unreachable: never start a connector another runtime may hold
            log.warning("cannot reach Redis to take the lease of connector %s", name)
            return False
        if got:
            self._valid_until[name] = time.monotonic() + self.ms / 1000
        return bool(got)

    def renew(self, name: str) -> bool:
        """Still ours? A Redis outage is tolerated until the lease would have expired."""
        try:
            ok = bool(self.ctx.redis.eval(_RENEW, 1, self._key(name), self.owner, self.ms))
        except Exception:
            return time.monotonic() < self._valid_until.get(name, 0) - 1.0
        if ok:
            self._valid_until[name] = time.monotonic() + self.ms / 1000
        return ok

    def release(self, name: str) -> None:
        self._valid_until.pop(name, None)
        with contextlib.suppress(Exception):
            self.ctx.redis.eval(_RELEASE, 1, self._key(name), self.owner)


# --- one running connector ---------------------------------------------------------------------------
