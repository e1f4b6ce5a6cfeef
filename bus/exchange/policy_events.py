"""Policy changes (revocation, suspension, expiry, new grants) announced to every worker through Redis.

Publishers call ``announce`` after the change is committed to the store; routers, validators and open
streams listen on ``channel(ctx)`` and re-read the store, so a change takes effect within a second.
A monotonically increasing version (``INCR``) lets a worker that missed a message notice on its next
batch, and a worker that cannot reach Redis stops delivering (fails closed).
"""

from __future__ import annotations

import json

from bus.context import BusContext


def channel(ctx: BusContext) -> str:
    return ctx.rkey("policy-changes")


def version_key(ctx: BusContext) -> str:
    return ctx.rkey("policy-version")


def announce(ctx: BusContext, kind: str, subject_id: str) -> int:
    """Bump the policy version and publish ``{kind, id, version}``; returns the new version.

    ``kind`` is one of ``grant``, ``dataset``, ``agency``.
    """
    pipe = ctx.redis.pipeline()
    pipe.incr(version_key(ctx))
    version = int(pipe.execute()[0])
    ctx.redis.publish(channel(ctx), json.dumps({"kind": kind, "id": subject_id, "version": version}))
    return version


def current_version(ctx: BusContext) -> int:
    raw = ctx.redis.get(version_key(ctx))
    return int(raw) if raw else 0
