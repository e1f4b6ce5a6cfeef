"""Cursors that point past the end of their topic answer ``cursor.stale`` (409) instead of skipping (R14).

After the broker lost its topics (a restarted embedded broker, a rebuilt cluster) a grantee's cursor
still names offsets of the old topic: read as it is, the reader would wait at offset 5,000 of a new,
empty topic and silently skip the next 5,000 records. ``check_not_past_end`` compares each position
with the end of its partition and refuses the cursor, naming where to start again.

The end comes from ListOffsets first (one request for every partition). The embedded broker answers it
with the *base offset of the last batch* + 1, below the true end whenever that batch holds several
records, so a position past that answer is confirmed with a fetch: the fetch response carries the true
high watermark (measured: ~22 ms with a fresh consumer, and only for such positions).
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from bus.context import BusContext
from bus.errors import CursorStale
from bus.exchange.kafka import admin, consumer_config

PROBE_SECONDS = 1.0


def stale_positions(positions: dict[int, int], ends: dict[int, int]) -> dict[int, int]:
    """Pure: the positions past their partition's end (a partition that no longer exists has end 0)."""
    return {p: o for p, o in positions.items() if o > ends.get(p, 0)}


def _list_offsets(ctx: BusContext, topic: str, partitions: list[int]) -> tuple[dict[int, int], bool]:
    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions}
    out: dict[int, int] = {}
    failed = False
    for tp, fut in admin(ctx.bootstrap).list_offsets(request, request_timeout=PROBE_SECONDS).items():
        try:
            out[tp.partition] = int(fut.result(PROBE_SECONDS + 0.5).offset)
        except KafkaException:
            failed = True
    return out, failed


def _listed_ends(ctx: BusContext, topic: str, partitions: list[int]) -> dict[int, int]:
    """Ends as ListOffsets reports them; a partition the broker does not have is left out.
    Raises ``KafkaException`` when the broker does not answer (no verdict then).

    A missing topic fails ListOffsets with "No leaders found"; asking for its metadata then makes the
    embedded broker create it (empty), so the second ListOffsets answers 0 for each partition."""
    out, failed = _list_offsets(ctx, topic, partitions)
    if not failed:
        return out
    meta = admin(ctx.bootstrap).list_topics(topic, timeout=PROBE_SECONDS).topics.get(topic)
    existing = set() if meta is None or meta.error is not None else set(meta.partitions)
    wanted = [p for p in partitions if p in existing]
    if not wanted:
        return {}
    out, failed = _list_offsets(ctx, topic, wanted)
    if failed:
        raise KafkaException(f"ListOffsets failed for existing partitions of {topic}")
    return out


def _fetched_ends(ctx: BusContext, topic: str, positions: dict[int, int]) -> dict[int, int]:
    """True ends from the high watermark of a fetch at each position (a fresh, group-less consumer)."""
    consumer = Consumer(consumer_config(ctx.bootstrap, f"cursor-probe-{uuid.uuid4().hex}", ctx.settings))
    try:
        consumer.assign([TopicPartition(topic, p, o) for p, o in positions.items()])
        ends: dict[int, int] = {}
        deadline = time.monotonic() + PROBE_SECONDS
        while len(ends) < len(positions) and time.monotonic() < deadline:
            consumer.consume(100, 0.01)
            for p in positions:
                high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)[1]
                if high >= 0:
                    ends[p] = high
        return ends
    finally:
        consumer.close()


def check_not_past_end(ctx: BusContext, topic: str, positions: dict[int, int]) -> None:
    """Raise ``CursorStale`` when a position is past its partition's end, with ``start``: the cursor to
    read from instead (the stale partitions from their beginning, the others where they were)."""
    if not any(positions.values()):
        return
    try:
        listed = _listed_ends(ctx, topic, sorted(positions))
    except KafkaException:
        return  # never refuse a cursor on a guess; the read itself reports a broker that is down
    suspicious = stale_positions(positions, listed)
    if not suspicious:
        return
    known = {p: o for p, o in suspicious.items() if p in listed}
    fetched = _fetched_ends(ctx, topic, known) if known else {}
    if len(fetched) < len(known):  # no answer for some: never refuse a cursor on a guess
        return
    stale = stale_positions(suspicious, fetched)
    if not stale:
        return
    from bus.gateway.routes_subscribe import encode_cursor

    start = {p: (0 if p in stale else o) for p, o in positions.items()}
    raise CursorStale(
        f"the cursor points past the end of {topic} (partition:offset "
        + ", ".join(f"{p}:{o} > end {fetched.get(p, 0)}" for p, o in sorted(stale.items()))
        + "): the broker lost records since it was handed out. Read again from 'start' "
        "(the records acknowledged meanwhile are listed by `databus lineage undelivered`)",
        start=encode_cursor(start),
        stale={str(p): o for p, o in stale.items()},
    )
