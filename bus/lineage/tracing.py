"""The tracing layer: OpenTelemetry spans for the data plane, W3C trace context in Kafka headers.

Business code calls three helpers and never builds spans by hand:

- ``send_span(topic, count)``: one PRODUCER span per produced batch; ``.headers`` is the
  ``traceparent``/``tracestate`` pair to append to every record of the batch.
- ``consume_batch("process", topic, header_lists, ...)``: the spans of one consumed batch. Records
  are grouped by the trace they carry; each group gets one CONSUMER span that is a child of the
  group's context (links to the other senders of the group), so a record keeps its trace id from
  publisher to consumer. ``.headers(i)`` is the context to put on records derived from record ``i``,
  ``.trace_id(i)`` its trace id for the lineage rows. At most ``MAX_GROUP_SPANS`` spans per batch
  (a span costs ~20 µs): further traces share one span that links to them and keep their own
  context on the records they derive.
- ``receive_span(topic, header_lists)``: one span per poll that returned records, linking to them.

Attributes follow the OpenTelemetry messaging semantic conventions (``messaging.system=kafka``,
``messaging.operation.type`` send/receive/process, ``messaging.destination.name``, partition,
offset, consumer group, batch size). Spans are exported by ``Tracing`` (one per running bus):
OTLP/HTTP to a collector when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else the spans that matter for
lineage (this layer's and HTTP server spans) go to the store's ``lineage_spans`` table in batches.

Lineage rows never depend on these spans: they are written by ``LineageRecorder`` whatever the
sampler decides (an unsampled span still has a trace id, which is what the rows keep).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.semconv._incubating.attributes import messaging_attributes as msg
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from bus.settings import Settings
from bus.store import Store
from bus.vocab import Header

log = logging.getLogger(__name__)

TRACER_NAME = "databus"
SYSTEM = "kafka"
MAX_GROUP_SPANS = 16  # spans per consumed batch, whatever the number of traces in it
MAX_LINKS = 32  # links per span
Headers = Sequence[tuple[str, bytes | str | None]] | None

_TP = Header.TRACEPARENT
_TS = Header.TRACESTATE
TRACE_HEADERS = frozenset({_TP, _TS})


# --- provider and exporters ----------------------------------------------------------------------
class _Fanout(SpanProcessor):
    """One processor on the provider that forwards to those attached at run time (each running bus)."""

    def __init__(self) -> None:
        self._procs: tuple[SpanProcessor, ...] = ()
        self._lock = threading.Lock()

    def add(self, proc: SpanProcessor) -> None:
        with self._lock:
            self._procs = (*self._procs, proc)

    def remove(self, proc: SpanProcessor) -> None:
        with self._lock:
            self._procs = tuple(p for p in self._procs if p is not proc)

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        for p in self._procs:
            p.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for p in self._procs:
            p.on_end(span)

    def shutdown(self) -> None:
        for p in self._procs:
            p.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self._procs)


_fanout = _Fanout()
_install_lock = threading.Lock()
_installed = False


def install() -> None:
    """Record spans in this process: an SDK ``TracerProvider`` (the application's, if it set one).

    The sampler is the SDK default (``OTEL_TRACES_SAMPLER``, parent-based always-on unless set).
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        current = trace.get_tracer_provider()
        if not isinstance(current, SDKTracerProvider):
            trace.set_tracer_provider(
                SDKTracerProvider(resource=Resource.create({"service.name": "databus"}))
            )
            current = trace.get_tracer_provider()
        if isinstance(current, SDKTracerProvider):
            current.add_span_processor(_fanout)
        else:  # pragma: no cover - someone installed a non-SDK provider; spans go wherever it sends them
            log.warning(
                "the global tracer provider is not the OpenTelemetry SDK's; bus spans are not exported"
            )
        _installed = True


def attach(processor: SpanProcessor) -> SpanProcessor:
    """Send every finished span of this process to ``processor`` too (tests: an in-memory exporter)."""
    install()
    _fanout.add(processor)
    return processor


def detach(processor: SpanProcessor) -> None:
    _fanout.remove(processor)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def _hex_trace(trace_id: int) -> str:
    return f"{trace_id:032x}"


def _hex_span(span_id: int) -> str:
    return f"{span_id:016x}"


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


def instrument_app(app: Any) -> None:
    """HTTP server spans for the gateway (opentelemetry-instrumentation-fastapi), health checks excluded."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    install()
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz", exclude_spans=["receive", "send"])


# --- trace context in Kafka headers --------------------------------------------------------------
def _as_text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("ascii", "replace") if isinstance(value, bytes | bytearray) else str(value)


class _HeaderGetter:
    """W3C propagator getter over confluent-kafka header lists ``[(name, bytes), ...]``."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        found = [t for k, v in (carrier or ()) if k == key and (t := _as_text(v)) is not None]
        return found or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k for k, _ in (carrier or ())]


_getter = _HeaderGetter()


def extract(headers: Headers) -> otel_context.Context:
    """The context a record carries (the configured propagators, W3C trace context by default)."""
    return propagate.extract(headers, getter=_getter)  # type: ignore[arg-type]


def inject(context: otel_context.Context | None = None) -> list[tuple[str, bytes]]:
    """Header tuples carrying ``context`` (default: the current one) to append to produced records."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return [(k, v.encode()) for k, v in carrier.items()]


def parse_traceparent(value: bytes | str | None) -> SpanContext | None:
    """Fast W3C ``traceparent`` parse for the batch path (no Context objects, no regex)."""
    text = _as_text(value)
    if not text or len(text) < 55:
        return None
    parts = text.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def format_traceparent(sc: SpanContext) -> bytes:
    return f"00-{_hex_trace(sc.trace_id)}-{_hex_span(sc.span_id)}-{int(sc.trace_flags):02x}".encode()


_ids = RandomIdGenerator()


def _usable(sc: SpanContext) -> SpanContext:
    """The span's context, or a fresh sampled one when tracing is off in this process (an agency
    system without OpenTelemetry): the trace still starts where the record is made."""
    if sc.is_valid:
        return sc
    return SpanContext(
        _ids.generate_trace_id(),
        _ids.generate_span_id(),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


def _context_headers(sc: SpanContext, state: bytes | str | None = None) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = [(_TP, format_traceparent(sc))]
    header = sc.trace_state.to_header() if sc.trace_state else _as_text(state)
    if header:
        out.append((_TS, header.encode()))
    return out


def _trace_headers(headers: Headers) -> tuple[bytes | str | None, bytes | str | None]:
    tp = ts = None
    for k, v in headers or ():
        if k == _TP:
            tp = v
        elif k == _TS:
            ts = v
    return tp, ts


def strip_trace_headers(headers: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """A record's headers without its trace context (before putting the next hop's on)."""
    return [(k, v) for k, v in headers if k != _TP and k != _TS]


def current_trace_id() -> str | None:
    sc = trace.get_current_span().get_span_context()
    return _hex_trace(sc.trace_id) if sc.is_valid else None


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


# --- spans of the data plane ---------------------------------------------------------------------
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


def _links(header_lists: Sequence[Headers]) -> list[Link]:
    links: list[Link] = []
    seen: set[tuple[int, int]] = set()
    parsed: set[bytes | str | None] = set()
    for headers in header_lists:
        if len(links) >= MAX_LINKS:
            break
        tp = _trace_headers(headers)[0]
        if tp in parsed:  # records of one batch mostly share their context: parse each once
            continue
        parsed.add(tp)
        sc = parse_traceparent(tp)
        if sc is not None and (sc.trace_id, sc.span_id) not in seen:
            seen.add((sc.trace_id, sc.span_id))
            links.append(Link(sc))
    return links


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
    """The spans of one consumed batch; see the module docstring.

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


def messages_headers(messages: Sequence[Any]) -> list[Headers]:
    """``msg.headers()`` of confluent-kafka messages (a convenience for callers)."""
    return [m.headers() for m in messages]
