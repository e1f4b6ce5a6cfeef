"""The gateway application: one FastAPI app, routers per concept, errors mapped in one place."""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI

from bus import __version__
from bus.context import BusContext
from bus.gateway import health, problems
from bus.gateway.guards import BodyLimit, RejectNul

log = logging.getLogger(__name__)

# Routers are listed by module name so each concept lives in its own file (bus/gateway/routes_*.py).
ROUTERS = [
    "bus.gateway.routes_info",  # where the broker is, for the SDK
    "bus.gateway.routes_agencies",  # agencies and keys
    "bus.gateway.routes_systems",  # receiving systems of agencies (egress control)
    "bus.gateway.routes_catalog",  # catalogue entries, review, schema versions, stats
    "bus.gateway.routes_audit",  # audit events and verify
    "bus.gateway.routes_grants",  # grants, decisions, revocation, view schema
    "bus.gateway.routes_records",  # HTTP publishing
    "bus.gateway.routes_subscribe",  # records with a cursor, server-sent events
    "bus.gateway.routes_attribution",  # leak attribution
    "bus.gateway.routes_incidents",  # incidents
    "bus.gateway.routes_emergency",  # emergency suspend / resume
    "bus.gateway.routes_lineage",  # record and dataset lineage
    "bus.gateway.routes_usage",  # usage metering
    "bus.gateway.routes_connectors",  # connectors
    "bus.gateway.routes_subjects",  # who received data about a person or enterprise
    "bus.console.routes",  # the web console at /console, /problems/{code}, the OpenLineage facet schema
    "bus.gateway.routes_operations",  # authorised operation (R11): analysis rules, operations
]


def create_app(ctx: BusContext) -> FastAPI:
    app = FastAPI(
        title="Data exchange bus",
        version=__version__,
        description="Sharing gateway of the data exchange bus. Errors are application/problem+json.",
    )
    app.state.ctx = ctx
    problems.install(app)
    app.add_middleware(RejectNul)
    app.add_middleware(BodyLimit, limit=ctx.settings.max_request_bytes)  # outermost: before any parsing
    from bus.lineage.tracing import instrument_app

    instrument_app(app)  # HTTP server spans (opentelemetry-instrumentation-fastapi)
    app.include_router(health.router)
    for name in ROUTERS:
        app.include_router(importlib.import_module(name).router)
    return app
