"""Sealing and producing a decided batch (R8, R12, R14): the one output stage of the data plane.

Given a ``BatchOutcome``, every accepted record goes to ``data.<dataset>`` sealed under the dataset key
and, per grant, its view to ``deliver.<grant>`` sealed under the grant's current key; refusals of the
Kafka pipeline go back to ``rejected.<dataset>`` as sent (still sealed under the publisher's key) with
the reason in clear headers. Each output carries one ``bus-meta`` header and the W3C trace headers. The
evidence rows of the batch (published and delivered lineage) are built here; each produced record's
delivery callback fills its row's partition and offset. The Kafka pipeline and HTTP publishing both
emit through this module, so what reaches the broker is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer

from bus.context import BusContext
from bus.exchange import keyring
from bus.exchange.envelope import META_HEADER, Meta, Sealer, partition_key
from bus.exchange.kafka import ProduceHeaders
from bus.grants.keys import GrantKeys
from bus.lineage.recorder import position_callback
from bus.policy.batch import Accepted, BatchOutcome, Refused
from bus.vocab import Header, TopicKind

Report = Callable[[Any, Any], None]  # a librdkafka delivery report handler


@dataclass
class Evidence:
    """The lineage rows of one batch (written after every output is acknowledged)."""

    published: list[dict[str, Any]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SentRecord:
    """What the Kafka pipeline keeps of a consumed ingress message to send a refusal back."""

    key: bytes | None
    value: bytes | None
    meta: bytes | None
    trace: list[tuple[str, bytes]]


def _produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None, headers: ProduceHeaders,
             on_delivery: Report) -> None:
    while True:
        try:
            producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:  # local queue full: let librdkafka drain it
            producer.poll(0.05)


class Emitter:
    """Seals and produces outcomes; one per worker or gateway process (it caches keys)."""

    def __init__(self, ctx: BusContext, keys: GrantKeys | None = None) -> None:
        self.ctx = ctx
        self.keys = keys or GrantKeys(ctx)
        self._datasets: dict[str, tuple[Sealer, bytes]] = {}
        self._partition: dict[str, bytes] = {}

    def dataset_sealer(self, dataset_id: str) -> Sealer:
        return self._dataset(dataset_id)[0]

    def _dataset(self, dataset_id: str) -> tuple[Sealer, bytes]:
        found = self._datasets.get(dataset_id)
        if found is None:
            master = self.ctx.master_secret
            found = self._datasets[dataset_id] = (
                Sealer(keyring.dataset_kid(), keyring.dataset_key(master, dataset_id)),
                keyring.partition_secret(master, f"data/{dataset_id}"),
            )
        return found

    def _grant_partition(self, grant_id: str) -> bytes:
        secret = self._partition.get(grant_id)
        if secret is None:
            secret = self._partition[grant_id] = keyring.partition_secret(self.ctx.master_secret, f"deliver/{grant_id}")
        return secret

    def emit(self, outcome: BatchOutcome, producer: Producer, *, via: str, report: Report,
             trace: Callable[[int], list[tuple[str, bytes]]], trace_id: Callable[[int], str | None],
             sent: Callable[[int], SentRecord] | None = None) -> Evidence:
        """Produce the batch's outputs; ``trace(ref)`` gives each record's trace headers, ``sent(ref)`` the
        consumed message of a refusal to send back (the Kafka pipeline; HTTP answers its refusals)."""
        evidence = Evidence()
        now = datetime.fromtimestamp(outcome.accepted_at_ms / 1000, UTC)
        for a in outcome.accepted:
            self._accepted(a, outcome.accepted_at_ms, now, producer, report, trace(a.item.ref),
                           trace_id(a.item.ref), evidence)
        for r in outcome.refused:
            evidence.published.append(_published_row(r.record_id, r.dataset_id, r.publisher_id, now, r.trace_id,
                                                     r.code, r.schema_version, r.size))
            if sent is not None and r.code != "catalog.not_found":
                self._send_back(r, sent(r.ref), producer, report)
        return evidence

    def _accepted(self, a: Accepted, at_ms: int, now: datetime, producer: Producer, report: Report,
                  trace: list[tuple[str, bytes]], trace_id: str | None, evidence: Evidence) -> None:
        item = a.item
        sealer, psecret = self._dataset(item.dataset_id)
        meta = Meta(item.record_id, item.publisher_id, item.dataset_id, item.schema_version, at_ms,
                    kid=sealer.kid).pack()
        row = _published_row(item.record_id, item.dataset_id, item.publisher_id, now, trace_id, "accepted",
                             item.schema_version, len(item.value))
        evidence.published.append(row)
        _produce(producer, self.ctx.topics.data(item.dataset_id),
                 sealer.seal(TopicKind.DATA, item.dataset_id, meta, item.key, item.value),
                 partition_key(psecret, item.key), [(META_HEADER, meta), *trace], position_callback(row, report))
        for d in a.deliveries:
            g = d.grant
            gsealer = self.keys.current(g.id, g.version, now)
            gmeta = Meta(item.record_id, item.publisher_id, item.dataset_id, item.schema_version, at_ms,
                         g.id, g.scenario_code, gsealer.kid).pack()
            drow = {"record_id": item.record_id, "grant_id": g.id, "dataset_id": item.dataset_id,
                    "agency_id": g.agency_id, "scenario_code": g.scenario_code, "delivered_at": now,
                    "partition": None, "offset": None, "size": len(d.value), "trace_id": trace_id}
            evidence.delivered.append(drow)
            _produce(producer, self.ctx.topics.deliver(g.id),
                     gsealer.seal(TopicKind.DELIVER, g.id, gmeta, item.key, d.value),
                     partition_key(self._grant_partition(g.id), item.key), [(META_HEADER, gmeta), *trace],
                     position_callback(drow, report))

    def _send_back(self, r: Refused, sent: SentRecord, producer: Producer, report: Report) -> None:
        topic = self.ctx.topics.rejected(r.dataset_id)
        if len(topic) > 249:  # not a name Kafka takes: the refusal is in the evidence only
            return
        headers: ProduceHeaders = [(Header.ERROR_CODE, r.code.encode()),
                                   (Header.ERROR_DETAIL, r.error.detail.encode()[:1000])]
        if sent.meta is not None:
            headers.append((META_HEADER, sent.meta))
        headers += sent.trace
        value = None if r.code == "record.too_large" else sent.value
        _produce(producer, topic, value, sent.key, headers, report)


def _published_row(record_id: str, dataset_id: str, publisher_id: str, now: datetime, trace_id: str | None,
                   outcome: str, version: int, size: int) -> dict[str, Any]:
    return {"record_id": record_id, "dataset_id": dataset_id[:64], "publisher_id": publisher_id[:64] or "unknown",
            "published_at": now, "trace_id": trace_id, "outcome": outcome,
            "schema_version": version if 0 <= version < 2**31 else 0, "size": size,
            "partition": None, "offset": None}
