"""What the data plane knows about agencies, datasets and grants at one policy version (pure data).

Read from the store in one go by ``bus.exchange.policy_cache``; every data-plane decision
(``bus.policy.batch``) is a function of one snapshot, so a batch is decided against one consistent view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bus.policy.decision import deliverable


@dataclass(frozen=True)
class AgencyState:
    id: str
    suspended: bool
    signing_secret: bytes


@dataclass(frozen=True)
class DatasetState:
    id: str
    owner_id: str
    status: str
    attribute: str
    suspended: bool
    schema_version: int
    schemas: dict[int, dict[str, Any]]  # version -> schema JSON

    @property
    def schema(self) -> dict[str, Any]:
        return self.schemas[self.schema_version]


@dataclass(frozen=True)
class GrantState:
    id: str
    dataset_id: str
    agency_id: str
    fields: tuple[str, ...]
    unmasked_fields: tuple[str, ...]
    scenario_code: str
    status: str
    valid_until: datetime | None
    version: int
    active_since_ms: int = 0  # records accepted before the grant became active are not delivered


@dataclass
class PolicySnapshot:
    version: int
    agencies: dict[str, AgencyState]
    datasets: dict[str, DatasetState]
    grants: dict[str, GrantState]
    grants_by_dataset: dict[str, list[GrantState]] = field(default_factory=dict)

    def deliverable_grants(self, dataset_id: str, now: datetime) -> list[GrantState]:
        """The grants that deliver the dataset's records now: ``decision.deliverable`` for each (R14 fail safe)."""
        ds = self.datasets.get(dataset_id)
        if ds is None:
            return []
        owner = self.agencies.get(ds.owner_id)
        out = []
        for g in self.grants_by_dataset.get(dataset_id, ()):
            grantee = self.agencies.get(g.agency_id)
            if deliverable(
                g.status, g.valid_until, now,
                grantee_suspended=grantee is None or grantee.suspended,
                dataset_suspended=ds.suspended,
                owner_suspended=owner is None or owner.suspended,
                dataset_status=ds.status,
            ):
                out.append(g)
        return out
