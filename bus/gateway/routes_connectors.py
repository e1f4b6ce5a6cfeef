"""Connectors (admin): register, start, stop, watch and delete the connectors the runtime runs.

A source is bound to an approved dataset of its agency (R13) and publishes as that agency; a sink is
bound to an active grant of its agency and may only write to a receiving system registered to the
grantee, never abroad for a domestic-only dataset (R8, R16). Each kind validates its own config; secrets
(passwords, tokens, HMAC keys, passwords inside URLs) are stored but never shown back. Every change is
an audit event.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from bus.errors import (
    AgencyNotFound,
    CatalogNotFound,
    ConnectorBindingInvalid,
    ConnectorConfigInvalid,
    ConnectorExists,
    ConnectorNotFound,
    DatasetNotApproved,
    GrantNotActive,
    NotFound,
)
from bus.gateway.auth import Principal, ctx_of, require, require_admin
from bus.lineage import audit
from bus.store.models import Agency, Connector, Dataset, Grant, SchemaVersion
from bus.vocab import DatasetStatus, GrantStatus, Role
from connectors import registry
from connectors.base import Sink, Source, mask_config, mask_text

router = APIRouter(prefix="/v1/connectors", tags=["connectors"])

# ``connector:<name>`` names the connector in consumption lineage (``via``, 96 characters; migration 0002)
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_RESERVED = {"kinds"}
_NAME_PATH = Path(min_length=1, max_length=64, pattern=r"^[^\x00/]+$")


class ConnectorIn(BaseModel):
    name: str = Field(description="lower-case letters, digits and '-', at most 63 characters")
    kind: str = Field(description="one of GET /v1/connectors/kinds")
    agency: str = Field(min_length=1, max_length=64, description="the agency the connector acts for")
    dataset: str | None = Field(None, max_length=64, description="sources: the catalogued dataset it feeds")
    grant: str | None = Field(
        None, max_length=64, description="sinks: the grant whose delivered view it writes"
    )
    config: dict[str, Any] = Field(default_factory=dict, description="the kind's settings")
    start: bool = Field(False, description="start it at once")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v) or v in _RESERVED:
            raise ValueError(
                "a connector name is 1-63 lower-case letters, digits and '-' (not at either end), "
                "and not 'kinds'"
            )
        return v


def connector_json(row: Connector) -> dict[str, Any]:
    """What anyone may see of a connector: config with every secret masked."""
    role = registry.connector_class(row.kind).role if row.kind in registry.KINDS else "unknown"
    return {
        "name": row.name,
        "kind": row.kind,
        "role": role,
        "agency": row.agency_id,
        "dataset": row.dataset_id,
        "grant": row.grant_id,
        "config": mask_config(row.config or {}),
        "desired_state": row.desired_state,
        "status": mask_config(row.status or {}),
        "position": row.position or {},
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }


def _bind_source(s: Session, body: ConnectorIn, instance: Source) -> dict[str, Any]:
    if body.grant:
        raise ConnectorBindingInvalid("a source feeds a dataset: give 'dataset', not 'grant'")
    if not body.dataset:
        raise ConnectorBindingInvalid("a source must be bound to a catalogued dataset: give 'dataset' (R13)")
    ds = s.get(Dataset, body.dataset)
    if ds is None:
        raise CatalogNotFound(
            f"dataset {body.dataset} is not in the catalogue; a source feeds only a catalogued dataset (R13)"
        )
    if ds.owner_id != body.agency:
        raise ConnectorBindingInvalid(
            f"dataset {ds.id} belongs to {ds.owner_id}, not {body.agency}: a source "
            "publishes as the dataset's owner (R13)"
        )
    if ds.status != DatasetStatus.APPROVED:
        raise DatasetNotApproved(
            f"dataset {ds.id} is {ds.status}; only an approved dataset takes records (R13)"
        )
    sv = s.get(SchemaVersion, (ds.id, ds.schema_version))
    check = getattr(instance, "check_schema", None)
    if sv is not None and check is not None:
        try:
            check(dict(sv.schema))
        except ValueError as exc:
            detail = mask_text(str(exc))
            raise ConnectorConfigInvalid(
                f"invalid {body.kind} config: {detail}", errors=[{"field": "config", "message": detail}]
            ) from None
    return {"dataset_id": ds.id, "grant_id": None}


def _bind_sink(s: Session, body: ConnectorIn, instance: Sink) -> dict[str, Any]:
    from bus.gateway.routes_systems import check_egress

    if not body.grant:
        raise ConnectorBindingInvalid("a sink writes a grant's delivered view: give 'grant' (R8)")
    grant = s.get(Grant, body.grant)
    if grant is None:
        raise NotFound(f"grant {body.grant} does not exist", code="grant.not_found")
    if body.dataset and body.dataset != grant.dataset_id:
        raise ConnectorBindingInvalid(
            f"grant {grant.id} is on dataset {grant.dataset_id}, not {body.dataset}"
        )
    if grant.agency_id != body.agency:
        raise ConnectorBindingInvalid(
            f"grant {grant.id} is held by {grant.agency_id}, not {body.agency}: a grant "
            "is bound to its grantee and a sink writes only for it (R8)"
        )
    if grant.status != GrantStatus.ACTIVE:
        raise GrantNotActive(f"grant {grant.id} is {grant.status}; a sink needs an active grant")
    check_egress(s, instance.destination(), grant.id)  # R8, R16: EgressRefused names the reason
    return {"dataset_id": grant.dataset_id, "grant_id": grant.id}


def _row(s: Session, name: str) -> Connector:
    row = s.get(Connector, name)
    if row is None:
        raise ConnectorNotFound(f"no connector named {name!r}; GET /v1/connectors lists them")
    return row


@router.get("/kinds", summary="Connector kinds and the JSON schema of their configs")
def list_kinds(principal: Principal = Depends(require(Role.AUDITOR))) -> dict[str, Any]:
    out = []
    for kind in registry.kinds():
        cls = registry.connector_class(kind)
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        out.append(
            {
                "kind": kind,
                "role": cls.role,
                "doc": doc[0] if doc else "",
                "config_schema": cls.Config.model_json_schema(),
            }
        )
    return {"kinds": out}


@router.post("", status_code=201, summary="Register a connector (admin)")
def register(
    body: ConnectorIn, request: Request, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    cls = registry.connector_class(body.kind)  # connector.unknown_kind
    config = cls.validate_config(body.config)  # connector.config_invalid, values never echoed
    instance = cls(body.name, config)
    with ctx_of(request).store.session() as s:
        if s.get(Connector, body.name) is not None:
            raise ConnectorExists(
                f"a connector named {body.name!r} exists; delete it first or choose another name"
            )
        if s.get(Agency, body.agency) is None:
            raise AgencyNotFound(f"agency {body.agency} is not registered")
        if isinstance(instance, Source):
            binding = _bind_source(s, body, instance)
        else:
            assert isinstance(instance, Sink)
            binding = _bind_sink(s, body, instance)
        row = Connector(
            name=body.name,
            kind=body.kind,
            agency_id=body.agency,
            config=config.model_dump(mode="json"),
            desired_state="running" if body.start else "stopped",
            position={},
            status={"state": "stopped"},
            **binding,
        )
        s.add(row)
        s.flush()
        audit.append(
            s,
            principal.id,
            "connector.registered",
            "connector",
            row.name,
            {
                "kind": row.kind,
                "agency": row.agency_id,
                "dataset": row.dataset_id,
                "grant": row.grant_id,
                "config": mask_config(row.config),
                "start": body.start,
            },
        )
        return connector_json(row)


@router.get("", summary="Every connector with its status (admin, auditor)")
def list_connectors(
    request: Request, principal: Principal = Depends(require(Role.AUDITOR))
) -> dict[str, Any]:
    with ctx_of(request).store.session() as s:
        rows = s.scalars(select(Connector).order_by(Connector.name)).all()
        return {"connectors": [connector_json(r) for r in rows]}


@router.get("/{name}", summary="One connector: config (secrets masked), desired state, status, position")
def get_connector(
    request: Request, name: str = _NAME_PATH, principal: Principal = Depends(require(Role.AUDITOR))
) -> dict[str, Any]:
    with ctx_of(request).store.session() as s:
        return connector_json(_row(s, name))


def _set_state(request: Request, name: str, principal: Principal, state: str, action: str) -> dict[str, Any]:
    with ctx_of(request).store.session() as s:
        row = _row(s, name)
        before = row.desired_state
        row.desired_state = state
        if state == "running" and (row.status or {}).get("state") == "failed":
            row.status = {**row.status, "state": "starting"}
        audit.append(s, principal.id, action, "connector", name, {"from": before, "to": state})
        s.flush()
        return connector_json(row)


@router.post("/{name}/start", summary="Run the connector (admin); also restarts a failed one")
def start(
    request: Request, name: str = _NAME_PATH, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    return _set_state(request, name, principal, "running", "connector.started")


@router.post("/{name}/stop", summary="Stop the connector at its next batch boundary (admin)")
def stop(
    request: Request, name: str = _NAME_PATH, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    return _set_state(request, name, principal, "stopped", "connector.stopped")


@router.delete("/{name}", summary="Stop and remove the connector (admin)")
def delete(
    request: Request, name: str = _NAME_PATH, principal: Principal = Depends(require_admin)
) -> dict[str, Any]:
    with ctx_of(request).store.session() as s:
        row = _row(s, name)
        out = connector_json(row)
        s.delete(row)
        audit.append(
            s,
            principal.id,
            "connector.deleted",
            "connector",
            name,
            {"kind": out["kind"], "agency": out["agency"]},
        )
        return {"deleted": out}
