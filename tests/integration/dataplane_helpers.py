"""Helpers of the data-plane tests: grants straight through the service, SDK clients on the test bus."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import httpx

from bus.client import Delivery, Publisher, Subscriber
from bus.context import BusContext
from bus.gateway.auth import Principal
from bus.grants import service
from bus.grants.service import GrantRequestIn
from bus.store.models import SchemaVersion
from tests.helpers import licence_schema

ALL_FIELDS = [f["name"] for f in licence_schema()["fields"]]


def agency(agency_id: str) -> Principal:
    return Principal(agency_id, frozenset({"agency"}))


def grant(
    ctx: BusContext,
    agency_id: str,
    dataset: str,
    fields: list[str] | None = None,
    *,
    scenario: str = "licence-check",
    unmasked: tuple[str, ...] = (),
    valid_until: datetime | None = None,
) -> dict[str, Any]:
    return service.request_grant(
        ctx,
        agency(agency_id),
        GrantRequestIn(
            dataset=dataset,
            fields=fields or ALL_FIELDS,
            scenario_code=scenario,
            scenario_description="verify business licences during inspections",
            legal_basis="Administrative Licensing Law art. 61",
            unmasked_fields=unmasked,
            valid_until=valid_until or datetime.now(UTC) + timedelta(days=1),
        ),
    )


class Exchange(NamedTuple):
    """``market`` owns a licence dataset ``ds``; ``psb`` holds a grant on it."""

    market: str
    market_key: str
    psb: str
    psb_key: str
    ds: str
    grant: dict[str, Any]


def market_and_psb(
    ctx: BusContext, agency_factory: Any, dataset_factory: Any, fields: list[str] | None = None
) -> Exchange:
    """Agencies ``market`` and ``psb``, market's licence dataset, psb's grant of ``fields`` (all) on it."""
    market, market_key = agency_factory("market")
    psb, psb_key = agency_factory("psb")
    ds = dataset_factory(market)
    return Exchange(market, market_key, psb, psb_key, ds, grant(ctx, psb, ds, fields))


def publisher(ctx: BusContext, agency_id: str, key: str, dataset: str) -> Publisher:
    with ctx.store.session() as s:
        sv = s.get(SchemaVersion, (dataset, 1))
        assert sv is not None
        schema = sv.schema
    return Publisher(
        ctx.bootstrap,
        agency_id,
        key,
        dataset,
        schema,
        1,
        topic_prefix=ctx.topics.prefix,
        max_record_bytes=ctx.settings.max_record_bytes,
    )


def subscriber(ctx: BusContext, agency_id: str, key: str, grant_id: str) -> Subscriber:
    view = service.grant_schema(ctx, agency(agency_id), grant_id)["schema"]
    from bus.grants.keys import grantee_keys

    def keys() -> dict[str, bytes]:  # what GET /v1/grants/{id}/keys hands the grantee (test_sealed_records)
        return {k.kid: k.key for k in grantee_keys(ctx, grant_id)}

    prefix = ctx.topics.prefix
    return Subscriber(ctx.bootstrap, agency_id, key, grant_id, view, topic_prefix=prefix, keys=keys)


def receive(sub: Subscriber, n: int, timeout: float = 15.0) -> list[Delivery]:
    """Poll until ``n`` deliveries arrived (fails with what it got when the deadline passes)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(sub.poll(1000, 0.2))
    assert len(got) >= n, f"expected {n} deliveries, got {len(got)} within {timeout}s"
    return got


def api(stack: Any, key: str) -> httpx.Client:
    """An HTTP client of the test stack's gateway with ``key``."""
    return httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def grant_body(dataset: str, fields: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dataset": dataset,
        "fields": fields or ALL_FIELDS,
        "scenario": {"code": "licence-check", "description": "verify licences on inspection"},
        "legal_basis": "Administrative Licensing Law art. 61",
    }
    body.update(extra)
    return body


def raw_ingress(
    ctx: BusContext,
    dataset: str,
    value: bytes,
    *,
    publisher: str,
    signing_key: str,
    record_id: str | None = None,
    version: str = "1",
    key: bytes | None = None,
    meta: bytes | None = None,
) -> str:
    """Produce one record to ``ingress.<dataset>`` by hand, sealed as ``publisher`` with ``signing_key``'s
    ingress key (a forger passes another agency's key). ``version`` may be anything (a poison header);
    ``meta`` replaces the ``bus-meta`` header as produced (None: the well-formed one)."""
    from bus.exchange import keyring
    from bus.exchange.envelope import META_HEADER, Meta, Sealer
    from bus.exchange.kafka import new_producer
    from bus.exchange.record_ids import new_record_id
    from bus.keys import signing_secret_for
    from bus.vocab import TopicKind

    rid = record_id or new_record_id()
    sealer = Sealer(keyring.INGRESS_KID, keyring.ingress_key(signing_secret_for(signing_key)))
    if meta is None:
        number = int(version) if version.isdigit() and 0 < int(version) < 2**31 else 1
        meta = Meta(rid, publisher, dataset, number, kid=sealer.kid).pack()
    sealed = sealer.seal(TopicKind.INGRESS, dataset, meta, key, value)
    producer = new_producer(ctx.bootstrap, **{"message.max.bytes": 5_000_000})
    producer.produce(ctx.topics.ingress(dataset), sealed, key, headers=[(META_HEADER, meta)])
    assert producer.flush(10) == 0
    return rid


def read_topic(ctx: BusContext, topic: str, n: int, timeout: float = 30.0) -> list[Any]:
    """Raw messages of ``topic`` from the beginning until ``n`` arrived (or the deadline; then what came)."""
    import uuid

    from bus.exchange.kafka import assign_from_committed, new_consumer

    consumer = new_consumer(ctx.bootstrap, f"raw-{uuid.uuid4().hex}")
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            if not consumer.assignment():
                assign_from_committed(consumer, [topic])
            got.extend(m for m in consumer.consume(1000, 0.1) if m.error() is None)
    finally:
        consumer.close()
    return got


def headers_of(msg: Any) -> dict[str, str]:
    """A consumed bus message's headers by the contract's names (the compact ``bus-meta`` unpacked)."""
    from bus.exchange.envelope import META_HEADER, EnvelopeError, Meta

    out = {k: (v or b"").decode("utf-8", "replace") for k, v in (msg.headers() or ()) if k != META_HEADER}
    raw = dict(msg.headers() or ()).get(META_HEADER)
    if raw:
        with contextlib.suppress(EnvelopeError):  # a poison record's header, sent back as it came
            out.update(Meta.unpack(raw).contract_headers())
    return out


def opened(ctx: BusContext, grant_id: str, msgs: list[Any]) -> list[Any]:
    """The records of ``msgs`` (from ``deliver.<grant>``) opened with the grant's keys (``Opened``)."""
    from bus.exchange.delivered import open_delivered
    from bus.grants.keys import GrantKeys

    out, _ = open_delivered(GrantKeys(ctx), grant_id, msgs)
    return out


def open_as_publisher(signing_key: str, dataset: str, msg: Any) -> bytes:
    """The value of a record on ``ingress.*`` or ``rejected.*`` as its publisher opens it (its own key)."""
    from bus.exchange import keyring
    from bus.exchange.envelope import META_HEADER, Meta, Sealer
    from bus.keys import signing_secret_for
    from bus.vocab import TopicKind

    sealer = Sealer(keyring.INGRESS_KID, keyring.ingress_key(signing_secret_for(signing_key)))
    raw = dict(msg.headers() or ()).get(META_HEADER) or b""
    Meta.unpack(raw)
    return sealer.open(TopicKind.INGRESS, dataset, raw, msg.value())[1]
