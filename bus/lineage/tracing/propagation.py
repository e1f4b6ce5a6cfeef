"""W3C trace context in Kafka record headers: reading, writing and parsing ``traceparent``/``tracestate``.

It exists so that a record keeps its trace id from publisher to consumer across every hop: the
produce and consume spans read a record's context from its headers and put the next hop's on the
records they make. The batch path parses ``traceparent`` by hand (no Context objects, no regex);
``extract``/``inject`` go through the configured propagators.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, SpanContext, TraceFlags

from bus.vocab import Header

MAX_LINKS = 32  # links per span
Headers = Sequence[tuple[str, bytes | str | None]] | None

_TP = Header.TRACEPARENT
_TS = Header.TRACESTATE
TRACE_HEADERS = frozenset({_TP, _TS})


def _hex_trace(trace_id: int) -> str:
    return f"{trace_id:032x}"


def _hex_span(span_id: int) -> str:
    return f"{span_id:016x}"


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


def current_trace_id() -> str | None:
    sc = trace.get_current_span().get_span_context()
    return _hex_trace(sc.trace_id) if sc.is_valid else None
