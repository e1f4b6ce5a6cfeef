"""Connector kinds by name, imported on first use so a kind's client library loads only when needed."""

from __future__ import annotations

import importlib

from bus.errors import ConnectorUnknownKind
from connectors.base import Connector

KINDS: dict[str, str] = {
    "file-source": "connectors.file_source:FileSource",
    "sql-source": "connectors.sql_source:SqlSource",
    "mqtt-source": "connectors.mqtt_source:MqttSource",
    "http-sink": "connectors.http_sink:HttpSink",
    "sql-sink": "connectors.sql_sink:SqlSink",
    "file-sink": "connectors.file_sink:FileSink",
}


def kinds() -> list[str]:
    return sorted(KINDS)


def connector_class(kind: str) -> type[Connector]:
    """The class of ``kind``, or ``connector.unknown_kind`` listing the kinds there are."""
    spec = KINDS.get(kind)
    if spec is None:
        raise ConnectorUnknownKind(f"unknown connector kind {kind!r}; kinds: {', '.join(kinds())}")
    module, _, cls = spec.partition(":")
    found: type[Connector] = getattr(importlib.import_module(module), cls)
    return found


def build(kind: str, name: str, config: dict) -> Connector:  # type: ignore[type-arg]
    """A connector instance with its config validated (no I/O until ``start``)."""
    cls = connector_class(kind)
    return cls(name, cls.validate_config(config))
