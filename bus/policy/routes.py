"""Per-grant delivery routes (R7, R8, R12): the compiled view of a dataset for one grant version.

A ``Route`` projects a record to the granted fields, masks personal fields and pseudonymises sensitive
ones with the grant's key; grants with the same rules on the same schema version share one projection
(``SharedView``), only the pseudonyms differ. Compiled once per (grant, grant version, schema version).
Pure code: the master secret comes in, pseudonym keys are derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bus.policy.projection import (
    SharedView,
    ViewEncoder,
    compile_view_encoder,
    field_rules,
    rules_key,
    shared_view,
)
from bus.policy.pseudonyms import grant_key, grant_tag
from bus.policy.snapshot import DatasetState, GrantState, PolicySnapshot


@dataclass(frozen=True)
class Route:
    """Everything needed to deliver one dataset record under one grant, compiled once per grant version."""

    grant: GrantState
    shared: SharedView  # the same object for every grant with the same rules on the same schema version
    encode: ViewEncoder  # (record, shared.parts(record)) -> the encoded view (fastavro's bytes)


class RouteTable:
    """Compiled routes, reused across batches while neither the grant nor the schema changes."""

    def __init__(self, master_secret: bytes) -> None:
        self._master = master_secret
        self._compiled: dict[tuple[str, int, int], Route] = {}
        self._shared: dict[tuple[Any, ...], SharedView] = {}

    def compile(self, ds: DatasetState, grant: GrantState) -> Route:
        key = (grant.id, grant.version, ds.schema_version)
        route = self._compiled.get(key)
        if route is None:
            rules = field_rules(ds.schema, grant.fields, grant.unmasked_fields)
            skey = (ds.id, ds.schema_version, rules_key(rules))
            view = self._shared.get(skey)
            if view is None:
                view = self._shared[skey] = shared_view(ds.schema, rules)
            encode = compile_view_encoder(view, grant_key(self._master, grant.id), grant_tag(self._master, grant.id))
            route = self._compiled[key] = Route(grant, view, encode)
        return route

    def for_dataset(self, snap: PolicySnapshot, dataset_id: str, now_ms: int) -> list[Route]:
        """The routes of every grant that delivers the dataset now (``PolicySnapshot.deliverable_grants``)."""
        ds = snap.datasets.get(dataset_id)
        if ds is None:
            return []
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        return [self.compile(ds, g) for g in snap.deliverable_grants(dataset_id, now)]
