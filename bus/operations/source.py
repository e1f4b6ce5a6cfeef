"""The one reader of ``data.<dataset>`` for operations (R11): decode an accepted record, nothing more.

Every byte the executor takes from the accepted log goes through ``decode_accepted``. The data plane's
wire format is the data plane's business: when it changes (sealed records, one compact header), only
this function follows it. The decoded value never leaves the executor's process.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any, cast

import fastavro
from confluent_kafka import Message

from bus.context import BusContext
from bus.exchange import keyring
from bus.exchange.envelope import Meta, Sealer, meta_of
from bus.exchange.kafka import headers_of
from bus.exchange.policy_cache import PolicySnapshot, parsed_schema
from bus.vocab import TopicKind

log = logging.getLogger(__name__)


_SEALERS: dict[tuple[bytes, str], Sealer] = {}


def _sealer(ctx: BusContext, dataset_id: str) -> Sealer:
    """The dataset key of ``data.<dataset>`` (only the bus holds it: operators compute inside the bus)."""
    key = (ctx.master_secret, dataset_id)
    found = _SEALERS.get(key)
    if found is None:
        dkey = keyring.dataset_key(ctx.master_secret, dataset_id)
        found = _SEALERS[key] = Sealer(keyring.dataset_kid(), dkey)
    return found


@dataclass(frozen=True)
class AcceptedRecord:
    record_id: str
    dataset_id: str
    accepted_at_ms: int  # the event time of the operator's windows
    schema_version: int
    value: dict[str, Any]


def decode_accepted(ctx: BusContext, snapshot: PolicySnapshot, message: Message) -> AcceptedRecord | None:
    """The accepted record in ``message`` of ``data.<dataset>``, or None when it cannot be read (logged:
    the validator accepted it, so this is a bus fault, never the publisher's)."""
    topic = message.topic() or ""
    prefix = ctx.topics.data("")
    dataset_id = topic[len(prefix) :] if topic.startswith(prefix) else topic
    try:
        raw = meta_of(headers_of(message))
        meta = Meta.unpack(raw)
        sealer = _sealer(ctx, dataset_id)
        _, plain = sealer.open(TopicKind.DATA, dataset_id, raw or b"", message.value())
        record_id, accepted_at, version = meta.record_id, meta.published_at_ms, meta.schema_version
        ds = snapshot.datasets[dataset_id]
        parsed = parsed_schema(dataset_id, version, ds.schemas[version])
        value = cast("dict[str, Any]", fastavro.schemaless_reader(io.BytesIO(plain), parsed, None))
    except Exception as exc:
        log.warning(
            "operator executor cannot read a record of %s at %s/%s: %s",
            topic,
            message.partition(),
            message.offset(),
            type(exc).__name__,
        )
        return None
    return AcceptedRecord(record_id, dataset_id, accepted_at, version, value)
