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
import logging
import threading
import time
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
    RequestInvalid,
    Suspended,
    Unavailable,
)
from bus.exchange import broker_identity
from bus.exchange.emit import Evidence
from bus.exchange.ledger import PublishBatch
from bus.exchange.record_ids import new_record_id
from bus.gateway.auth import Principal, publishing_principal, suspended_refusal
from bus.gateway.plane import Plane, plane_of
from bus.lineage import tracing
from bus.lineage.subjects import record_subjects
from bus.policy.batch import BatchOutcome, Incoming, Violation, classify, process_batch
from bus.policy.records import admission, encode, field_names, parsed_schema
from bus.policy.snapshot import PolicySnapshot
from bus.vocab import Via

log = logging.getLogger(__name__)
router = APIRouter(tags=["publish"])

MAX_RECORDS = 10_000
IDEMPOTENCY_TTL = 24 * 3600


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

    def expect(self, n: int) -> None:
        """This request produced ``n`` records (reports may have come in already: they count)."""
        with self._lock:
            self.expected = n
            if self._done >= n:
                self._all.set()
            else:
                self._all.clear()

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
    """Decide and publish one request's records with the pipeline's own decision and output stage.

    The records are encoded strictly against the current schema (the JSON shape is the one thing HTTP adds),
    then ``process_batch`` decides them exactly as the Kafka pipeline does and ``Emitter`` seals and
    produces them straight to ``deliver.<grant>`` and ``data.<dataset>``: one hop to the grantee.
    ``suspended``: the store said the publisher is suspended when it authenticated; refused even when the
    policy snapshot has not caught up yet (R15, fail closed)."""
    ctx = plane.ctx
    snap = plane.cache.fresh()
    refusal = admission(snap, dataset_id, publisher)
    if suspended and (refusal is None or refusal.code == Suspended.code):  # the owner itself is suspended
        refusal = suspended_refusal(ctx, publisher)
    if refusal is not None:
        kind = classify(refusal.code)
        if kind is not None:  # the same violations as over Kafka (R15)
            plane.ledger.violations([Violation(kind, publisher, dataset_id, None, refusal.detail,
                                               count=len(records)).as_row()])
        raise refusal
    version = snap.datasets[dataset_id].schema_version
    now_ms = int(time.time() * 1000)
    trace_id = tracing.current_trace_id() or (
        traceparent[3:35] if traceparent and len(traceparent) >= 35 else None
    )
    items, rejected = _items(snap, publisher, dataset_id, records, trace_id)

    def copies(d: str, p: str, recs: Any) -> Any:
        return plane.guard.check_batch(d, p, recs, version=snap.version)

    limit = ctx.settings.max_record_bytes
    outcome = process_batch(
        snap, items, copies=copies, routes=plane.routes, limit=limit, accepted_at_ms=now_ms
    )
    acks = _Acks()
    producer = ctx.producer
    topic = ctx.topics.data(dataset_id)
    with tracing.send_span(topic, len(outcome.accepted)) as send:  # child of the HTTP request's span
        trace_headers = list(send.headers)
        evidence = plane.emitter.emit(outcome, producer, via=Via.HTTP, report=acks,
                                      trace=lambda _ref: trace_headers, trace_id=lambda _ref: send.trace_id)
        # every callback of this request has run once ``wait`` returns True, whichever thread served it:
        # the rows hold their positions from here on
        acks.expect(sum(1 + len(a.deliveries) for a in outcome.accepted))
        unconfirmed = acks.expected > 0 and (not acks.wait(producer, 30) or bool(acks.failed))
    if unconfirmed:
        raise Unavailable(
            f"the broker did not acknowledge {acks.failed or 'some'} record(s) ({acks.error}); "
            "nothing of this request is confirmed, retry it with the same Idempotency-Key"
        )
    _record(plane, outcome, evidence, publisher, dataset_id, version, now_ms, trace_id, rejected)
    rejected.sort(key=lambda r: r["index"])
    ids = [a.item.record_id for a in outcome.accepted]
    return {"accepted": len(ids), "record_ids": ids, "rejected": rejected}


def _record(plane: Plane, outcome: BatchOutcome, evidence: Evidence, publisher: str, dataset_id: str,
            version: int, now_ms: int, trace_id: str | None, rejected: list[dict[str, Any]]) -> None:
    """After the broker acknowledged: fingerprints, evidence (written in the background) and the refusals'
    answers. Nothing here may turn an acknowledged publish into an error the client would retry under new
    ids: a Redis outage only costs these records' fingerprints (logged)."""
    records = [a.record for a in outcome.accepted]
    if records:
        try:
            ids = [a.item.record_id for a in outcome.accepted]
            plane.guard.remember_batch(dataset_id, publisher, records, ids)
            record_subjects(plane.ctx, [(dataset_id, publisher, records, ids)])  # who received (R14)
        except Exception as exc:
            log.warning("HTTP publish to %s acknowledged; %d fingerprints not stored (%s)", dataset_id,
                        len(records), exc)
    for bad in rejected:  # records refused by the schema are lineage too (data quality, R2)
        evidence.published.append(
            _lineage(new_record_id(), dataset_id, publisher, now_ms, trace_id, bad["code"], version)
        )
    for refused in outcome.refused:
        rejected.append({"index": refused.ref, "code": refused.code, "detail": refused.error.detail})
    violations = [v.as_row() for v in outcome.violations()]
    plane.ledger.published(PublishBatch(via=Via.HTTP, lineage=evidence.published, violations=violations))
    plane.ledger.delivered(evidence.delivered)


def _items(
    snap: PolicySnapshot, publisher: str, dataset_id: str, records: list[Any], trace_id: str | None
) -> tuple[list[Incoming], list[dict[str, Any]]]:
    """The JSON records encoded strictly with the current schema (the one thing HTTP adds to the pipeline's
    input), and the per-record answers of those that do not fit it."""
    ds = snap.datasets[dataset_id]
    version = ds.schema_version
    parsed = parsed_schema(dataset_id, version, ds.schema)
    names = field_names(parsed)
    items: list[Incoming] = []
    rejected: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        try:
            value = encode(rec, parsed, names)
        except BusError as err:
            rejected.append({"index": i, "code": err.code, "detail": err.detail})
            continue
        items.append(Incoming(i, new_record_id(), dataset_id, publisher, version, None, value, trace_id, rec))
    return items, rejected


def _lineage(rid: str, dataset_id: str, publisher: str, now_ms: int, trace_id: str | None, outcome: str,
             version: int) -> dict[str, Any]:
    return {"record_id": rid, "dataset_id": dataset_id, "publisher_id": publisher,
            "published_at": datetime.fromtimestamp(now_ms / 1000, UTC), "trace_id": trace_id,
            "outcome": outcome, "schema_version": version, "size": 0, "partition": None, "offset": None}


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
