"""Keeping spans in the store's ``lineage_spans`` table, the default when no OTLP collector is set.

It exists so that a bus without a collector still keeps the spans that matter for lineage (this
layer's and the HTTP server span of a request that made bus spans) next to the lineage rows.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from bus.lineage.tracing.propagation import _hex_span, _hex_trace
from bus.lineage.tracing.provider import TRACER_NAME
from bus.store import Store

log = logging.getLogger(__name__)


def _stamp(ns: int | None) -> datetime:
    return datetime.fromtimestamp((ns or 0) / 1e9, UTC)


class StoreSpanExporter(SpanExporter):
    """Writes finished spans to ``lineage_spans``, one insert per export batch."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from sqlalchemy import insert

        from bus.store.models import LineageSpan

        rows = []
        for s in spans:
            sc = s.get_span_context()
            if sc is None:
                continue
            rows.append(
                {
                    "trace_id": _hex_trace(sc.trace_id),
                    "span_id": _hex_span(sc.span_id),
                    "parent_span_id": _hex_span(s.parent.span_id) if s.parent is not None else None,
                    "name": s.name[:200],
                    "kind": s.kind.name.lower(),
                    "start_at": _stamp(s.start_time),
                    "end_at": _stamp(s.end_time),
                    "status": s.status.status_code.name.lower(),
                    "attributes": {
                        k: list(v) if isinstance(v, tuple) else v for k, v in (s.attributes or {}).items()
                    },
                    "links": [
                        {
                            "trace_id": _hex_trace(li.context.trace_id),
                            "span_id": _hex_span(li.context.span_id),
                        }
                        for li in s.links
                    ],
                }
            )
        if not rows:
            return SpanExportResult.SUCCESS
        try:
            with self.store.session() as session:
                session.execute(insert(LineageSpan), rows)
        except Exception:  # never break the data plane because spans cannot be kept
            log.warning("could not store %d spans", len(rows), exc_info=True)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class LineageSpanProcessor(BatchSpanProcessor):
    """Batches the spans that matter for lineage into the store: the bus's own, and the HTTP server
    span of a request that made bus spans (a publish), not of every read or health probe."""

    RECENT = 10_000  # traces with bus spans remembered, so their HTTP span (which ends last) is kept

    def __init__(self, store: Store) -> None:
        super().__init__(StoreSpanExporter(store), schedule_delay_millis=500, max_export_batch_size=512)
        self._recent: OrderedDict[int, None] = OrderedDict()
        self._recent_lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        scope = span.instrumentation_scope
        sc = span.get_span_context()
        if scope is not None and scope.name == TRACER_NAME:
            if sc is not None:
                with self._recent_lock:
                    self._recent[sc.trace_id] = None
                    if len(self._recent) > self.RECENT:
                        self._recent.popitem(last=False)
            super().on_end(span)
        elif span.kind is SpanKind.SERVER and sc is not None:
            with self._recent_lock:
                keep = sc.trace_id in self._recent
            if keep:
                super().on_end(span)
