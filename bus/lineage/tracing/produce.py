"""PRODUCER spans: one ``send <topic>`` span per produced batch, never one per record.

It exists so that producers get their span and the trace headers to append to every record of the
batch from one helper: ``send_span(topic, count)`` for batch producers, ``OpenSend(topic)`` for
producers called once per record (the SDK ``Publisher``: one span per flush).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanKind, Status, StatusCode

from bus.lineage.tracing.attributes import messaging_attributes
from bus.lineage.tracing.propagation import Headers, _context_headers, _hex_trace, _links, _usable
from bus.lineage.tracing.provider import tracer


class SendSpan:
    """The PRODUCER span of one produced batch and the headers that carry it."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        sc = _usable(span.get_span_context())
        self.trace_id = _hex_trace(sc.trace_id)
        self.headers: list[tuple[str, bytes]] = _context_headers(sc)

    def set(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)


@contextlib.contextmanager
def send_span(
    destination: str,
    count: int,
    *,
    attributes: dict[str, Any] | None = None,
    context: otel_context.Context | None = None,
    link_to: Sequence[Headers] | None = None,
) -> Iterator[SendSpan]:
    """``send <topic>``: one span per produced batch, child of the current (or given) context;
    ``link_to`` are header lists of records the batch stems from (linked, at most ``MAX_LINKS``)."""
    attrs = messaging_attributes("send", destination, count=count)
    if attributes:
        attrs.update(attributes)
    with tracer().start_as_current_span(
        f"send {destination}",
        context=context,
        kind=SpanKind.PRODUCER,
        attributes=attrs,
        links=_links(link_to or ()),
    ) as span:
        yield SendSpan(span)


class OpenSend:
    """A ``send`` span kept open across calls, for producers that are called once per record (the SDK
    ``Publisher``): one span per flush, per ``max_records`` records, per ``max_age`` seconds, or per
    change of the caller's current span, whichever comes first. Thread-safe."""

    def __init__(self, destination: str, max_records: int = 10_000, max_age: float = 1.0) -> None:
        self.destination = destination
        self.max_records = max_records
        self.max_age = max_age
        self._lock = threading.Lock()
        self._span: trace.Span | None = None
        self._headers: list[tuple[str, bytes]] = []
        self._context = INVALID_SPAN_CONTEXT
        self._parent = 0
        self._count = 0
        self._since = 0.0

    def headers(self) -> list[tuple[str, bytes]]:
        """The trace headers for one more record of the open batch (opening one if needed)."""
        current = trace.get_current_span().get_span_context()
        parent = current.span_id if current.is_valid else 0
        now = time.monotonic()
        with self._lock:
            if (
                self._span is None
                or self._count >= self.max_records
                or now - self._since > self.max_age
                or parent != self._parent
            ):
                self._end_locked()
                self._span = tracer().start_span(
                    f"send {self.destination}",
                    kind=SpanKind.PRODUCER,
                    attributes=messaging_attributes("send", self.destination),
                )
                self._context = _usable(self._span.get_span_context())
                self._headers = _context_headers(self._context)
                self._parent, self._since = parent, now
            self._count += 1
            return self._headers

    @property
    def trace_id(self) -> str | None:
        with self._lock:
            return _hex_trace(self._context.trace_id) if self._span is not None else None

    def end(self, error: str | None = None) -> None:
        """Close the open batch (``Publisher.flush``)."""
        with self._lock:
            if error and self._span is not None:
                self._span.set_status(Status(StatusCode.ERROR, error[:200]))
            self._end_locked()

    def _end_locked(self) -> None:
        if self._span is not None:
            if self._count != 1:
                self._span.set_attribute(msg.MESSAGING_BATCH_MESSAGE_COUNT, self._count)
            self._span.end()
        self._span, self._count = None, 0
