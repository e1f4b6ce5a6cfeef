"""Reading a grant over HTTP (R8, R14): ``GET /v1/grants/{id}/records`` with a cursor, and SSE ``/stream``.

Only the grantee reads a grant (``auth.forbidden``, recorded as a violation), only while it is active
(``grant.not_active``) and nothing involved is suspended (``suspended``). The cursor is opaque: it
holds the next offset of every partition of ``deliver.<grant>``. An open stream re-checks the grant
whenever the policy version moves (one Redis GET per poll, at least every half second), so revocation
or suspension ends it within a second with an ``error`` event.

Page requests reuse readers: the gateway keeps the reader that answered a page (``plane.ReaderPool``)
for the request that continues from its ``next`` cursor, so following a cursor costs no new consumer,
connection or metadata round trip. The grant is still checked on every request first.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from bus.errors import AuthForbidden, BusError, RequestInvalid
from bus.exchange import policy_events
from bus.exchange.delivered import open_delivered
from bus.exchange.kafka import consumer_config, partitions_of, position_of
from bus.gateway.auth import Principal, current_principal
from bus.gateway.cursors import check_not_past_end
from bus.gateway.plane import Plane, plane_of
from bus.grants import service
from bus.grants.service import Readable
from bus.policy.projection import strip_logical_types

router = APIRouter(tags=["subscribe"])

POLL_SECONDS = 0.3
KEEPALIVE_SECONDS = 15.0


# --- cursor ----------------------------------------------------------------------------------------------
def encode_cursor(positions: dict[int, int]) -> str:
    raw = ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


MAX_CURSOR_CHARS = 4000
MAX_PARTITION = 2**31 - 1  # Kafka partition ids are int32
MAX_OFFSET = 2**63 - 1  # Kafka offsets are int64


def decode_cursor(cursor: str | None) -> dict[int, int]:
    """The positions of a cursor this gateway returned; anything else is ``request.invalid`` (R14).

    Garbage, negative or out-of-range partitions and offsets are refused instead of being read as
    "from the start" or reaching librdkafka (which answered 500 for a 22-digit offset)."""
    if not cursor:
        return {}
    refused = RequestInvalid("the cursor is not one this gateway returned; start without 'after'")
    if len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise refused
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
        if not raw.isascii():  # int() also reads other scripts' digits
            raise refused
        pairs = [part.split(":") for part in raw.split(",")]
        positions = {int(p): int(o) for p, o in pairs}
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise refused from None
    if any(
        not 0 <= p <= MAX_PARTITION or not 0 <= o <= MAX_OFFSET for p, o in positions.items()
    ) or not all(p.isdigit() and o.isdigit() for p, o in pairs):
        raise refused
    return positions


# --- reading ---------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


PARTITION_RECHECK_SECONDS = 5.0  # a long-lived reader looks for new partitions of its topic this often


class GrantReader:
    """A consumer of one grant's delivery topic positioned at a cursor (no group membership, no commits).

    Used by one request at a time (the pool hands it out exclusively), but the SSE stream may close it
    from another thread while a read runs in a worker thread: ``read`` and ``close`` take one lock, so
    the consumer is never closed under a concurrent poll (librdkafka crashes the process then), and a
    read after ``close`` returns nothing.
    """

    def __init__(self, plane: Plane, grant: Readable, cursor: dict[int, int]) -> None:
        self.plane = plane
        self.grant = grant
        self.topic = plane.ctx.topics.deliver(grant.grant_id)
        self.positions = dict(cursor)
        self.schema = fastavro.parse_schema(strip_logical_types(grant.view_schema), named_schemas={})
        self.consumer = Consumer(
            consumer_config(plane.ctx.bootstrap, f"http-{uuid.uuid4().hex}", plane.ctx.settings)
        )
        self._assigned: set[int] = set()
        self._checked_at = 0.0  # time.monotonic() of the last partition lookup
        self._lock = threading.Lock()
        self.closed = False

    def _assign(self) -> None:
        self._checked_at = time.monotonic()
        parts = [p for p in partitions_of(self.consumer, self.topic, timeout=2) if p not in self._assigned]
        if parts:
            self.consumer.incremental_assign(
                [TopicPartition(self.topic, p, self.positions.get(p, OFFSET_BEGINNING)) for p in parts]
            )
            self._assigned.update(parts)

    def read(self, limit: int, timeout: float) -> list[dict[str, Any]]:
        with self._lock:
            if self.closed:
                return []
            if not self._assigned or time.monotonic() - self._checked_at >= PARTITION_RECHECK_SECONDS:
                self._assign()
                if not self._assigned:
                    return []
            return self._read(limit, timeout)

    def _read(self, limit: int, timeout: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < limit:
            msgs = self.consumer.consume(min(limit - len(out), 1000), timeout if not out else 0.02)
            if not msgs:
                break
            for m in msgs:
                if m.error() is None:
                    _, partition, offset = position_of(m)
                    self.positions[partition] = offset + 1  # past dropped records too
            opened, dropped = open_delivered(self.plane.emitter.keys, self.grant.grant_id, msgs)
            if dropped is not None:
                self.plane.ledger.violations([dropped.violation(None, self.grant.dataset_id)])
            for o in opened:
                value = fastavro.schemaless_reader(io.BytesIO(o.value), self.schema)
                out.append(
                    {
                        "record_id": o.meta.record_id,
                        "partition": o.partition,
                        "offset": o.offset,
                        "scenario": o.meta.scenario,
                        "headers": o.headers,
                        "value": _jsonable(value),
                        "size": len(o.value),
                    }
                )
        return out

    def cursor(self) -> str:
        return encode_cursor(self.positions)

    def record_consumed(self, records: list[dict[str, Any]], via: str) -> None:
        now = datetime.now(UTC)
        g = self.grant
        self.plane.ledger.consumed(
            [
                {
                    "record_id": r["record_id"] or "",
                    "grant_id": g.grant_id,
                    "agency_id": g.agency_id,
                    "dataset_id": g.dataset_id,
                    "via": via,
                    "consumed_at": now,
                    "size": r["size"],
                }
                for r in records
            ]
        )

    def close(self) -> None:
        """Close the consumer once; waits for a read in progress in another thread to return."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self.consumer.close()


def readable(plane: Plane, principal: Principal, grant_id: str) -> Readable:
    """The grant, if the caller may read it now; a refused reader is a violation (R8, R15)."""
    try:
        return service.readable(plane.ctx, principal, grant_id)
    except AuthForbidden as err:
        plane.ledger.violations(
            [
                {
                    "code": err.code,
                    "agency_id": principal.id,
                    "dataset_id": None,
                    "grant_id": grant_id,
                    "record_ids": [],
                    "trace_ids": [],
                    "detail": err.detail,
                }
            ]
        )
        raise


@router.get("/v1/grants/{grant_id}/records", summary="Delivered records after a cursor (grantee)")
def get_records(
    grant_id: str,
    request: Request,
    principal: Principal = Depends(current_principal),
    after: str | None = Query(None, max_length=4000, description="the 'next' cursor of the last answer"),
    limit: int = Query(100, ge=0, le=5000),
    wait: float = Query(0.5, ge=0, le=10, description="seconds to wait for the first record"),
) -> dict[str, Any]:
    plane = plane_of(request)
    try:
        grant = readable(plane, principal, grant_id)
    except BusError as err:
        if err.code != AuthForbidden.code:  # revoked, expired, suspended: its idle readers go now
            plane.readers.drop_grant(grant_id)
        raise
    cursor = decode_cursor(after)
    check_not_past_end(plane.ctx, plane.ctx.topics.deliver(grant_id), cursor)  # cursor.stale (409)
    if limit == 0:
        return {"grant": grant_id, "records": [], "next": after or encode_cursor(cursor)}
    pool = plane.readers
    reader = pool.take(grant, encode_cursor(cursor), lambda: GrantReader(plane, grant, cursor))
    try:
        records = reader.read(limit, wait)
        next_cursor = reader.cursor()
    except BaseException:
        pool.discard(reader)  # its position may be past what the caller received
        raise
    pool.give_back(reader)
    reader.record_consumed(records, "http")
    for r in records:
        r.pop("size", None)
    return {"grant": grant_id, "scenario": grant.scenario_code, "records": records, "next": next_cursor}


def _sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


@router.get("/v1/grants/{grant_id}/stream", summary="Delivered records as server-sent events (grantee)")
async def stream(
    grant_id: str,
    request: Request,
    principal: Principal = Depends(current_principal),
    after: str | None = Query(None, max_length=4000),
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    plane = plane_of(request)
    grant = await asyncio.to_thread(readable, plane, principal, grant_id)
    cursor = decode_cursor(after or last_event_id)
    await asyncio.to_thread(check_not_past_end, plane.ctx, plane.ctx.topics.deliver(grant_id), cursor)
    reader = GrantReader(plane, grant, cursor)

    async def events() -> AsyncIterator[str]:
        version = await asyncio.to_thread(policy_events.current_version, plane.ctx)
        quiet = 0.0
        try:
            yield _sse("open", {"grant": grant_id, "scenario": grant.scenario_code})
            while not await request.is_disconnected():
                try:
                    now_version = await asyncio.to_thread(policy_events.current_version, plane.ctx)
                    if now_version != version:
                        version = now_version
                        await asyncio.to_thread(readable, plane, principal, grant_id)
                except BusError as err:
                    yield _sse("error", {"code": err.code, "detail": err.detail, "status": err.status})
                    return
                except Exception:
                    yield _sse(
                        "error",
                        {
                            "code": "unavailable",
                            "status": 503,
                            "detail": "the grant cannot be checked right now (fail closed); reconnect "
                            "with Last-Event-ID to resume",
                        },
                    )
                    return
                before = dict(reader.positions)
                records = await asyncio.to_thread(reader.read, 500, POLL_SECONDS)
                if records:
                    quiet = 0.0
                    await asyncio.to_thread(reader.record_consumed, records, "sse")
                    for r in records:
                        r.pop("size", None)
                        before[r["partition"]] = r["offset"] + 1
                        yield _sse("record", r, encode_cursor(before))
                else:
                    quiet += POLL_SECONDS
                    if quiet >= KEEPALIVE_SECONDS:
                        quiet = 0.0
                        yield ": keepalive\n\n"
        finally:
            await asyncio.to_thread(reader.close)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
