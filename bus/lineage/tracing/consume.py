"""Consume-side spans: ``receive`` per poll, and the CONSUMER spans of one consumed batch.

It exists so that a consumer gets, for a whole batch, a few spans that keep every record's trace id
instead of one span per record (a span costs ~20 µs). ``consume_batch``/``consume_messages`` group the
records by the trace they carry; each group gets one CONSUMER span that is a child of the group's
context (links to the other senders of the group), so a record keeps its trace id from publisher to
consumer. ``.headers(i)`` is the context to put on records derived from record ``i``, ``.trace_id(i)``
its trace id for the lineage rows. At most ``MAX_GROUP_SPANS`` spans per batch: further traces share
one span that links to them and keep their own context on the records they derive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode

from bus.lineage.tracing.attributes import messaging_attributes
from bus.lineage.tracing.propagation import (
    MAX_LINKS,
    Headers,
    _context_headers,
    _hex_trace,
    _links,
    _trace_headers,
    _usable,
    parse_traceparent,
)
from bus.lineage.tracing.provider import tracer

MAX_GROUP_SPANS = 16  # spans per consumed batch, whatever the number of traces in it


@contextlib.contextmanager
def receive_span(
    destination: str, header_lists: Sequence[Headers], *, group: str | None = None
) -> Iterator[trace.Span]:
    """``receive <topic>``: one span per poll that returned records, linked to (up to MAX_LINKS of) them."""
    attrs = messaging_attributes("receive", destination, count=len(header_lists), group=group)
    with tracer().start_as_current_span(
        f"receive {destination}", kind=SpanKind.CLIENT, attributes=attrs, links=_links(header_lists)
    ) as span:
        yield span


class _Group:
    __slots__ = ("parent", "state", "links", "seen", "slot", "count")

    def __init__(self, parent: SpanContext, state: bytes | str | None) -> None:
        self.parent = parent
        self.state = state
        self.links: list[Link] = []
        self.seen = {parent.span_id}
        self.slot = -1
        self.count = 0


class ConsumeBatch:
    """The spans of one consumed batch; see this module's docstring.

    Records are grouped by (destination, trace id); each of the first ``MAX_GROUP_SPANS`` groups gets
    a span that is a child of the group's first context; records without a context and groups past
    the cap share one span that links to them.
    """

    def __init__(
        self,
        operation: str,
        items: Sequence[tuple[str, Headers]],
        *,
        group: str | None = None,
        attributes: dict[str, Any] | None = None,
        positions: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.operation = operation
        self.spans: list[trace.Span] = []
        self._record_parent: list[SpanContext | None] = []
        self._record_slot: list[int] = []
        self._slot_headers: list[list[tuple[str, bytes]]] = []
        self._slot_trace: list[int] = []
        self._headers_cache: dict[int, list[tuple[str, bytes]]] = {}
        self._index: dict[int, int] = {}
        self._hex: dict[int, str] = {}  # trace id -> its 32 hex digits
        groups: dict[tuple[str, int], _Group] = {}
        keys: list[tuple[str, int] | None] = []
        leftovers: list[int] = []  # record indexes of the shared span
        parsed: dict[bytes | str | None, SpanContext | None] = {}  # a batch's records share few contexts
        for i, (dest, headers) in enumerate(items):
            tp, ts = _trace_headers(headers)
            if tp in parsed:
                sc = parsed[tp]
            else:
                sc = parsed[tp] = parse_traceparent(tp)
            self._record_parent.append(sc)
            if sc is None:
                keys.append(None)
                leftovers.append(i)
                continue
            key = (dest, sc.trace_id)
            keys.append(key)
            g = groups.get(key)
            if g is None:
                groups[key] = g = _Group(sc, ts)
            elif sc.span_id not in g.seen and len(g.links) < MAX_LINKS:
                g.seen.add(sc.span_id)
                g.links.append(Link(sc))
            g.count += 1
        extra = dict(attributes or {})
        if positions:
            parts = {p for p, _ in positions}
            if len(parts) == 1:
                extra[msg.MESSAGING_DESTINATION_PARTITION_ID] = str(next(iter(parts)))
                extra[msg.MESSAGING_KAFKA_OFFSET] = min(o for _, o in positions)
        t = tracer()
        shared_links: list[Link] = []
        for (dest, _), g in groups.items():
            if len(self.spans) < MAX_GROUP_SPANS:
                attrs = messaging_attributes(operation, dest, group=group, count=g.count)
                attrs.update(extra)
                span = t.start_span(
                    f"{operation} {dest}",
                    context=trace.set_span_in_context(NonRecordingSpan(g.parent)),
                    kind=SpanKind.CONSUMER,
                    links=g.links,
                    attributes=attrs,
                )
                g.slot = self._add_slot(span, g.state)
            elif len(shared_links) < MAX_LINKS:
                shared_links.append(Link(g.parent))
        overflow = [i for i, k in enumerate(keys) if k is not None and groups[k].slot < 0]
        shared_slot = -1
        if leftovers or overflow:
            members = leftovers + overflow
            dests = {items[i][0] for i in members}
            common: str | None = next(iter(dests)) if len(dests) == 1 else None
            attrs = messaging_attributes(operation, common or "", group=group, count=len(members))
            if common is None:
                attrs.pop(msg.MESSAGING_DESTINATION_NAME)
            attrs.update(extra)
            span = t.start_span(
                f"{operation} {common}" if common else operation,
                kind=SpanKind.CONSUMER,
                links=shared_links,
                attributes=attrs,
            )
            shared_slot = self._add_slot(span, None)
        for k in keys:
            slot = shared_slot if k is None else groups[k].slot
            self._record_slot.append(shared_slot if slot < 0 else slot)

    def _add_slot(self, span: trace.Span, state: bytes | str | None) -> int:
        self.spans.append(span)
        sc = _usable(span.get_span_context())
        self._slot_headers.append(_context_headers(sc, state))
        self._slot_trace.append(sc.trace_id)
        return len(self.spans) - 1

    def trace_id(self, i: int) -> str:
        """The trace id of record ``i`` (for its lineage rows)."""
        sc = self._record_parent[i]
        tid = sc.trace_id if sc is not None else self._slot_trace[self._record_slot[i]]
        text = self._hex.get(tid)
        if text is None:
            text = self._hex[tid] = _hex_trace(tid)
        return text

    def headers(self, i: int) -> list[tuple[str, bytes]]:
        """Trace headers for the records derived from record ``i``: same trace id, parent = this hop."""
        slot = self._record_slot[i]
        sc = self._record_parent[i]
        if sc is None or self._slot_trace[slot] == sc.trace_id:
            return self._slot_headers[slot]
        cached = self._headers_cache.get(i)  # a trace past MAX_GROUP_SPANS: forward its own context
        if cached is None:
            cached = self._headers_cache[i] = _context_headers(sc)
        return cached

    def index_messages(self, msgs: Sequence[Any]) -> ConsumeBatch:
        self._index = {id(m): i for i, m in enumerate(msgs)}
        return self

    def trace_id_of(self, message: Any) -> str:
        """``trace_id`` by confluent-kafka message (for batches made by ``consume_messages``)."""
        return self.trace_id(self._index[id(message)])

    def headers_of(self, message: Any) -> list[tuple[str, bytes]]:
        return self.headers(self._index[id(message)])

    def set(self, key: str, value: Any) -> None:
        for span in self.spans:
            span.set_attribute(key, value)

    def fail(self, exc: BaseException | str) -> None:
        for span in self.spans:
            if isinstance(exc, BaseException):
                span.record_exception(exc)
                text = f"{type(exc).__name__}: {exc}"
            else:
                text = exc
            span.set_status(Status(StatusCode.ERROR, text[:200]))

    def end(self) -> None:
        spans, self.spans = self.spans, []
        for span in spans:
            span.end()

    def __enter__(self) -> ConsumeBatch:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        self.end()


def consume_batch(
    operation: str,
    destination: str,
    header_lists: Sequence[Headers],
    *,
    group: str | None = None,
    attributes: dict[str, Any] | None = None,
    positions: Sequence[tuple[int, int]] | None = None,
) -> ConsumeBatch:
    """Spans of one batch consumed from ``destination`` (one span per trace in it, at most 17)."""
    return ConsumeBatch(
        operation,
        [(destination, h) for h in header_lists],
        group=group,
        attributes=attributes,
        positions=positions,
    )


def consume_messages(
    operation: str, msgs: Sequence[Any], *, group: str | None = None, attributes: dict[str, Any] | None = None
) -> ConsumeBatch:
    """Spans of one batch of confluent-kafka messages (several topics allowed): ``process`` for the
    validator, router and receipts worker, ``receive`` for the SDK subscriber. Look records up with
    ``trace_id_of(msg)`` and ``headers_of(msg)``."""
    batch = ConsumeBatch(
        operation, [(m.topic(), m.headers()) for m in msgs], group=group, attributes=attributes
    )
    return batch.index_messages(msgs)


