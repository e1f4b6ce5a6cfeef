"""``Subscriber``: a grantee reading what a grant delivers, over Kafka.

Reads ``deliver.<grant>``, opens each sealed record under the grant's data key (fetched from the gateway,
``GET /v1/grants/{id}/keys``, and fetched again when a record names a key id it does not hold) and decodes
it with the grant's view schema (granted fields only, masked and pseudonymised as the grant says). A
record that does not open — forged into the topic, moved from another grant, tampered — is never
returned: it is dropped and counted in ``dropped``. Positions are the consumer group's committed offsets:
``ack()`` commits them and sends one signed receipt to ``bus.receipts`` so the lineage shows what was
consumed. Delivery is at least once: use ``Delivery.record_id`` to drop a duplicate after a crash.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastavro
from confluent_kafka import Consumer, Producer, TopicPartition

from bus.client import _gateway
from bus.exchange.envelope import EnvelopeError, Meta, Sealer, meta_of
from bus.exchange.kafka import (
    assign_from_committed,
    consumer_config,
    headers_of,
    position_of,
    producer_config,
    text_headers,
)
from bus.exchange.record_ids import RecordIds
from bus.exchange.signing import Signer
from bus.exchange.topics import Topics
from bus.keys import signing_secret_for
from bus.lineage import tracing
from bus.schemas import parsed_schema, read_record
from bus.vocab import Header, TopicKind

log = logging.getLogger(__name__)

RECEIPT_SCHEMA_VERSION = "1"
KeyFetcher = Callable[[], dict[str, bytes]]  # kid -> key, as GET /v1/grants/{id}/keys answers
_REASSIGN_INTERVAL = 0.5


@dataclass(frozen=True)
class Delivery:
    record_id: str
    value: dict[str, Any]
    headers: dict[str, str]
    partition: int
    offset: int
    grant_id: str
    scenario: str
    size: int = field(default=0, compare=False)


class Subscriber:
    def __init__(
        self,
        bootstrap: str,
        agency_id: str,
        api_key: str,
        grant_id: str,
        view_schema: dict[str, Any],
        *,
        topic_prefix: str = "",
        group: str | None = None,
        keys: KeyFetcher | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.agency_id = agency_id
        self.grant_id = grant_id
        self.topics = Topics(topic_prefix)
        self.topic = self.topics.deliver(grant_id)
        self.group = group or f"{topic_prefix}sub.{grant_id}"
        self._schema = fastavro.parse_schema(view_schema, named_schemas={})
        self._signer = Signer(signing_secret_for(api_key))
        self._ids = RecordIds()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._assigned = False
        self._next_assign = 0.0
        self._unacked: list[Delivery] = []
        self._fetch_keys = keys
        self._sealers: dict[str, Sealer] = {}
        self._misses: set[str] = set()
        self.dropped = 0  # records that did not open under the grant's keys (never returned)

    @classmethod
    def from_gateway(cls, url: str, api_key: str, grant_id: str, *, group: str | None = None) -> Subscriber:
        """Check the caller may read the grant now, and fetch the broker address and the view schema.

        Raises the gateway's ``BusError`` (``auth.forbidden``, ``grant.not_active``, ``suspended``).
        """
        _gateway.call(url, api_key, f"/v1/grants/{grant_id}/records", limit=0)
        bus = _gateway.call(url, api_key, "/v1/bus")
        view = _gateway.call(url, api_key, f"/v1/grants/{grant_id}/schema")

        def keys() -> dict[str, bytes]:
            answer = _gateway.call(url, api_key, f"/v1/grants/{grant_id}/keys")
            return {k["kid"]: base64.urlsafe_b64decode(k["k"] + "=" * (-len(k["k"]) % 4)) for k in answer["keys"]}

        return cls(
            bus["bootstrap"],
            bus["agency"],
            api_key,
            grant_id,
            view["schema"],
            topic_prefix=bus.get("topic_prefix", ""),
            group=group,
            keys=keys,
        )

    def _sealer(self, kid: str) -> Sealer | None:
        sealer = self._sealers.get(kid)
        if sealer is None and self._fetch_keys is not None and kid not in self._misses:
            self._sealers = {k: Sealer(k, v) for k, v in self._fetch_keys().items()}  # a new key: refresh
            sealer = self._sealers.get(kid)
            if sealer is None:
                self._misses.add(kid)  # fetched once more at the next refresh only
        return sealer

    def _open(self, m: Any) -> tuple[Meta, bytes] | None:
        """The meta and Avro view of one delivered record, or ``None`` (dropped) if it does not open."""
        raw = meta_of(headers_of(m))
        try:
            meta = Meta.unpack(raw)
            if meta.grant != self.grant_id:
                raise EnvelopeError(f"sealed for grant {meta.grant!r}")
            sealer = self._sealer(meta.kid)
            if sealer is None:
                raise EnvelopeError(f"no key {meta.kid!r} of grant {self.grant_id} is known")
            _, value = sealer.open(TopicKind.DELIVER, self.grant_id, raw or b"", m.value())
        except EnvelopeError as exc:
            self.dropped += 1
            log.warning("grant %s: dropped a record at %s[%s]@%s that does not open: %s",
                        self.grant_id, m.topic(), m.partition(), m.offset(), exc)
            return None
        return meta, value

    def _ensure_assigned(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(consumer_config(self.bootstrap, self.group))
        if not self._assigned and time.monotonic() >= self._next_assign:
            self._next_assign = time.monotonic() + _REASSIGN_INTERVAL
            self._assigned = bool(assign_from_committed(self._consumer, [self.topic]))
        return self._consumer

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Delivery]:
        """Up to ``max_records`` deliveries, waiting at most ``timeout`` seconds for the first."""
        consumer = self._ensure_assigned()
        if not self._assigned:
            time.sleep(min(timeout, _REASSIGN_INTERVAL))  # the topic does not exist yet
            return []
        out: list[Delivery] = []
        schema = self._schema
        msgs = [m for m in consumer.consume(max_records, timeout) if m.error() is None]
        spans = tracing.consume_messages("receive", msgs, group=self.group)  # one span per trace
        if msgs:
            self._misses.clear()
        for m in msgs:
            opened = self._open(m)
            if opened is None:
                continue
            meta, raw = opened
            headers = text_headers(m)
            headers.pop(Header.META, None)
            headers.update(meta.contract_headers())
            value = read_record(raw, schema)
            _, partition, offset = position_of(m)
            out.append(
                Delivery(meta.record_id, value, headers, partition, offset, self.grant_id, meta.scenario,
                         len(raw))
            )
        spans.end()
        self._unacked.extend(out)
        return out

    def ack(self, deliveries: list[Delivery] | None = None) -> None:
        """Commit the position after ``deliveries`` (default: everything polled) and send a receipt.

        Per partition the position moves past the highest acknowledged offset.
        """
        items = self._unacked if deliveries is None else deliveries
        if not items:
            return
        consumer = self._ensure_assigned()
        upto: dict[int, int] = {}
        for d in items:
            upto[d.partition] = max(upto.get(d.partition, -1), d.offset)
        consumer.commit(
            offsets=[TopicPartition(self.topic, p, o + 1) for p, o in upto.items()], asynchronous=False
        )
        self._send_receipt(items)
        if deliveries is None:
            self._unacked = []
        else:
            acked = {(d.partition, d.offset) for d in deliveries}
            self._unacked = [d for d in self._unacked if (d.partition, d.offset) not in acked]

    def _send_receipt(self, items: list[Delivery]) -> None:
        receipt = {
            "grant_id": self.grant_id,
            "agency_id": self.agency_id,
            "via": "sdk",
            "at": int(time.time() * 1000),
            "records": [{"record_id": d.record_id, "size": d.size} for d in items],
        }
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed_schema("receipt"), receipt)
        value = buf.getvalue()
        rid = self._ids.new()
        key = self.grant_id.encode()
        signature = self._signer.sign(key, value, rid, self.agency_id, "bus.receipts", RECEIPT_SCHEMA_VERSION)
        if self._producer is None:
            self._producer = Producer(producer_config(self.bootstrap))
        # the senders to link to: one header list per distinct context (a batch shares a few)
        acked = [
            [(Header.TRACEPARENT, tp)]
            for tp in dict.fromkeys(d.headers.get(Header.TRACEPARENT) for d in items)
            if tp
        ]
        with tracing.send_span(self.topics.receipts, 1, link_to=acked) as send:
            self._producer.produce(
                self.topics.receipts,
                value,
                key,
                headers=[
                    (Header.RECORD_ID, rid.encode()),
                    (Header.PUBLISHER, self.agency_id.encode()),
                    (Header.DATASET, b"bus.receipts"),
                    (Header.SCHEMA_VERSION, RECEIPT_SCHEMA_VERSION.encode()),
                    (Header.GRANT, key),
                    (Header.SIGNATURE, signature.encode()),
                    *send.headers,
                ],
            )
            self._producer.flush(10)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
