"""``mqtt-source``: JSON messages of IoT devices from an MQTT broker (paho-mqtt 2.x).

The connector keeps a persistent session (``clean_session=False``, a stable client id) and acknowledges
each QoS 1/2 message only after the batch holding it is durably on the bus: a message received but not
yet published is redelivered by the broker after a restart, so nothing is lost and at most one batch
repeats. While the connector is down the broker queues messages for the session (Mosquitto keeps up to
``max_queued_messages``, 1000 by default). QoS 0 messages have no such guarantee.

Records get new ``bus-record-id``s (no ``position_id``), unlike the file and SQL sources whose ids are
derived from the record's place in the source. MQTT gives a message no identity that survives a
session: a QoS 0 message is never redelivered (so it cannot repeat: it is lost instead), and a QoS 1/2
message redelivered after a restart comes with a new packet id, which cannot be told from a device
sending the same payload again. A repeated batch therefore repeats with new ids; consumers that must
drop such repeats compare a field of the payload (a device's sequence number or reading time).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any, ClassVar, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import Field, field_validator

from connectors._shape import RecordShaper
from connectors.base import (
    ConnectorConfig,
    PermanentFailure,
    Source,
    SourceBatch,
    SourceContext,
    SourceRecord,
    TransientFailure,
    Unreadable,
)


def check_filter(f: str) -> str:
    """An MQTT topic filter: ``+`` a whole level, ``#`` only as the last level."""
    if not f or len(f.encode()) > 65535 or "\x00" in f:
        raise ValueError(f"{f!r} is not an MQTT topic filter")
    levels = f.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"{f!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise ValueError(f"{f!r}: '+' must be a whole level")
    return f


class MqttSourceConfig(ConnectorConfig):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    topics: list[str] = Field(min_length=1, description="topic filters, e.g. ['sensors/+/air']")
    qos: Literal[0, 1, 2] = Field(1, description="1 or 2 for no loss across restarts")
    client_id: str | None = Field(
        None, max_length=128, description="stable id of the persistent session [default: databus-<name>]"
    )
    username: str | None = None
    password: str | None = None
    tls: bool = False
    keepalive: int = Field(30, ge=5, le=3600)
    mapping: dict[str, str] = Field(default_factory=dict, description="JSON key -> schema field")
    key_field: str | None = None
    topic_field: str | None = Field(None, description="schema field that receives the message's topic")

    @field_validator("topics")
    @classmethod
    def _filters(cls, v: list[str]) -> list[str]:
        return [check_filter(f) for f in v]


class MqttSource(Source):
    kind: ClassVar[str] = "mqtt-source"
    Config = MqttSourceConfig

    def __init__(self, name: str, config: MqttSourceConfig) -> None:  # type: ignore[override]
        super().__init__(name, config)
        self.cfg = config
        self._client: mqtt.Client | None = None
        self._inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._unacked: list[tuple[int, int]] = []  # (mid, qos) of polled messages not yet on the bus
        self._connected = threading.Event()
        self._refused: str | None = None
        self._shaper: RecordShaper | None = None
        self._received = 0

    @property
    def client_id(self) -> str:
        return self.cfg.client_id or f"databus-{self.name}"

    def check_schema(self, schema: dict[str, Any]) -> None:
        self._shaper_for(schema)

    def _shaper_for(self, schema: dict[str, Any]) -> RecordShaper:
        shaper = RecordShaper(schema, self.cfg.mapping, self.cfg.key_field)
        if self.cfg.topic_field and self.cfg.topic_field not in shaper.names:
            raise ValueError(f"topic_field {self.cfg.topic_field!r} is not a field of the dataset schema")
        return shaper

    # --- paho callbacks (network thread) ---
    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            self._connected.set()
            return
        subscriptions: list[tuple[str, int]] = [(t, int(self.cfg.qos)) for t in self.cfg.topics]
        client.subscribe(subscriptions)
        self._refused = None
        self._connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, _reason: Any, _p: Any) -> None:
        self._connected.clear()
        # acks are per connection: messages not yet acknowledged come again on the next session
        self._unacked.clear()
        while True:
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                break

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put(msg)

    # --- lifecycle ---
    def start(self, context: SourceContext, position: dict[str, Any]) -> None:
        self._shaper = self._shaper_for(context.schema)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False, manual_ack=True
        )
        if self.cfg.username:
            client.username_pw_set(self.cfg.username, self.cfg.password)
        if self.cfg.tls:
            client.tls_set()
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 30)
        try:
            client.connect(self.cfg.host, self.cfg.port, self.cfg.keepalive)
        except OSError as exc:
            where = f"{self.cfg.host}:{self.cfg.port}"
            raise TransientFailure(f"cannot reach the MQTT broker at {where}: {exc}") from None
        client.loop_start()
        self._client = client
        if not self._connected.wait(10):
            self.stop()
            raise TransientFailure(f"no answer from the MQTT broker at {self.cfg.host}:{self.cfg.port}")
        if self._refused:
            reason = self._refused
            self.stop()
            raise PermanentFailure(f"the MQTT broker refused the connection: {reason}")

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    # --- reading ---
    def poll(self, max_records: int, timeout: float) -> SourceBatch:
        assert self._shaper is not None
        batch = SourceBatch(records=[], position={})
        deadline = time.monotonic() + timeout
        msgs: list[mqtt.MQTTMessage] = []
        try:
            msgs.append(self._inbox.get(timeout=timeout))
            # a short grace lets a burst of device messages share one batch
            while len(msgs) < max_records:
                msgs.append(self._inbox.get(timeout=max(0.0, min(0.02, deadline - time.monotonic()))))
        except queue.Empty:
            pass
        for msg in msgs:
            if msg.qos > 0:
                self._unacked.append((msg.mid, msg.qos))
            origin = f"{msg.topic}#{msg.mid}"
            try:
                row = json.loads(msg.payload)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                batch.unreadable.append(Unreadable(bytes(msg.payload), f"payload is not JSON: {exc}", origin))
                continue
            if not isinstance(row, dict):
                batch.unreadable.append(
                    Unreadable(bytes(msg.payload), "payload must be a JSON object", origin)
                )
                continue
            if self.cfg.topic_field:
                row[self.cfg.topic_field] = msg.topic
            try:
                value, key = self._shaper.shape(row)
            except ValueError as exc:
                batch.unreadable.append(Unreadable(bytes(msg.payload), str(exc), origin))
                continue
            batch.records.append(SourceRecord(value=value, key=key, origin=origin))
        self._received += len(msgs)
        batch.position = {"received": self._received}
        return batch

    def commit(self, position: dict[str, Any]) -> None:
        """The batch is on the bus: acknowledge its messages so the broker forgets them."""
        client = self._client
        pending, self._unacked = self._unacked, []
        if client is None:
            return
        for mid, qos in pending:
            client.ack(mid, qos)

    def status(self) -> dict[str, Any]:
        return {"lag": self._inbox.qsize(), "lag_unit": "messages", "connected": self._connected.is_set()}
