"""R8/R9 at publish time: refuse records that re-collect or forward another agency's data.

The validator and the HTTP publish path call ``FingerprintGuard.check_batch`` on each batch of decoded
records and ``remember_batch`` on the accepted ones; each is **one Redis round trip per batch**.

Which datasets a record is compared with is worked out lazily here, not at approval time: the guard keeps
a snapshot of the approved datasets (their current schema's semantic fields and sharing attributes) and
of the grants, rebuilt when the policy version in Redis changes (every approval, grant and suspension
is announced, see ``bus.exchange.policy_events``; the version is read in the same pipeline as the
lookups) and at most ``ttl`` seconds after it was built. For a publisher's dataset P, every other
agency's dataset S is a target when the semantics P shares with what the publisher can obtain from S
(its grants' fields, or what S would share with it) qualify (see ``bus.policy.fingerprint``). A match
is ``forwarding.detected`` when the publisher holds or held a grant on S (any status but pending or
denied), ``recollection.detected`` otherwise. A bus pseudonym inside a published record is forwarding
too: pseudonyms exist only in delivered data, and their tag names the grant.

Redis layout, per source dataset and identifier semantic, in 65 536 hash buckets so each stays a compact
listpack: ``<prefix>bus:fp:<dataset>:<semantic>:<bucket> {anchor(8 B) -> entry}`` (see ``encode_entry``).

Each batch is one Lua script call (``EVAL``, cached by the server) whose arguments are the few key bases
(``...:<semantic>:``), one packed array of fixed-size ``(base, bucket, anchor[, entry])`` items and the
entries: a pipeline of one ``HSET``/``HGET`` per anchor costs ~10x more in the client than in Redis. The
lookup script returns only the hits.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select

from bus.context import BusContext
from bus.errors import BusError, ForwardingDetected, RecollectionDetected
from bus.exchange.policy_events import version_key
from bus.policy import fingerprint as fp
from bus.policy.overlap import Field, SourceDataset, fields_of_schema, obtainable_fields
from bus.store.models import Dataset, Grant, SchemaVersion
from bus.vocab import DatasetStatus, GrantStatus, SharingAttribute

log = logging.getLogger(__name__)

BUCKETS = 1 << 16
_NOT_HELD = (GrantStatus.PENDING, GrantStatus.DENIED)

# One item per anchor: key base number (1-based), bucket, then the 8-byte anchor; remember adds the
# entry's number (1-based). Big-endian, read back in Lua with string.byte.
_LOOKUP_ITEM = struct.Struct(">HI")
_REMEMBER_ITEM = struct.Struct(">HII")

# ARGV: n, n key bases, the packed (base u16, bucket u32, anchor 8 B) items.
# Returns {item number, entry, item number, entry, ...} for the anchors that are stored.
_LOOKUP_LUA = """
local n = tonumber(ARGV[1])
local items = ARGV[n + 2]
local out = {}
local i = 0
for pos = 1, #items, 14 do
  i = i + 1
  local b1, b2, k1, k2, k3, k4 = string.byte(items, pos, pos + 5)
  local key = ARGV[1 + b1 * 256 + b2] .. string.format("%x", ((k1 * 256 + k2) * 256 + k3) * 256 + k4)
  local v = redis.call("HGET", key, string.sub(items, pos + 6, pos + 13))
  if v then
    out[#out + 1] = i
    out[#out + 1] = v
  end
end
return out
"""

# ARGV: n, n key bases, the packed (base u16, bucket u32, entry u32, anchor 8 B) items, the entries.
_REMEMBER_LUA = """
local n = tonumber(ARGV[1])
local items = ARGV[n + 2]
for pos = 1, #items, 18 do
  local b1, b2, k1, k2, k3, k4, e1, e2, e3, e4 = string.byte(items, pos, pos + 9)
  local key = ARGV[1 + b1 * 256 + b2] .. string.format("%x", ((k1 * 256 + k2) * 256 + k3) * 256 + k4)
  local entry = ARGV[n + 2 + ((e1 * 256 + e2) * 256 + e3) * 256 + e4]
  redis.call("HSET", key, string.sub(items, pos + 10, pos + 17), entry)
end
return 0
"""


@dataclass(frozen=True)
class GrantRef:
    id: str
    agency_id: str
    dataset_id: str
    status: str
    fields: tuple[str, ...]
    scenario_code: str
    requested_at: datetime | None = None


@dataclass(frozen=True)
class Target:
    """A dataset whose records a publisher's records are compared with, on which semantics."""

    source: SourceDataset
    shared: frozenset[str]
    grant: GrantRef | None  # set: the publisher holds or held a grant on it (forwarding)


def _grant_rank(g: GrantRef) -> tuple[int, float]:
    order = {GrantStatus.ACTIVE.value: 0, GrantStatus.SUSPENDED.value: 1}
    return (order.get(g.status, 2), -(g.requested_at.timestamp() if g.requested_at else 0.0))


@dataclass
class Snapshot:
    """The catalogue and grants as one guard sees them; rebuilt on policy changes."""

    datasets: dict[str, SourceDataset]
    held: dict[tuple[str, str], list[GrantRef]]  # (agency, dataset) -> grants held or once held
    by_tag: dict[str, GrantRef]
    tags: dict[str, str]  # grant id -> tag
    version: int
    built_at: float
    _targets: dict[tuple[str, str], list[Target]] = field(default_factory=dict)
    _watched: dict[str, frozenset[str]] = field(default_factory=dict)

    def watched(self, dataset_id: str) -> frozenset[str]:
        """The semantics of the dataset's records that a copy into another agency's approved dataset could
        match on (R8/R9): only these are fingerprinted. Empty: no other dataset carries enough of them, so
        nothing is remembered at all. Recomputed with the snapshot, i.e. whenever a dataset is approved,
        retired or changes its sharing."""
        found = self._watched.get(dataset_id)
        if found is None:
            mine = self.datasets.get(dataset_id)
            shared: set[str] = set()
            if mine is not None:
                for other in self.datasets.values():
                    if other.owner != mine.owner:
                        shared |= fp.shared_semantics(other.fields, mine.fields) or frozenset()
            found = self._watched[dataset_id] = frozenset(shared)
        return found

    def targets(self, dataset_id: str, publisher: str) -> list[Target]:
        key = (dataset_id, publisher)
        cached = self._targets.get(key)
        if cached is None:
            cached = self._targets[key] = self._compute_targets(dataset_id, publisher)
        return cached

    def _compute_targets(self, dataset_id: str, publisher: str) -> list[Target]:
        mine = self.datasets.get(dataset_id)
        if mine is None:
            return []
        out: list[Target] = []
        for src in sorted(self.datasets.values(), key=lambda d: d.id):
            if src.id == dataset_id or src.owner == publisher:
                continue
            grants = sorted(self.held.get((publisher, src.id), []), key=_grant_rank)
            granted = {n for g in grants for n in g.fields}
            obtainable = {f.name for f in obtainable_fields(src, publisher)} | granted
            shared = fp.shared_semantics(mine.fields, [f for f in src.fields if f.name in obtainable])
            if shared:
                out.append(Target(src, shared, grants[0] if grants else None))
        out.sort(key=lambda t: t.grant is None)  # forwarding is reported before re-collection
        return out


def load_snapshot(ctx: BusContext, version: int, previous: Snapshot | None = None) -> Snapshot:
    """Approved datasets with their current schemas, and every grant, in one store session."""
    with ctx.store.session() as s:
        rows = s.execute(
            select(
                Dataset.id,
                Dataset.owner_id,
                Dataset.sharing_attribute,
                Dataset.shareable_fields,
                Dataset.eligible_agencies,
                SchemaVersion.schema,
            )
            .join(
                SchemaVersion,
                and_(SchemaVersion.dataset_id == Dataset.id, SchemaVersion.version == Dataset.schema_version),
            )
            .where(Dataset.status == DatasetStatus.APPROVED)
        ).all()
        grants = s.execute(
            select(
                Grant.id,
                Grant.agency_id,
                Grant.dataset_id,
                Grant.status,
                Grant.fields,
                Grant.scenario_code,
                Grant.requested_at,
            )
        ).all()
    datasets = {
        r.id: SourceDataset(
            r.id,
            r.owner_id,
            r.sharing_attribute,
            fields_of_schema(r.schema),
            frozenset(r.shareable_fields) if r.shareable_fields else None,
            frozenset(r.eligible_agencies) if r.eligible_agencies else None,
        )
        for r in rows
    }
    refs = [
        GrantRef(
            g.id, g.agency_id, g.dataset_id, g.status, tuple(g.fields or ()), g.scenario_code, g.requested_at
        )
        for g in grants
    ]
    held: dict[tuple[str, str], list[GrantRef]] = {}
    for g in refs:
        if g.status not in _NOT_HELD:
            held.setdefault((g.agency_id, g.dataset_id), []).append(g)
    tag_of = fp.tag_index(ctx.master_secret, [g.id for g in refs], previous.tags if previous else None)
    by_id = {g.id: g for g in refs}
    return Snapshot(
        datasets,
        held,
        {t: by_id[gid] for t, gid in tag_of.items()},
        {gid: t for t, gid in tag_of.items()},
        version,
        time.monotonic(),
    )


class FingerprintGuard:
    """Checks a batch of decoded records of one dataset against other agencies' fingerprints (Redis)."""

    def __init__(self, ctx: BusContext, *, ttl: float = 5.0, buckets: int = BUCKETS) -> None:
        self.ctx = ctx
        self.ttl = ttl
        self.buckets = buckets
        self.key = fp.fingerprint_key(ctx.master_secret)
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    # --- snapshot ---------------------------------------------------------------------------------
    def refresh(self, version: int | None = None) -> Snapshot:
        """Rebuild the snapshot now (``version``: the policy version it reflects, read if not given)."""
        with self._lock:
            if version is None:
                raw = self.ctx.redis.get(version_key(self.ctx))
                version = int(raw) if raw else 0
            self._snapshot = load_snapshot(self.ctx, version, self._snapshot)
            return self._snapshot

    def snapshot(self) -> Snapshot:
        snap = self._snapshot
        if snap is None or time.monotonic() - snap.built_at > self.ttl:
            snap = self.refresh()
        return snap

    def _key_base(self, dataset_id: str, semantic: str) -> str:
        """The key of a bucket without the bucket's hex number (the scripts append it)."""
        return self.ctx.rkey("fp", dataset_id, semantic, "")

    # --- publish path -----------------------------------------------------------------------------
    def check_batch(
        self,
        dataset_id: str,
        publisher_id: str,
        records: Sequence[Mapping[str, Any]],
        *,
        version: int | None = None,
    ) -> list[BusError | None]:
        """One entry per record: ``None`` to accept, or the error (``recollection.detected`` /
        ``forwarding.detected``) to refuse it with. Batched: at most one Redis round trip per batch.

        ``version``: the policy version the caller has just read from Redis for this batch; then it is
        not read again, and a batch that needs no lookup (no other dataset to compare with) costs none."""
        snap = self.snapshot()
        if version is not None and version != snap.version:
            snap = self.refresh(version)
        results, seen = self._check(snap, dataset_id, publisher_id, records, version)
        if seen != snap.version:  # a policy change since the snapshot: decide on the new one
            results, _ = self._check(self.refresh(seen), dataset_id, publisher_id, records, seen)
        return results

    def _check(
        self,
        snap: Snapshot,
        dataset_id: str,
        publisher_id: str,
        records: Sequence[Mapping[str, Any]],
        version: int | None = None,
    ) -> tuple[list[BusError | None], int]:
        results: list[BusError | None] = [None] * len(records)
        for i, rec in enumerate(records):
            results[i] = self._pseudonym_error(snap, dataset_id, publisher_id, rec)
        mine = snap.datasets.get(dataset_id)
        fields = mine.fields if mine is not None else ()
        targets = snap.targets(dataset_id, publisher_id)
        wanted = frozenset().union(*(t.shared for t in targets)) if targets else frozenset()
        probes: dict[int, dict[str, fp.Digest]] = {}
        lookups: list[tuple[int, Target]] = []
        bases: dict[tuple[str, str], int] = {}
        items: list[bytes] = []
        pack = _LOOKUP_ITEM.pack
        if targets:
            for i, rec in enumerate(records):
                if results[i] is not None:
                    continue
                probe = probes[i] = fp.record_digests(self.key, rec, fields, self.buckets, wanted)
                for t in targets:
                    for sem, d in fp.anchors_of(probe, t.shared):
                        b = bases.get((t.source.id, sem))
                        if b is None:
                            b = bases[(t.source.id, sem)] = len(bases) + 1
                        items.append(pack(b, d.bucket) + d.anchor)
                        lookups.append((i, t))
        hits: list[Any] = []
        if version is None or items:
            pipe = self.ctx.redis.pipeline(transaction=False)
            if version is None:
                pipe.get(version_key(self.ctx))
            if items:
                pipe.eval(
                    _LOOKUP_LUA,
                    0,
                    len(bases),
                    *(self._key_base(ds, sem) for ds, sem in bases),
                    b"".join(items),
                )
            replies = pipe.execute()
            if version is None:
                version = int(replies[0]) if replies[0] else 0
            hits = replies[-1] if items else []
        for j in range(0, len(hits), 2):  # in item order, so the first copy found is the one reported
            i, t = lookups[int(hits[j]) - 1]
            if results[i] is not None:
                continue
            entry = fp.decode_entry(hits[j + 1])
            agreement = fp.compare(probes[i], t.shared, entry)
            if agreement.is_copy:
                results[i] = _copy_error(t, entry, agreement, fields, publisher_id)
        return results, version

    def _pseudonym_error(
        self, snap: Snapshot, dataset_id: str, publisher_id: str, record: Mapping[str, Any]
    ) -> BusError | None:
        if not fp.may_carry_pseudonym(record):
            return None
        for path, pseudonym, tag in fp.find_pseudonyms(record):
            g = snap.by_tag.get(tag)
            if g is None:
                continue
            return ForwardingDetected(
                f"field {path} carries pseudonym {pseudonym}, issued only in deliveries of dataset "
                f"{g.dataset_id} to agency {g.agency_id} under grant {g.id}: data received by sharing must "
                f"not be passed on in any form (R8)",
                dataset=g.dataset_id,
                grant=g.id,
                grantee=g.agency_id,
                fields=[path.split(".")[0]],
            )
        return None

    def remember_batch(
        self,
        dataset_id: str,
        publisher_id: str,
        records: Sequence[Mapping[str, Any]],
        record_ids: Sequence[str],
    ) -> None:
        """Store fingerprints of accepted records (one script call per batch)."""
        snap = self.snapshot()
        ds = snap.datasets.get(dataset_id)
        if ds is None or ds.attribute == SharingAttribute.NONE:
            return  # nothing of a not-shared dataset is obtainable by sharing: no copy of it can break R9
        watched = snap.watched(dataset_id)
        if not watched:
            return  # no other agency's dataset carries these semantics: no copy could match (issue 11)
        fields = tuple(f for f in ds.fields if f.semantic in watched)
        bases: dict[str, int] = {}
        items: list[bytes] = []
        entries: list[bytes] = []
        pack = _REMEMBER_ITEM.pack
        for anchors, entry in fp.stored_entries(self.key, records, fields, self.buckets, record_ids):
            entries.append(entry)
            for sem, anchor, bucket in anchors:
                b = bases.get(sem)
                if b is None:
                    b = bases[sem] = len(bases) + 1
                items.append(pack(b, bucket, len(entries)) + anchor)
        if items:
            pipe = self.ctx.redis.pipeline(transaction=False)
            pipe.eval(
                _REMEMBER_LUA,
                0,
                len(bases),
                *(self._key_base(dataset_id, sem) for sem in bases),
                b"".join(items),
                *entries,
            )
            pipe.execute()

    def forget_dataset(self, dataset_id: str) -> int:
        """Drop every fingerprint of a dataset (retired); returns the number of keys removed."""
        removed = 0
        batch: list[str | bytes] = []
        for key in self.ctx.redis.scan_iter(match=self.ctx.rkey("fp", dataset_id, "*"), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += int(self.ctx.redis.unlink(*batch))
                batch.clear()
        if batch:
            removed += int(self.ctx.redis.unlink(*batch))
        return removed


def _copy_error(
    t: Target, entry: fp.Entry, agreement: fp.Agreement, fields: Sequence[Field], publisher_id: str
) -> BusError:
    names = [f.name for f in fields if f.semantic in agreement.agree]
    src = t.source
    common: dict[str, Any] = {
        "dataset": src.id,
        "owner": src.owner,
        "matched_record_id": entry.record_id,
        "fields": names,
    }
    if t.grant is not None:
        return ForwardingDetected(
            f"the record repeats record {entry.record_id} of dataset {src.id} (owner {src.owner}) on "
            f"{', '.join(names)}; agency {publisher_id} received that data under grant {t.grant.id} "
            f"(scenario {t.grant.scenario_code}) and must not pass it on in any form (R8)",
            grant=t.grant.id,
            **common,
        )
    return RecollectionDetected(
        f"the record repeats record {entry.record_id} of dataset {src.id} (owner {src.owner}) on "
        f"{', '.join(names)}; that data is obtainable by sharing: request a grant on {src.id} instead of "
        f"collecting it again (R9)",
        **common,
    )
