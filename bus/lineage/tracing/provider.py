"""The process-wide OpenTelemetry tracer provider and the bus's tracer.

It exists so that every running bus in a process (and a test's in-memory exporter) can receive the
spans of one global ``TracerProvider``: the provider gets a single fan-out processor, and processors
are attached to and detached from it at run time.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

log = logging.getLogger(__name__)

TRACER_NAME = "databus"


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


def instrument_app(app: Any) -> None:
    """HTTP server spans for the gateway (opentelemetry-instrumentation-fastapi), health checks excluded."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    install()
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz", exclude_spans=["receive", "send"])
