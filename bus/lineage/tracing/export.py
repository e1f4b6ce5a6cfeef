"""Where one running bus sends its spans: OTLP/HTTP or the lineage store.

It exists to make that choice in one place: OTLP/HTTP to a collector when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else the spans that matter for lineage go to the store's
``lineage_spans`` table in batches (``LineageSpanProcessor``).
"""

from __future__ import annotations

import contextlib

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bus.lineage.tracing.provider import attach, detach
from bus.lineage.tracing.store import LineageSpanProcessor
from bus.settings import Settings
from bus.store import Store


def otlp_traces_url(endpoint: str) -> str:
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


class Tracing:
    """The span exporters of one running bus (``Stack``): started before the workers, stopped after."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.processor: SpanProcessor | None = None

    @property
    def destination(self) -> str:
        endpoint = self.settings.otel_exporter_otlp_endpoint
        return f"otlp {otlp_traces_url(endpoint)}" if endpoint else "lineage store"

    def start(self) -> Tracing:
        endpoint = self.settings.otel_exporter_otlp_endpoint
        if endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_traces_url(endpoint)))
        else:
            self.processor = LineageSpanProcessor(self.store)
        attach(self.processor)
        return self

    def flush(self, timeout_millis: int = 5_000) -> bool:
        return self.processor.force_flush(timeout_millis) if self.processor is not None else True

    def stop(self) -> None:
        if self.processor is None:
            return
        detach(self.processor)
        with contextlib.suppress(Exception):
            self.processor.shutdown()
        self.processor = None
