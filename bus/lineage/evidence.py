"""The compact layout of delivery evidence: one row per (batch, grant, partition), pure code, no I/O.

A data-plane batch delivers hundreds of records per grant; storing one row per record and grant cost
~10 µs each (42% of the router's CPU). A ``DeliveryBatch`` holds what those rows held, exactly:

- the columns every record of the group shares (grant, dataset, agency, scenario, partition) once;
- ``record_ids``: the ids in delivery order, packed to 16 bytes each (ids are 32 hex characters,
  ``bus.exchange.record_ids``); any other id text falls back to a JSON list (format byte first);
- per-record offsets, sizes, times and trace ids as little-endian integer arrays of the narrowest
  width, each ``None`` when it follows from the shared columns: offsets consecutive from
  ``first_offset`` (one producer, one partition, produce order), one size (``size / records``), one
  time (``delivered_at``, the router stamps a batch once), one trace (``trace_id``);
  non-consecutive offsets are delta-encoded.

``expand`` gives back the per-record values in ``recorder.COLUMNS["deliveries"]`` order, so queries,
digests and old per-record evidence all speak the same rows. ``batch_line`` is what a batch's
audit digest covers (every column and every byte of the arrays).
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_PACKED = b"\x01"  # record ids: 16 bytes each
_TEXT = b"\x00"  # record ids: a JSON list of strings
_DELTAS = b"D"  # offsets: differences from the previous one (the first from first_offset)
_RAW = b"R"  # offsets: values, -1 for an unknown position
_BIG = sys.byteorder == "big"
_WIDTHS = ((b"b", 1 << 7), (b"h", 1 << 15), (b"i", 1 << 31), (b"q", 1 << 63))

# Per-record values, in recorder.COLUMNS["deliveries"] order:
# (record_id, grant_id, dataset_id, agency_id, scenario_code, delivered_at, partition, offset, size, trace_id)
DeliveryValues = tuple[str, str, str, str, str, datetime, int | None, int | None, int, str | None]


def micros(value: datetime) -> int:
    return (value - EPOCH) // _MICRO


def _from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def pack_ints(values: Sequence[int]) -> bytes:
    """Little-endian integers of the narrowest width holding all of them, after a one-byte type code."""
    lo, hi = min(values, default=0), max(values, default=0)
    for code, limit in _WIDTHS:
        if -limit <= lo and hi < limit:
            out = array(code.decode(), values)
            if _BIG:
                out.byteswap()
            return code + out.tobytes()
    raise ValueError("integer out of the 64-bit range")


def unpack_ints(blob: bytes) -> list[int]:
    out = array(blob[:1].decode())
    out.frombytes(blob[1:])
    if _BIG:
        out.byteswap()
    return out.tolist()


def pack_ids(ids: Sequence[str]) -> bytes:
    """16 bytes per id when every id is 32 lowercase hex characters, else a JSON list."""
    joined = "".join(ids)
    if len(joined) == 32 * len(ids) and set(map(len, ids)) <= {32}:
        try:
            raw = bytes.fromhex(joined)
        except ValueError:
            raw = b""
        if len(raw) == 16 * len(ids) and raw.hex() == joined:
            return _PACKED + raw
    return _TEXT + json.dumps(list(ids), separators=(",", ":")).encode()


def unpack_ids(blob: bytes) -> list[str]:
    if blob[:1] == _PACKED:
        text = blob[1:].hex()
        return [text[i : i + 32] for i in range(0, len(text), 32)]
    ids: list[str] = json.loads(blob[1:].decode())
    return ids


def _key(raw: bytes) -> int:
    value: int = struct.unpack("<q", raw)[0]
    return value


def id_key(record_id: str) -> int:
    """The 64-bit lookup key of a record id (``lineage_delivery_keys``): its first 8 bytes, or a hash.

    Keys only narrow a lookup to the calls that may hold the id; the id itself is then matched in the
    batch, so two ids sharing a key (same generator, same millisecond) cost a look, never a wrong answer.
    """
    raw = pack_ids([record_id])
    if raw[:1] == _PACKED:
        return _key(raw[1:9])
    return _key(hashlib.sha256(record_id.encode()).digest()[:8])


def id_keys(packed: bytes) -> set[int]:
    """The distinct lookup keys of the ids in a ``record_ids`` blob."""
    if packed[:1] == _PACKED:
        words = array("q")
        words.frombytes(packed[1:])
        if _BIG:
            words.byteswap()
        return set(words[::2])
    return {id_key(r) for r in unpack_ids(packed)}


@dataclass
class DeliveryBatch:
    """The stored columns of one batch row (``bus.store.models.DeliveryLineage``)."""

    grant_id: str
    dataset_id: str
    agency_id: str
    scenario_code: str
    partition: int | None
    delivered_at: datetime
    last_at: datetime
    first_offset: int | None
    last_offset: int | None
    records: int
    size: int
    trace_id: str | None
    record_ids: bytes
    offsets: bytes | None
    sizes: bytes | None
    times: bytes | None
    traces: bytes | None


def _offsets(values: Sequence[int | None]) -> tuple[int | None, int | None, bytes | None]:
    """(first, last, blob): ``blob`` is ``None`` when the offsets run consecutively from ``first``."""
    first, last = values[0], values[-1]
    if (  # the cheap test first
        first is not None
        and last is not None
        and last - first == len(values) - 1
        and list(values) == list(range(first, last + 1))
    ):
        return first, last, None
    if None in values:
        known = [v for v in values if v is not None]
        if not known:
            return None, None, None
        return known[0], known[-1], _RAW + pack_ints([-1 if v is None else v for v in values])
    present: Sequence[int] = values  # type: ignore[assignment]  # no None in it
    deltas = [0, *map(int.__sub__, present[1:], present[:-1])]
    return present[0], present[-1], _DELTAS + pack_ints(deltas)


def _traces(values: Sequence[str | None]) -> tuple[str | None, bytes | None]:
    distinct = list(dict.fromkeys(values))
    if len(distinct) == 1:
        return distinct[0], None
    index = {t: i for i, t in enumerate(distinct)}
    table = json.dumps(distinct, separators=(",", ":")).encode()
    return None, struct.pack("<I", len(table)) + table + pack_ints(list(map(index.__getitem__, values)))


def encode(rows: Sequence[DeliveryValues]) -> DeliveryBatch:
    """One batch from the per-record values of one (grant, partition) group, in delivery order.

    The shared columns are taken from the first row: callers group by every one of them.
    """
    first = rows[0]
    ids, _, _, _, _, times, _, offsets, sizes, traces = zip(*rows, strict=True)
    # a router batch is stamped once: one object, found by identity (count) before comparing datetimes
    t0 = t1 = times[0]
    if times.count(t0) != len(times):
        t0, t1 = min(times), max(times)
    first_offset, last_offset, offset_blob = _offsets(offsets)
    trace_id, trace_blob = _traces(traces)
    spread: bytes | None = None
    if t0 != t1:
        base = micros(t0)
        spread = pack_ints([micros(t) - base for t in times])
    return DeliveryBatch(
        grant_id=first[1],
        dataset_id=first[2],
        agency_id=first[3],
        scenario_code=first[4],
        partition=first[6],
        delivered_at=t0,
        last_at=t1,
        first_offset=first_offset,
        last_offset=last_offset,
        records=len(rows),
        size=sum(sizes),
        trace_id=trace_id,
        record_ids=pack_ids(ids),
        offsets=offset_blob,
        sizes=None if min(sizes) == max(sizes) else pack_ints(sizes),
        times=spread,
        traces=trace_blob,
    )


def _offset_values(b: DeliveryBatch, n: int) -> list[int | None]:
    if b.offsets is None:
        return [None] * n if b.first_offset is None else list(range(b.first_offset, b.first_offset + n))
    values = unpack_ints(b.offsets[1:])
    if b.offsets[:1] == _DELTAS:
        values[0] = b.first_offset or 0  # the first delta is 0: the run starts at first_offset
        return list(accumulate(values))
    return [None if v < 0 else v for v in values]


def _trace_values(b: DeliveryBatch, n: int) -> list[str | None]:
    if b.traces is None:
        return [b.trace_id] * n
    (length,) = struct.unpack("<I", b.traces[:4])
    table: list[str | None] = json.loads(b.traces[4 : 4 + length].decode())
    return [table[i] for i in unpack_ints(b.traces[4 + length :])]


def expand(b: DeliveryBatch) -> list[DeliveryValues]:
    """The per-record values of a batch, in delivery order (exactly what ``encode`` was given)."""
    ids = unpack_ids(b.record_ids)
    n = len(ids)
    if b.times is None:
        times = [b.delivered_at] * n
    else:
        base = micros(b.delivered_at)
        times = [_from_micros(base + d) for d in unpack_ints(b.times)]
    sizes = [b.size // n if n else 0] * n if b.sizes is None else unpack_ints(b.sizes)
    offsets = _offset_values(b, n)
    traces = _trace_values(b, n)
    g, d, a, s, p = b.grant_id, b.dataset_id, b.agency_id, b.scenario_code, b.partition
    return [
        (rid, g, d, a, s, at, p, off, size, tr)
        for rid, at, off, size, tr in zip(ids, times, offsets, sizes, traces, strict=True)
    ]


def positions_of(b: DeliveryBatch, record_id: str) -> list[int]:
    """Indexes of ``record_id`` in the batch (a replayed record may appear twice), without expanding it."""
    if b.record_ids[:1] != _PACKED:
        return [i for i, r in enumerate(unpack_ids(b.record_ids)) if r == record_id]
    needle = pack_ids([record_id])
    if needle[:1] != _PACKED:
        return []
    raw, want = b.record_ids, needle[1:]
    out, at = [], raw.find(want, 1)
    while at >= 0:
        if (at - 1) % 16 == 0:
            out.append((at - 1) // 16)
        at = raw.find(want, at + 1)
    return out


def batch_line(b: DeliveryBatch) -> str:
    """What a batch-layout digest covers: every column, and every byte of the arrays (length-prefixed)."""
    h = hashlib.sha256()
    for blob in (b.record_ids, b.offsets, b.sizes, b.times, b.traces):
        data = b"" if blob is None else blob
        h.update(struct.pack("<q", -1 if blob is None else len(data)))
        h.update(data)
    head = (
        b.grant_id,
        b.dataset_id,
        b.agency_id,
        b.scenario_code,
        b.partition,
        micros(b.delivered_at),
        micros(b.last_at),
        b.first_offset,
        b.last_offset,
        b.records,
        b.size,
        b.trace_id,
    )
    return f"{head!r}:{h.hexdigest()}"
