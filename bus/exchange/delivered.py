"""Opening what the bus delivered, on the bus's side (R8, R14): the HTTP cursor, SSE and sink connectors.

Nothing reaches a grantee that the bus did not deliver: a record on ``deliver.<grant>`` is handed on only
if its ``bus-meta`` names this grant and it opens under one of the grant's keys. Anything else — produced
straight into the topic by some Kafka client, moved from another grant, tampered with — is dropped,
counted, and reported once per batch as a ``forged_delivery`` violation naming the topic (an incident,
R15). The SDK's ``Subscriber`` does the same on the grantee's side with the keys it fetched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bus.exchange.envelope import EnvelopeError, Meta, meta_of
from bus.exchange.kafka import headers_of, position_of, text_headers
from bus.grants.keys import GrantKeys
from bus.vocab import Header, TopicKind, ViolationKind

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Opened:
    """One delivered record, opened: its metadata, Avro view bytes and place in the topic."""

    meta: Meta
    value: bytes
    partition: int
    offset: int
    headers: dict[str, str]  # the contract's names (bus-record-id, bus-grant, bus-scenario, ...) + others


@dataclass
class Dropped:
    """Records of one read that did not open."""

    topic: str
    grant_id: str
    reasons: list[str]

    def violation(self, agency_id: str | None, dataset_id: str | None) -> dict[str, Any]:
        kind = ViolationKind.FORGED_DELIVERY.value
        return {"kind": kind, "code": kind, "agency_id": agency_id, "dataset_id": dataset_id,
                "grant_id": self.grant_id, "record_ids": [], "trace_ids": [], "count": len(self.reasons),
                "detail": f"{len(self.reasons)} record(s) on {self.topic} that the bus did not deliver were "
                          f"dropped before reaching the grantee: {self.reasons[0]}"}


def open_delivered(keys: GrantKeys, grant_id: str, msgs: list[Any]) -> tuple[list[Opened], Dropped | None]:
    """The records of ``msgs`` (one grant's topic) that the bus sealed for this grant, and what was dropped."""
    out: list[Opened] = []
    dropped: Dropped | None = None
    for m in msgs:
        if m.error() is not None:
            continue
        topic, partition, offset = position_of(m)
        raw = meta_of(headers_of(m))
        try:
            meta = Meta.unpack(raw)
            if meta.grant != grant_id:
                raise EnvelopeError(f"sealed for grant {meta.grant!r}")
            sealer = keys.by_kid(grant_id, meta.kid)
            if sealer is None:
                raise EnvelopeError(f"key {meta.kid!r} is not a key of the grant")
            _, value = sealer.open(TopicKind.DELIVER, grant_id, raw or b"", m.value())
        except EnvelopeError as exc:
            if dropped is None:
                dropped = Dropped(topic, grant_id, [])
            dropped.reasons.append(f"{topic}[{partition}]@{offset}: {exc}")
            continue
        headers = text_headers(m)
        headers.pop(Header.META, None)
        headers.update(meta.contract_headers())
        out.append(Opened(meta, value, partition, offset, headers))
    if dropped is not None:
        log.warning("grant %s: dropped %d record(s) the bus did not deliver (%s)", grant_id, len(dropped.reasons),
                    dropped.reasons[0])
    return out, dropped
