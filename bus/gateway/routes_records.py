"""``POST /v1/datasets/{id}/records``: HTTP publishing (R1, R9, R13, R14) for systems without Kafka.

The gateway is the validator for these records: it authenticates the owner by API key, checks the
dataset is approved and nothing is suspended, encodes every record strictly against the current
schema, refuses oversized ones and copies of other agencies' data, assigns ``bus-record-id`` and
produces the accepted ones to ``data.<dataset>``. The answer is per record; a retried request with the
same ``Idempotency-Key`` gets the first answer back instead of publishing twice.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from confluent_kafka import KafkaError, Message, Producer
from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from bus.context import BusContext
from bus.errors import (
    BusError,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    RecordInvalid,
    RequestInvalid,
    Suspended,
    Unavailable,
)
from bus.exchange import broker_identity
from bus.exchange.ledger import PublishBatch
from bus.exchange.policy_cache import parsed_schema
from bus.exchange.publishing import admission, encode, field_names, too_large
from bus.exchange.record_ids import new_record_id
from bus.gateway.auth import Principal, publishing_principal, suspended_refusal
from bus.gateway.plane import Plane, plane_of
from bus.lineage import tracing
from bus.lineage.recorder import position_callback
from bus.vocab import Header as H

router = APIRouter(tags=["publish"])

MAX_RECORDS = 10_000
IDEMPOTENCY_TTL = 24 * 3600
VIOLATIONS = frozenset({"recollection.detected", "forwarding.detected", "suspended"})


class RecordsIn(BaseModel):
    """A batch of JSON records of the dataset's current schema."""

    # the OpenAPI description of the body; requests are parsed by ``records_of`` (orjson, once)

    model_config = ConfigDict(extra="forbid")
    records: Annotated[
        list[Any], Field(max_length=MAX_RECORDS, description="JSON records of the dataset schema")
    ]


class _Acks:
    """The broker acknowledgements of one request's records (one object per request).

    The gateway's producer is shared by every request: ``flush()`` would wait for all of them (under
    steady concurrent publishing it may never come back within its timeout, answering ``unavailable``
    for records that were acknowledged). A request waits only for its own records instead."""

    def __init__(self) -> None:
        self.failed = 0
        self.error: str | None = None
        self.expected = 0
        self._done = 0
        self._lock = threading.Lock()
        self._all = threading.Event()
        self._all.set()

    def track(self, row: dict[str, Any]) -> Callable[[KafkaError | None, Message], None]:
        """The delivery callback of one record: fills its lineage row's partition and offset."""
        with self._lock:
            self.expected += 1
            self._all.clear()
        return position_callback(row, self)

    def __call__(self, err: KafkaError | None, _msg: Message) -> None:
        with self._lock:
            if err is not None:
                self.failed += 1
                self.error = str(err)
            self._done += 1
            if self._done >= self.expected:
                self._all.set()

    def wait(self, producer: Producer, timeout: float) -> bool:
        """Serve delivery reports (anyone's: each callback updates its own request) until this request's
        records are all acknowledged or failed; False when the deadline passed first."""
        deadline = time.monotonic() + timeout
        while not self._all.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            producer.poll(min(0.005, left))
        return True


def publish_records(
    plane: Plane,
    publisher: str,
    dataset_id: str,
    records: list[Any],
    traceparent: str | None = None,
    *,
    suspended: bool = False,
) -> dict[str, Any]:
    """Validate and publish one request's records; the per-record answer of the endpoint.

    ``suspended``: the store said the publisher is suspended when it authenticated; refused even when the
    policy snapshot has not caught up yet (R15, fail closed)."""
    ctx = plane.ctx
    snap = plane.cache.fresh()
    refusal = admission(snap, dataset_id, publisher)
    if suspended and (refusal is None or refusal.code == Suspended.code):  # the owner itself is suspended
        refusal = suspended_refusal(ctx, publisher)
    if refusal is not None:
        if refusal.code in VIOLATIONS:
            plane.ledger.violations(
                [
                    {
                        "code": refusal.code,
                        "agency_id": publisher,
                        "dataset_id": dataset_id,
                        "grant_id": None,
                        "record_ids": [],
                        "trace_ids": [],
                        "detail": refusal.detail,
                        "count": len(records),
                    }
                ]
            )
        raise refusal
    ds = snap.datasets[dataset_id]
    version = ds.schema_version
    parsed = parsed_schema(dataset_id, version, ds.schema)
    names = field_names(parsed)
    limit = ctx.settings.max_record_bytes
    now = datetime.now(UTC)
    rejected: list[dict[str, Any]] = []
    valid: list[tuple[int, dict[str, Any], bytes]] = []
    for i, rec in enumerate(records):
        try:
            value = encode(rec, parsed, names)
            if len(value) > limit:
                raise too_large(len(value), limit)
        except BusError as err:
            rejected.append({"index": i, "code": err.code, "detail": err.detail})
            continue
        valid.append((i, rec, value))
    batch = PublishBatch(via="http")
    trace_id = tracing.current_trace_id() or (
        traceparent[3:35] if traceparent and len(traceparent) >= 35 else None
    )
    verdicts = (
        plane.guard.check_batch(dataset_id, publisher, [r for _, r, _ in valid], version=snap.version)
        if valid
        else []
    )
    accepted: list[tuple[int, dict[str, Any], bytes, str]] = []
    for (i, rec, value), verdict in zip(valid, verdicts, strict=True):
        rid = new_record_id()
        if verdict is not None:
            rejected.append({"index": i, "code": verdict.code, "detail": verdict.detail})
            batch.add(_lineage(rid, dataset_id, publisher, now, trace_id, verdict.code, version, len(value)))
            if verdict.code in VIOLATIONS:
                batch.violations.append(
                    {
                        "code": verdict.code,
                        "agency_id": publisher,
                        "dataset_id": dataset_id,
                        "grant_id": verdict.extra.get("grant"),  # forwarding: the grant the data came under
                        "record_ids": [rid],
                        "trace_ids": [trace_id] if trace_id else [],
                        "detail": verdict.detail,
                    }
                )
            continue
        accepted.append((i, rec, value, rid))
    topic = ctx.topics.data(dataset_id)
    base = [
        (H.PUBLISHER, publisher.encode()),
        (H.DATASET, dataset_id.encode()),
        (H.SCHEMA_VERSION, str(version).encode()),
        (H.PUBLISHED_AT, str(int(now.timestamp() * 1000)).encode()),
    ]
    acks = _Acks()
    producer = ctx.producer
    with tracing.send_span(topic, len(accepted)) as send:  # child of the HTTP request's span
        base += send.headers
        trace_id = send.trace_id
        rows = []  # lineage of the accepted records; each delivery callback fills partition and offset
        for _, _, value, rid in accepted:
            row = _lineage(rid, dataset_id, publisher, now, trace_id, "accepted", version, len(value))
            rows.append(row)
            headers = [(H.RECORD_ID, rid.encode()), *base]
            delivered = acks.track(row)
            while True:
                try:
                    producer.produce(topic, value, None, headers=headers, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
        # every callback of this request has run once ``wait`` returns True, whichever thread served it:
        # the rows hold their positions from here on
        unconfirmed = bool(accepted) and (not acks.wait(producer, 30) or bool(acks.failed))
    if unconfirmed:
        raise Unavailable(
            f"the broker did not acknowledge {acks.failed or 'some'} record(s) ({acks.error}); "
            "nothing of this request is confirmed, retry it with the same Idempotency-Key"
        )
    batch.lineage.extend(rows)  # written only now: acknowledged, each row naming its place in the topic
    if accepted:
        plane.guard.remember_batch(
            dataset_id, publisher, [r for _, r, _, _ in accepted], [a[3] for a in accepted]
        )
    # records refused by the schema or the size limit are lineage too (data quality, R2)
    for r in rejected:
        if r["code"] in (RecordInvalid.code, "record.too_large"):
            batch.add(_lineage(new_record_id(), dataset_id, publisher, now, trace_id, r["code"], version, 0))
    plane.ledger.published(batch)
    rejected.sort(key=lambda r: r["index"])
    return {"accepted": len(accepted), "record_ids": [a[3] for a in accepted], "rejected": rejected}


def _lineage(
    rid: str,
    dataset_id: str,
    publisher: str,
    now: datetime,
    trace_id: str | None,
    outcome: str,
    version: int,
    size: int,
) -> dict[str, Any]:
    return {
        "record_id": rid,
        "dataset_id": dataset_id,
        "publisher_id": publisher,
        "published_at": now,
        "trace_id": trace_id,
        "outcome": outcome,
        "schema_version": version,
        "size": size,
        "partition": None,
        "offset": None,
    }


# --- idempotency ------------------------------------------------------------------------------------------
def _idempotent(
    ctx: BusContext, publisher: str, dataset_id: str, key: str, records: list[Any], run: Any
) -> dict[str, Any]:
    if not key.strip() or len(key) > 255:
        raise RequestInvalid("Idempotency-Key must be 1-255 characters")
    fingerprint = hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode()).hexdigest()
    base = ctx.rkey("idempotency", publisher, dataset_id, hashlib.sha256(key.encode()).hexdigest())
    r = ctx.redis
    try:
        stored = r.get(base)
    except Exception as exc:
        raise Unavailable("Redis does not answer; Idempotency-Key cannot be honoured, retry later") from exc
    if stored is not None and not _same_broker(ctx, json.loads(stored).get("broker")):
        stored = None  # answered by a broker that lost its records since: publish again (issue 13)
    if stored is None:
        if not r.set(base + ":lock", "1", nx=True, ex=60):
            raise IdempotencyInProgress(
                "a request with this Idempotency-Key is still being processed; retry "
                "in a moment to get its answer"
            )
        try:
            broker = _broker_token(ctx)
            answer = run()
            r.set(base, json.dumps({"fingerprint": fingerprint, "answer": answer, "broker": broker}),
                  ex=IDEMPOTENCY_TTL)
            return dict(answer)
        finally:
            r.delete(base + ":lock")
    first = json.loads(stored)
    if first["fingerprint"] != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for different records; use a new key for a new request"
        )
    return {**first["answer"], "replayed": True}


def _broker_token(ctx: BusContext) -> str:
    """The broker identity an answer is bound to (``bus.exchange.broker_identity``)."""
    try:
        return broker_identity.bind_token(ctx)
    except Exception as exc:
        raise Unavailable("the broker does not answer; nothing was published, retry later") from exc


def _same_broker(ctx: BusContext, stored: str | None) -> bool:
    try:
        return broker_identity.token_still_valid(ctx, stored)
    except Exception as exc:
        raise Unavailable("the broker does not answer; cannot tell whether the first answer's records "
                          "still exist, retry later with the same Idempotency-Key") from exc


def records_of(body: bytes) -> list[Any]:
    """The ``records`` of a request body, parsed once with orjson (the shape ``RecordsIn`` documents);
    anything else is ``request.invalid`` naming the problem. Each record is checked against the dataset
    schema afterwards, one by one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestInvalid(f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestInvalid(f'the body must be {{"records": [...]}}, got {type(doc).__name__}')
    extra = sorted(set(doc) - {"records"})
    if extra:
        raise RequestInvalid(f"{', '.join(extra)}: extra inputs are not permitted; send only 'records'")
    if "records" not in doc:
        raise RequestInvalid("records: field required")
    records = doc["records"]
    if not isinstance(records, list):
        raise RequestInvalid(f"records: must be a JSON array, got {type(records).__name__}")
    if len(records) > MAX_RECORDS:
        raise RequestInvalid(f"records: at most {MAX_RECORDS} records per request, got {len(records)}")
    return records


_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": RecordsIn.model_json_schema()}},
    }
}


@router.post(
    "/v1/datasets/{dataset_id}/records",
    summary="Publish JSON records (dataset owner)",
    openapi_extra=_BODY_DOC,
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "the answer per record"}},
)
async def post_records(
    dataset_id: str,
    request: Request,
    principal: Principal = Depends(publishing_principal),  # a suspended owner is refused below, on record
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    traceparent: Annotated[str | None, Header()] = None,
) -> Response:
    """Async so the body is read and parsed once (orjson) on the event loop; the publishing itself
    (Redis, the producer's flush, the store) blocks, so it runs in the threadpool, in the request's
    trace context (``run_in_threadpool`` copies the contextvars)."""
    records = records_of(await request.body())
    plane = plane_of(request)

    def run() -> dict[str, Any]:
        return publish_records(
            plane, principal.id, dataset_id, records, traceparent, suspended=principal.suspended
        )

    if idempotency_key is None:
        answer = await run_in_threadpool(run)
    else:
        answer = await run_in_threadpool(
            _idempotent, plane.ctx, principal.id, dataset_id, idempotency_key, records, run
        )
    return Response(orjson.dumps(answer), media_type="application/json")
