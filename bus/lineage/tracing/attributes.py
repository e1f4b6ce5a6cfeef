"""Span attributes after the OpenTelemetry messaging semantic conventions.

It exists so that every bus span describes its Kafka operation the same way: ``messaging.system=kafka``,
``messaging.operation.type`` send/receive/process, ``messaging.destination.name``, partition, offset,
consumer group and batch size.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg

SYSTEM = "kafka"


def messaging_attributes(
    operation: str,
    destination: str,
    *,
    count: int | None = None,
    partition: int | None = None,
    offset: int | None = None,
    group: str | None = None,
    record_id: str | None = None,
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        msg.MESSAGING_SYSTEM: SYSTEM,
        msg.MESSAGING_OPERATION_NAME: operation,
        msg.MESSAGING_OPERATION_TYPE: operation,
        msg.MESSAGING_DESTINATION_NAME: destination,
    }
    if count is not None and count != 1:
        attrs[msg.MESSAGING_BATCH_MESSAGE_COUNT] = count
    if partition is not None:
        attrs[msg.MESSAGING_DESTINATION_PARTITION_ID] = str(partition)
    if offset is not None:
        attrs[msg.MESSAGING_KAFKA_OFFSET] = offset
    if group:
        attrs[msg.MESSAGING_CONSUMER_GROUP_NAME] = group
    if record_id:
        attrs[msg.MESSAGING_MESSAGE_ID] = record_id
    return attrs
