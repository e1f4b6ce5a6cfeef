"""Agencies and their keys (R14, R17): who may catalogue, review, audit or operate.

The API key is returned once, at creation; the store keeps only its SHA-256 hash, a short prefix to
recognise it, and the record-signing secret derived from it (the data plane checks signatures with it).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bus.catalog.requests import AgencyIn
from bus.context import BusContext
from bus.errors import AgencyExists, AgencyNotFound
from bus.exchange.keyring import wrap_signing_secret
from bus.keys import hash_key, new_api_key, signing_secret_for
from bus.lineage import audit
from bus.store.models import Agency


def agency_json(a: Agency) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "region": a.region,
        "level": a.level,
        "roles": list(a.roles),
        "key_prefix": a.key_prefix,
        "suspended": a.suspended,
        "created_at": a.created_at.astimezone(UTC).isoformat(),
    }


def create_agency(ctx: BusContext, actor: str, body: AgencyIn) -> dict[str, Any]:
    """Register an agency; the response is the only place its API key ever appears."""
    roles = list(dict.fromkeys(body.roles))
    key = new_api_key(body.id)
    try:
        with ctx.store.session() as s:
            if s.get(Agency, body.id) is not None:
                raise AgencyExists(f"agency '{body.id}' already exists; choose another id")
            agency = Agency(
                id=body.id,
                name=body.name.strip(),
                region=body.region,
                level=body.level,
                roles=roles,
                key_hash=hash_key(key),
                key_prefix=key[:10],
                signing_secret=wrap_signing_secret(ctx.master_secret, body.id, signing_secret_for(key)),
            )
            s.add(agency)
            s.flush()
            audit.append(
                s,
                actor,
                "agency.created",
                "agency",
                agency.id,
                {
                    "name": agency.name,
                    "region": agency.region,
                    "level": agency.level,
                    "roles": roles,
                    "key_prefix": agency.key_prefix,
                },
            )
    except IntegrityError:
        raise AgencyExists(f"agency '{body.id}' already exists; choose another id") from None
    out = agency_json(agency)
    del out["key_prefix"], out["suspended"]
    out["api_key"] = key
    return out


def list_agencies(ctx: BusContext) -> list[dict[str, Any]]:
    with ctx.store.session() as s:
        return [agency_json(a) for a in s.scalars(select(Agency).order_by(Agency.id))]


def get_agency(ctx: BusContext, agency_id: str) -> dict[str, Any]:
    with ctx.store.session() as s:
        a = s.get(Agency, agency_id)
        if a is None:
            raise AgencyNotFound(f"no agency '{agency_id}'")
        return agency_json(a)
