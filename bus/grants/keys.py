"""Grant data keys (R8, R12): made, rotated, handed to the grantee and destroyed.

A grant's records on ``deliver.<grant>`` are sealed under a random 256-bit key that only the bus and the
grantee hold. The key in use is the one of the grant's current *epoch*, ``<grant version>.<period>``:
every change of the grant (approval, suspension, resumption, revocation, expiry) bumps its version and
every ``BUS_GRANT_KEY_ROTATE_HOURS`` starts a new period, so the first record sealed after either gets a
fresh key and records after a change never use a key handed out before it. Keys are stored wrapped
(``bus.exchange.keyring.wrap``); the keys of a grant that ended more than ``BUS_GRANT_KEY_RETENTION_DAYS``
ago are destroyed, so what is still on the broker can no longer be opened by anyone.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bus.context import BusContext
from bus.exchange.envelope import Sealer
from bus.exchange.keyring import unwrap, wrap
from bus.lineage import audit
from bus.store.models import Grant, GrantKey
from bus.vocab import GrantStatus

ALG = "A256GCM"
KEY_CACHE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key version as the keys endpoint hands it to the grantee."""

    kid: str
    key: bytes
    not_before: datetime
    not_after: datetime | None


def _purpose(grant_id: str, kid: str) -> str:
    return f"grant-key/{grant_id}/{kid}"


def epoch_of(grant_version: int, now: datetime, rotate_hours: float) -> str:
    period = int(now.timestamp() // (rotate_hours * 3600))
    return f"{grant_version}.{period}"


class GrantKeys:
    """The bus's view of grant keys: the current sealer per grant, any sealer by kid (cached, thread-safe)."""

    def __init__(self, ctx: BusContext) -> None:
        self.ctx = ctx
        self._current: dict[str, tuple[str, Sealer]] = {}  # grant id -> (epoch, sealer)
        # (grant, kid) -> (sealer or None, when read): re-read after KEY_CACHE_SECONDS, so a key destroyed
        # by the retention sweep in any process stops opening records everywhere within a minute
        self._by_kid: dict[tuple[str, str], tuple[Sealer | None, float]] = {}
        self._lock = threading.Lock()

    def current(self, grant_id: str, grant_version: int, now: datetime | None = None) -> Sealer:
        """The sealer for records delivered under the grant now (creating the epoch's key on first use)."""
        epoch = epoch_of(grant_version, now or datetime.now(UTC), self.ctx.settings.grant_key_rotate_hours)
        found = self._current.get(grant_id)
        if found is not None and found[0] == epoch:
            return found[1]
        sealer = self._load_or_create(grant_id, epoch)
        with self._lock:
            self._current[grant_id] = (epoch, sealer)
            self._by_kid[(grant_id, sealer.kid)] = (sealer, time.monotonic())
        return sealer

    def by_kid(self, grant_id: str, kid: str) -> Sealer | None:
        """The sealer of one key version of the grant, or ``None`` (unknown, another grant's, destroyed)."""
        key = (grant_id, kid)
        cached = self._by_kid.get(key)
        if cached is not None and cached[0] is not None and time.monotonic() - cached[1] < KEY_CACHE_SECONDS:
            return cached[0]
        with self.ctx.store.session() as s:
            row = s.get(GrantKey, kid)
            sealer = None
            if row is not None and row.grant_id == grant_id and row.wrapped:
                sealer = Sealer(kid, unwrap(self.ctx.master_secret, _purpose(grant_id, kid), row.wrapped))
        with self._lock:
            self._by_kid[key] = (sealer, time.monotonic())
        return sealer

    def _load_or_create(self, grant_id: str, epoch: str) -> Sealer:
        master = self.ctx.master_secret
        for _ in range(3):
            with self.ctx.store.session() as s:
                row = s.scalars(
                    select(GrantKey).where(GrantKey.grant_id == grant_id, GrantKey.epoch == epoch)
                ).first()
                if row is not None and row.wrapped:
                    return Sealer(row.kid, unwrap(master, _purpose(grant_id, row.kid), row.wrapped))
            kid = secrets.token_hex(4)
            key = secrets.token_bytes(32)
            now = datetime.now(UTC)
            try:
                with self.ctx.store.session() as s:
                    s.execute(
                        update(GrantKey)
                        .where(GrantKey.grant_id == grant_id, GrantKey.not_after.is_(None))
                        .values(not_after=now)
                    )
                    s.add(
                        GrantKey(
                            kid=kid,
                            grant_id=grant_id,
                            epoch=epoch,
                            wrapped=wrap(master, _purpose(grant_id, kid), key),
                            not_before=now,
                        )
                    )
                return Sealer(kid, key)
            except IntegrityError:
                continue  # another worker made this epoch's key first: use theirs
        raise RuntimeError(f"could not create a key for grant {grant_id}")

    def forget(self, grant_id: str) -> None:
        with self._lock:
            self._current.pop(grant_id, None)
            for k in [k for k in self._by_kid if k[0] == grant_id]:
                del self._by_kid[k]


def grantee_keys(ctx: BusContext, grant_id: str) -> list[KeyInfo]:
    """Every key version of the grant that still exists, oldest first (for ``GET /v1/grants/{id}/keys``)."""
    with ctx.store.session() as s:
        rows = s.scalars(
            select(GrantKey)
            .where(GrantKey.grant_id == grant_id, GrantKey.wrapped.is_not(None))
            .order_by(GrantKey.not_before)
        ).all()
        return [
            KeyInfo(
                r.kid,
                unwrap(ctx.master_secret, _purpose(grant_id, r.kid), r.wrapped or ""),
                r.not_before,
                r.not_after,
            )
            for r in rows
        ]


def destroy_ended(ctx: BusContext, now: datetime | None = None) -> dict[str, int]:
    """Destroy the keys of grants that ended (revoked, expired, denied) longer than the retention ago:
    crypto-shredding of whatever of theirs is still on the broker. Audited per grant
    (``grant.keys_destroyed``); returns grant id -> keys destroyed."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=ctx.settings.grant_key_retention_days)
    ended = (GrantStatus.REVOKED, GrantStatus.EXPIRED, GrantStatus.DENIED)
    destroyed: dict[str, int] = {}
    with ctx.store.session() as s:
        rows = s.execute(
            select(GrantKey.grant_id, GrantKey.kid)
            .join(Grant, Grant.id == GrantKey.grant_id)
            .where(
                Grant.status.in_(ended),
                Grant.ended_at.is_not(None),
                Grant.ended_at <= cutoff,
                GrantKey.wrapped.is_not(None),
            )
        ).all()
        if not rows:
            return destroyed
        for grant_id, _kid in rows:
            destroyed[grant_id] = destroyed.get(grant_id, 0) + 1
        s.execute(
            update(GrantKey)
            .where(GrantKey.kid.in_([kid for _g, kid in rows]))
            .values(wrapped=None, destroyed_at=now, not_after=now)
        )
        for grant_id, n in sorted(destroyed.items()):
            audit.append(s, "bus", "grant.keys_destroyed", "grant", grant_id,
                         {"keys": n, "retention_days": ctx.settings.grant_key_retention_days})
    return destroyed
