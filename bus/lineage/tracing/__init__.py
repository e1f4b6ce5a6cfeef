"""The tracing layer: OpenTelemetry spans for the data plane, W3C trace context in Kafka headers.

Business code calls a few helpers and never builds spans by hand:

- ``send_span(topic, count)``: one PRODUCER span per produced batch; ``.headers`` is the
  ``traceparent``/``tracestate`` pair to append to every record of the batch (``OpenSend`` for
  per-record callers). See ``produce``.
- ``consume_batch(...)``/``consume_messages(...)``: the spans of one consumed batch, one per trace in
  it (at most ``MAX_GROUP_SPANS`` + 1). See ``consume``.
- ``receive_span(topic, header_lists)``: one span per poll that returned records, linking to them.

The package, one module per concept: ``provider`` (the process-wide tracer provider, ``attach``/
``detach``), ``export`` (``Tracing``: OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else
``store``), ``store`` (spans into ``lineage_spans``), ``propagation`` (trace context in Kafka
headers), ``attributes`` (messaging semantic conventions), ``produce`` and ``consume``.

Lineage rows never depend on these spans: they are written by ``LineageRecorder`` whatever the
sampler decides (an unsampled span still has a trace id, which is what the rows keep).
"""

from __future__ import annotations

from bus.lineage.tracing.consume import (
    MAX_GROUP_SPANS,
    ConsumeBatch,
    consume_batch,
    consume_messages,
    receive_span,
)
from bus.lineage.tracing.export import Tracing, otlp_traces_url
from bus.lineage.tracing.produce import OpenSend, send_span
from bus.lineage.tracing.propagation import (
    TRACE_HEADERS,
    _usable,
    current_trace_id,
    extract,
    format_traceparent,
    parse_traceparent,
)
from bus.lineage.tracing.provider import attach, detach, instrument_app, tracer
from bus.lineage.tracing.store import LineageSpanProcessor

__all__ = [
    "MAX_GROUP_SPANS",
    "TRACE_HEADERS",
    "ConsumeBatch",
    "LineageSpanProcessor",
    "OpenSend",
    "Tracing",
    "_usable",
    "attach",
    "consume_batch",
    "consume_messages",
    "current_trace_id",
    "detach",
    "extract",
    "format_traceparent",
    "instrument_app",
    "otlp_traces_url",
    "parse_traceparent",
    "receive_span",
    "send_span",
    "tracer",
]
