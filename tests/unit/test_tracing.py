"""R14: the tracing layer keeps one trace id per record across hops, batches without per-record spans,
and follows the OpenTelemetry messaging conventions. Spans are checked with the in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from bus.lineage import tracing
from bus.store import Store
from bus.store.models import LineageSpan


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = tracing.attach(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.detach(processor)


def _tp(trace_id: int, span_id: int, flags: int = 1) -> bytes:
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}".encode()


def _trace_of(headers: list[tuple[str, bytes]]) -> str:
    tp = dict(headers)["traceparent"].decode()
    return tp.split("-")[1]


def test_r14_send_span_headers_carry_its_trace_and_messaging_attributes(spans: InMemorySpanExporter) -> None:
    with tracing.send_span("ingress.licences", 3) as send:
        headers = send.headers
    (span,) = spans.get_finished_spans()
    assert span.name == "send ingress.licences"
    assert span.kind is SpanKind.PRODUCER
    assert span.attributes["messaging.system"] == "kafka"
    assert span.attributes["messaging.operation.type"] == "send"
    assert span.attributes["messaging.destination.name"] == "ingress.licences"
    assert span.attributes["messaging.batch.message_count"] == 3
    assert _trace_of(headers) == f"{span.context.trace_id:032x}" == send.trace_id
    ctx = trace.get_current_span(tracing.extract(headers)).get_span_context()
    assert ctx.trace_id == span.context.trace_id and ctx.span_id == span.context.span_id


def test_r14_consumed_batch_makes_one_span_per_trace_as_a_child_of_the_sender(
    spans: InMemorySpanExporter,
) -> None:
    a, b = 0xA1, 0xB2
    batch = [
        [("traceparent", _tp(a, 1))],
        [("traceparent", _tp(a, 1))],
        [("traceparent", _tp(a, 2))],  # a second sender in trace a: a link
        [("traceparent", _tp(b, 3))],
        [("bus-record-id", b"r5")],  # no context: joins a span of its own trace
    ]
    with tracing.consume_batch(
        "process",
        "ingress.licences",
        batch,
        group="validator",
        positions=[(0, 10), (0, 11), (0, 12), (0, 13), (0, 14)],
    ) as tb:
        trace_ids = [tb.trace_id(i) for i in range(5)]
        derived = [_trace_of(tb.headers(i)) for i in range(5)]
    finished = {s.context.trace_id: s for s in spans.get_finished_spans()}
    assert len(finished) == 3
    sa, sb = finished[a], finished[b]
    assert sa.parent.span_id == 1 and [link.context.span_id for link in sa.links] == [2]
    assert sa.attributes["messaging.batch.message_count"] == 3
    assert sb.parent.span_id == 3 and "messaging.batch.message_count" not in sb.attributes  # one message
    assert sa.kind is SpanKind.CONSUMER and sa.name == "process ingress.licences"
    assert sa.attributes["messaging.consumer.group.name"] == "validator"
    assert sa.attributes["messaging.destination.partition.id"] == "0"
    assert sa.attributes["messaging.kafka.offset"] == 10
    assert trace_ids[:4] == [f"{a:032x}"] * 3 + [f"{b:032x}"]
    assert derived[:4] == trace_ids[:4]  # records derived from a record keep its trace id
    assert derived[4] == trace_ids[4] not in (f"{a:032x}", f"{b:032x}")
    # the next hop's parent is this hop's span
    assert dict(tb.headers(0))["traceparent"].decode().split("-")[2] == f"{sa.context.span_id:016x}"


def test_r14_a_batch_of_many_traces_is_capped_and_still_keeps_every_trace_id(
    spans: InMemorySpanExporter,
) -> None:
    n = tracing.MAX_GROUP_SPANS + 9
    batch = [[("traceparent", _tp(1000 + i, 7))] for i in range(n)]
    with tracing.consume_batch("process", "data.x", batch) as tb:
        derived = [_trace_of(tb.headers(i)) for i in range(n)]
    finished = spans.get_finished_spans()
    assert len(finished) == tracing.MAX_GROUP_SPANS + 1  # never one span per record
    assert derived == [f"{1000 + i:032x}" for i in range(n)]
    shared = [s for s in finished if s.context.trace_id not in range(1000, 1000 + n)]
    assert len(shared) == 1 and len(shared[0].links) == 9


def test_r14_unsampled_records_keep_their_trace_id_without_recording_spans(
    spans: InMemorySpanExporter,
) -> None:
    """Sampling never drops lineage: the trace id flows on although no span is exported."""
    batch = [[("traceparent", _tp(0xC3, 9, flags=0))]]
    with tracing.consume_batch("process", "data.x", batch) as tb:
        headers = tb.headers(0)
        tid = tb.trace_id(0)
    assert spans.get_finished_spans() == ()
    assert tid == f"{0xC3:032x}" == _trace_of(headers)
    assert dict(headers)["traceparent"].endswith(b"-00")


def test_r14_tracestate_travels_with_the_trace(spans: InMemorySpanExporter) -> None:
    batch = [[("traceparent", _tp(0xD4, 5)), ("tracestate", b"agency=psb")]]
    with tracing.consume_batch("process", "data.x", batch) as tb:
        headers = dict(tb.headers(0))
    assert headers["tracestate"] == b"agency=psb"


def test_r14_receive_span_links_to_the_records_it_returned(spans: InMemorySpanExporter) -> None:
    batch = [
        [("traceparent", _tp(0xE5, 1))],
        [("traceparent", _tp(0xE6, 2))],
        [("traceparent", _tp(0xE5, 1))],
    ]
    with tracing.receive_span("deliver.g1", batch, group="sub.g1"):
        pass
    (span,) = spans.get_finished_spans()
    assert span.name == "receive deliver.g1" and span.kind is SpanKind.CLIENT
    assert sorted(link.context.trace_id for link in span.links) == [0xE5, 0xE6]
    assert span.attributes["messaging.batch.message_count"] == 3


def test_r14_a_failed_batch_marks_its_spans_as_errors(spans: InMemorySpanExporter) -> None:
    with (
        pytest.raises(RuntimeError),
        tracing.consume_batch("process", "data.x", [[("traceparent", _tp(7, 7))]]),
    ):
        raise RuntimeError("store down")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code.name == "ERROR"


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"garbage",
        b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01",  # all-zero trace id
        b"00-" + b"a" * 32 + b"-" + b"0" * 16 + b"-01",  # all-zero span id
        b"ff-" + b"a" * 32 + b"-" + b"1" * 16 + b"-01",  # forbidden version
        b"00-" + b"g" * 32 + b"-" + b"1" * 16 + b"-01",  # not hex
        b"00-" + b"a" * 31 + b"-" + b"1" * 17 + b"-01",  # wrong lengths
    ],
)
def test_r14_malformed_traceparent_is_ignored(value: bytes | None) -> None:
    assert tracing.parse_traceparent(value) is None


@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.sampled_from([0, 1]))
def test_r14_traceparent_round_trips(trace_id: int, span_id: int, flags: int) -> None:
    sc = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    parsed = tracing.parse_traceparent(tracing.format_traceparent(sc))
    assert parsed is not None
    assert (parsed.trace_id, parsed.span_id, int(parsed.trace_flags)) == (trace_id, span_id, flags)


def test_r14_lineage_span_processor_keeps_bus_spans_in_the_store(sqlite_url: str) -> None:
    """Embedded stack without a collector: the bus's spans, and the HTTP spans of requests that made
    some, land in lineage_spans; other HTTP requests and other libraries' spans do not."""
    store = Store(sqlite_url).start()
    processor = tracing.attach(tracing.LineageSpanProcessor(store))
    try:
        http = trace.get_tracer("opentelemetry.instrumentation.fastapi")
        post = http.start_as_current_span("POST /v1/datasets/{dataset_id}/records", kind=SpanKind.SERVER)
        with post, tracing.send_span("ingress.x", 2) as send:
            trace_id = send.trace_id
        with http.start_as_current_span("GET /v1/datasets", kind=SpanKind.SERVER):
            pass  # a read: no bus span, not lineage
        other = trace.get_tracer("somebody.else").start_span("not lineage")
        other.end()
        assert processor.force_flush(5_000)
    finally:
        tracing.detach(processor)
        processor.shutdown()
    with store.session() as s:
        rows = s.query(LineageSpan).order_by(LineageSpan.start_at).all()
    store.close()
    assert [(r.trace_id, r.name, r.kind) for r in rows] == [
        (trace_id, "POST /v1/datasets/{dataset_id}/records", "server"),
        (trace_id, "send ingress.x", "producer"),
    ]
    assert rows[1].attributes["messaging.destination.name"] == "ingress.x"
    assert rows[1].parent_span_id == rows[0].span_id


def test_r14_otlp_endpoint_gets_the_traces_path() -> None:
    assert tracing.otlp_traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert tracing.otlp_traces_url("http://c:4318/v1/traces/") == "http://c:4318/v1/traces"


def test_r14_sdk_publisher_makes_one_send_span_per_flush_not_per_record(spans: InMemorySpanExporter) -> None:
    send = tracing.OpenSend("ingress.x", max_records=3)
    first = [send.headers() for _ in range(5)]  # 3 + 2: the cap starts a second batch
    send.end()
    again = send.headers()
    send.end()
    finished = spans.get_finished_spans()
    assert [s.attributes.get("messaging.batch.message_count") for s in finished] == [3, 2, None]
    assert {_trace_of(h) for h in first[:3]} == {f"{finished[0].context.trace_id:032x}"}
    assert _trace_of(first[3]) == _trace_of(first[4]) != _trace_of(first[0])
    assert _trace_of(again) == f"{finished[2].context.trace_id:032x}"


def test_r14_sdk_publisher_joins_the_callers_current_trace(spans: InMemorySpanExporter) -> None:
    send = tracing.OpenSend("ingress.x")
    with tracing.tracer().start_as_current_span("agency handles a form") as app:
        headers = send.headers()
    send.end()
    sent = next(s for s in spans.get_finished_spans() if s.name == "send ingress.x")
    assert sent.parent is not None and sent.parent.span_id == app.get_span_context().span_id
    assert _trace_of(headers) == f"{app.get_span_context().trace_id:032x}"


def test_r14_without_a_tracer_provider_the_sdk_still_starts_a_valid_trace() -> None:
    """An agency process that never set up OpenTelemetry: records still carry a usable traceparent."""
    sc = tracing._usable(trace.INVALID_SPAN_CONTEXT)
    parsed = tracing.parse_traceparent(tracing.format_traceparent(sc))
    assert parsed is not None and parsed.trace_id == sc.trace_id and parsed.trace_flags.sampled


def test_r14_tracing_exports_otlp_when_a_collector_is_configured(sqlite_url: str, tmp_path: Any) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from bus.settings import Settings

    store = Store(sqlite_url).start()
    try:
        otlp = tracing.Tracing(
            Settings(data_dir=tmp_path, otel_exporter_otlp_endpoint="http://collector:4318"), store
        )
        embedded = tracing.Tracing(Settings(data_dir=tmp_path), store)
        assert otlp.destination == "otlp http://collector:4318/v1/traces"
        assert embedded.destination == "lineage store"
        otlp.start()
        embedded.start()
        try:
            assert isinstance(otlp.processor, BatchSpanProcessor)
            assert isinstance(otlp.processor.span_exporter, OTLPSpanExporter)
            assert isinstance(embedded.processor, tracing.LineageSpanProcessor)
        finally:
            otlp.stop()
            embedded.stop()
    finally:
        store.close()
