"""``Publisher``: an agency system publishing records of its dataset to the bus over Kafka.

Records are validated locally against the dataset's schema (``RecordInvalid`` before anything is
sent), encoded as Avro, given a time-ordered record id and **sealed** (AES-256-GCM, ``bus.exchange.envelope``)
under the agency's ingress key, derived from its API key: the tag both hides the record from anyone on
the broker and proves who wrote it. They are produced to ``ingress.<dataset>`` with one ``bus-meta``
header. The bus's pipeline checks them again; records it refuses come back on ``rejected.<dataset>``
and ``rejections()`` returns the ones this publisher sent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, Message, Producer

from bus.client import _gateway
from bus.errors import BusError, RecordTooLarge, Unavailable
from bus.exchange import keyring
from bus.exchange.envelope import META_HEADER, EnvelopeError, Meta, Sealer, meta_of, partition_key
from bus.exchange.kafka import (
    ProduceHeaders,
    assign_from_committed,
    consumer_config,
    headers_of,
    producer_config,
    text_headers,
)
from bus.exchange.record_ids import RecordIds, is_record_id
from bus.exchange.topics import Topics
from bus.keys import signing_secret_for
from bus.lineage import tracing
from bus.policy.records import encode, field_names
from bus.vocab import Header, TopicKind


@dataclass(frozen=True)
class Rejection:
    """A record the bus refused: its id, the stable error code and what to fix."""

    record_id: str
    code: str
    detail: str
    key: bytes | None
    value: bytes | None


class Publisher:
    def __init__(
        self,
        bootstrap: str,
        agency_id: str,
        api_key: str,
        dataset: str,
        schema: dict[str, Any],
        schema_version: int,
        *,
        topic_prefix: str = "",
        producer_config: dict[str, Any] | None = None,
        max_record_bytes: int | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.agency_id = agency_id
        self.dataset = dataset
        self.schema_version = schema_version
        self.topics = Topics(topic_prefix)
        self.topic = self.topics.ingress(dataset)
        self.max_record_bytes = max_record_bytes
        self._parsed = fastavro.parse_schema(schema, named_schemas={})
        self._names = field_names(self._parsed)
        self._use_secret(signing_secret_for(api_key))
        self._ids = RecordIds()
        self._extra_config = dict(producer_config or {})
        self._producer: Producer | None = None
        self._failed = 0
        self._last_error: str | None = None
        self._lock = threading.Lock()
        self._rejections: Consumer | None = None
        self._send = tracing.OpenSend(self.topic)  # one `send` span per flush, not per record

    def _use_secret(self, signing_secret: bytes) -> None:
        self._sealer = Sealer(keyring.INGRESS_KID, keyring.ingress_key(signing_secret))
        self._partition = keyring.ingress_partition_secret(signing_secret)

    @classmethod
    def from_gateway(cls, url: str, api_key: str, dataset: str) -> Publisher:
        """Discover the broker (``GET /v1/bus``) and the dataset's schema (``GET /v1/datasets/{id}``)."""
        bus = _gateway.call(url, api_key, "/v1/bus")
        entry = _gateway.call(url, api_key, f"/v1/datasets/{dataset}")
        return cls(
            bus["bootstrap"],
            bus.get("agency") or entry["owner"],
            api_key,
            dataset,
            entry["schema"],
            int(entry["schema_version"]),
            topic_prefix=bus.get("topic_prefix", ""),
            max_record_bytes=bus.get("max_record_bytes"),
        )

    @classmethod
    def with_signing_secret(
        cls,
        bootstrap: str,
        agency_id: str,
        signing_secret: bytes,
        dataset: str,
        schema: dict[str, Any],
        schema_version: int,
        **kw: Any,
    ) -> Publisher:
        """A publisher signing with an agency's stored signing secret instead of its API key.

        For parts of the bus that publish as an agency without holding its key (source connectors,
        `bus.connectors_runtime`); records take exactly the same signed path and checks as the SDK's.
        """
        pub = cls(bootstrap, agency_id, "", dataset, schema, schema_version, **kw)
        pub._use_secret(signing_secret)
        return pub

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(producer_config(self.bootstrap, **self._extra_config))
        return self._producer

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._failed += 1
                self._last_error = str(err)

    def publish(
        self,
        record: dict[str, Any],
        key: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        record_id: str | None = None,
    ) -> str:
        """Validate, sign and send one record; returns its ``bus-record-id``. Raises ``RecordInvalid``.

        ``record_id``: the id to send it with (32 hex characters, e.g. ``derived_record_id``) when a
        resend must keep the id it had (source connectors); default a new one. ``rejections()`` only
        reports records whose id this publisher made.
        """
        value = encode(record, self._parsed, self._names)
        if self.max_record_bytes is not None and len(value) > self.max_record_bytes:
            raise RecordTooLarge(
                f"the record is {len(value)} bytes; the bus accepts at most {self.max_record_bytes}"
            )
        if record_id is None:
            record_id = self._ids.new()
        elif not is_record_id(record_id):
            raise ValueError(f"{record_id!r} is not a record id (32 lowercase hex characters)")
        kb = key.encode() if key is not None else None
        meta = Meta(record_id, self.agency_id, self.dataset, self.schema_version, kid=self._sealer.kid).pack()
        sealed = self._sealer.seal(TopicKind.INGRESS, self.dataset, meta, kb, value)
        hdrs: ProduceHeaders = [(META_HEADER, meta), *self._send.headers()]
        if headers:  # the caller's own headers travel in the clear: never put data in them
            hdrs += [
                (k, v)
                for k, v in headers.items()
                if not k.startswith("bus-") and k not in tracing.TRACE_HEADERS
            ]
        producer = self.producer
        while True:
            try:
                producer.produce(self.topic, sealed, partition_key(self._partition, kb), headers=hdrs,
                                 on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let librdkafka drain it
                producer.poll(0.05)
        producer.poll(0)
        return record_id

    def flush(self, timeout: float = 30) -> None:
        """Wait until every record is acknowledged by the broker; raise if some could not be sent."""
        self._send.end()
        if self._producer is None:
            return
        remaining = self._producer.flush(timeout)
        with self._lock:
            failed, self._failed = self._failed, 0
        if remaining:
            raise Unavailable(
                f"{remaining} record(s) not acknowledged after {timeout:.0f}s; the broker at "
                f"{self.bootstrap} may be down"
            )
        if failed:
            raise Unavailable(f"{failed} record(s) could not be sent: {self._last_error}")

    def owns(self, record_id: str) -> bool:
        """Was ``record_id`` made by this publisher? (ids carry their generator's random prefix)"""
        return self._ids.made(record_id)

    def rejections(self, timeout: float = 1.0) -> list[Rejection]:
        """Records this publisher sent that the validator refused (from ``rejected.<dataset>``), oldest first.

        Each call returns the refusals that arrived since the previous call, waiting up to ``timeout``.
        """
        if self._rejections is None:
            import uuid

            consumer = Consumer(consumer_config(self.bootstrap, f"rejections-{uuid.uuid4().hex}"))
            assign_from_committed(consumer, [self.topics.rejected(self.dataset)])
            self._rejections = consumer
        consumer = self._rejections
        if not consumer.assignment():
            assign_from_committed(consumer, [self.topics.rejected(self.dataset)])
        out: list[Rejection] = []
        for m in consumer.consume(1000, timeout):
            if m.error() is not None:
                continue
            raw = meta_of(headers_of(m))
            try:
                meta = Meta.unpack(raw)
            except EnvelopeError:
                continue  # not one of ours: a refusal of a record no SDK sealed
            if meta.publisher != self.agency_id or not self._ids.made(meta.record_id):
                continue
            h = text_headers(m)
            key = value = None
            if m.value() is not None:
                try:
                    key, value = self._sealer.open(TopicKind.INGRESS, self.dataset, raw or b"", m.value())
                except EnvelopeError:
                    pass
            out.append(
                Rejection(meta.record_id, h.get(Header.ERROR_CODE, ""), h.get(Header.ERROR_DETAIL, ""), key, value)
            )
        return out

    def close(self) -> None:
        try:
            self.flush(10)
        except BusError:
            pass
        finally:
            if self._rejections is not None:
                self._rejections.close()
                self._rejections = None
            self._producer = None

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
