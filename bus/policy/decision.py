"""The grant decision (R5, R7, R10, R12) and the grant lifecycle, as pure functions of their inputs.

``decide`` answers a grant request: refused with a stable code, granted at once (``active``), or
waiting for the owner (``pending``). ``transition`` applies an owner's decision, a revocation or an
expiry. ``check_readable`` says whether a grant may deliver or be read right now. No I/O: the grant
service and the data plane feed them facts read from the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bus.errors import (
    AuthForbidden,
    BadState,
    BusError,
    DatasetNotApproved,
    FieldsNotShareable,
    GrantNotActive,
    LegalBasisRequired,
    NotEligible,
    NotShared,
    RequestInvalid,
    ScenarioRequired,
    Suspended,
)
from bus.vocab import DatasetStatus, GrantStatus, SharingAttribute

DEFAULT_VALIDITY = timedelta(days=365)
SCENARIO_CODE_MAX = 64


@dataclass(frozen=True)
class DatasetFacts:
    """What the decision needs to know about the requested dataset."""

    id: str
    owner_id: str
    status: str
    attribute: str
    fields: Sequence[str]  # every top-level field of the current schema, in schema order
    shareable_fields: Sequence[str] | None = None  # None: every field (conditional entries may narrow it)
    eligible_agencies: Sequence[str] | None = None  # None or empty: every agency
    suspended: bool = False


@dataclass(frozen=True)
class GrantRequest:
    requester_id: str
    dataset_id: str
    fields: Sequence[str]
    scenario_code: str | None
    scenario_description: str | None
    legal_basis: str | None
    valid_until: datetime | None = None
    unmasked_fields: Sequence[str] = ()


@dataclass(frozen=True)
class Decision:
    """The outcome of a request that was not refused."""

    status: GrantStatus  # active or pending
    fields: tuple[str, ...]  # normalised: schema order, no duplicates
    unmasked_fields: tuple[str, ...]
    valid_until: datetime
    reason: str  # why active or why pending, for the audit log and the requester


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


def shareable_set(ds: DatasetFacts) -> list[str]:
    """The fields any grant on ``ds`` may name (R5: conditional entries may share only part of the data)."""
    if ds.attribute == SharingAttribute.CONDITIONAL and ds.shareable_fields:
        allowed = set(ds.shareable_fields)
        return [f for f in ds.fields if f in allowed]
    return list(ds.fields)


def is_eligible(ds: DatasetFacts, agency_id: str) -> bool:
    if ds.attribute == SharingAttribute.CONDITIONAL and ds.eligible_agencies:
        return agency_id in ds.eligible_agencies
    return ds.attribute != SharingAttribute.NONE


def decide(req: GrantRequest, ds: DatasetFacts, now: datetime) -> Decision:
    """Refuse (raise a ``BusError``) or grant (``active`` / ``pending``) one grant request.

    Order: what the request must state (R7: scenario, legal basis), then what the dataset allows
    (R13 approved, R5 attribute, eligibility, shareable fields), then what needs the owner (R10
    conditional data; R12 raw values of protected fields).
    """
    if _blank(req.scenario_code) or _blank(req.scenario_description):
        raise ScenarioRequired("state the application scenario: scenario.code and scenario.description "
                               "(what duty the data serves), R7")
    if len((req.scenario_code or "").strip()) > SCENARIO_CODE_MAX:
        raise RequestInvalid(f"scenario.code is at most {SCENARIO_CODE_MAX} characters")
    if _blank(req.legal_basis):
        raise LegalBasisRequired("state the legal basis of the duty the data serves (legal_basis), R7")
    if ds.status != DatasetStatus.APPROVED:
        raise DatasetNotApproved(f"dataset {ds.id} is {ds.status}; only approved datasets can be requested "
                                 "(R13)")
    if ds.suspended:
        raise Suspended(f"dataset {ds.id} is suspended; requests are refused until it is resumed")
    if ds.attribute == SharingAttribute.NONE:
        raise NotShared(f"dataset {ds.id} is not shared (R5); its catalogue entry gives the reason and legal "
                        "basis, ask its owner about a derived or conditional dataset")
    if not is_eligible(ds, req.requester_id):
        raise NotEligible(f"agency {req.requester_id} is not among the agencies dataset {ds.id} is shared "
                          f"with ({', '.join(ds.eligible_agencies or [])})")
    if not req.fields:
        raise RequestInvalid("name the fields you need (minimum necessary, R7); 'fields' is empty")
    allowed = shareable_set(ds)
    outside = [f for f in dict.fromkeys(req.fields) if f not in allowed]
    if outside:
        raise FieldsNotShareable(f"fields {', '.join(outside)} are not shareable on dataset {ds.id}; "
                                 f"shareable fields: {', '.join(allowed)}", fields=outside, shareable=allowed)
    requested = set(req.fields)
    fields = tuple(f for f in ds.fields if f in requested)
    stray = [f for f in dict.fromkeys(req.unmasked_fields) if f not in requested]
    if stray:
        raise RequestInvalid(f"unmasked_fields {', '.join(stray)} are not among the requested fields")
    unmasked_set = set(req.unmasked_fields)
    unmasked = tuple(f for f in fields if f in unmasked_set)
    valid_until = req.valid_until if req.valid_until is not None else now + DEFAULT_VALIDITY
    if valid_until <= now:
        raise RequestInvalid(f"valid_until {valid_until.isoformat()} is in the past; a grant must end in the "
                             "future")

    if ds.attribute == SharingAttribute.CONDITIONAL:
        return Decision(GrantStatus.PENDING, fields, unmasked, valid_until,
                        f"conditional dataset: waits for the decision of its owner {ds.owner_id} (R10)")
    if unmasked:
        return Decision(GrantStatus.PENDING, fields, unmasked, valid_until,
                        f"raw values of {', '.join(unmasked)} need the approval of the owner {ds.owner_id} "
                        "(R12)")
    return Decision(GrantStatus.ACTIVE, fields, unmasked, valid_until,
                    "unconditional dataset: granted at once (R10)")


# --- lifecycle ----------------------------------------------------------------------------------
APPROVE, DENY, REVOKE, EXPIRE = "approve", "deny", "revoke", "expire"

_ALLOWED: dict[str, frozenset[str]] = {
    APPROVE: frozenset({GrantStatus.PENDING}),
    DENY: frozenset({GrantStatus.PENDING}),
    REVOKE: frozenset({GrantStatus.PENDING, GrantStatus.ACTIVE, GrantStatus.SUSPENDED}),
    EXPIRE: frozenset({GrantStatus.ACTIVE, GrantStatus.SUSPENDED, GrantStatus.PENDING}),
}
_TARGET = {APPROVE: GrantStatus.ACTIVE, DENY: GrantStatus.DENIED, REVOKE: GrantStatus.REVOKED,
           EXPIRE: GrantStatus.EXPIRED}


def transition(status: str, action: str, *, actor_id: str, owner_id: str,
               is_admin: bool = False) -> GrantStatus:
    """The grant status after ``action`` by ``actor_id``; refuses who may not act and what may not happen.

    Decisions (approve/deny) belong to the dataset owner (R10); revocation to the owner or an admin;
    expiry to the bus itself (actor ``bus``).
    """
    if action not in _TARGET:
        raise RequestInvalid(f"unknown action {action!r}; use approve, deny or revoke")
    if action in (APPROVE, DENY) and actor_id != owner_id:
        raise AuthForbidden(f"only the dataset owner {owner_id} decides on grants of its dataset (R10)")
    if action == REVOKE and actor_id != owner_id and not is_admin:
        raise AuthForbidden(f"only the dataset owner {owner_id} or an admin may revoke this grant")
    if status not in _ALLOWED[action]:
        raise BadState(f"grant is {status}; {action} applies only to a grant that is "
                       f"{' or '.join(sorted(_ALLOWED[action]))}")
    return _TARGET[action]


def grant_refusal(status: str, valid_until: datetime | None, now: datetime, *,
                  grantee_suspended: bool = False, dataset_suspended: bool = False,
                  owner_suspended: bool = False, dataset_status: str = DatasetStatus.APPROVED,
                  grant_id: str = "") -> BusError | None:
    """Why the grant may not deliver or be read now (``suspended`` or ``grant.not_active``), or ``None``.

    The one delivery rule: the pipeline (``deliverable``), the HTTP and SSE reads, the SDK's gateway check
    and the sink connectors (``check_readable``) all ask it.
    """
    if status == GrantStatus.SUSPENDED or grantee_suspended or dataset_suspended or owner_suspended:
        what = ("the grant" if status == GrantStatus.SUSPENDED else "the consumer agency" if grantee_suspended
                else "the dataset" if dataset_suspended else "the owner agency")
        return Suspended(f"grant {grant_id}: {what} is suspended by the emergency switch; nothing is "
                         "delivered until it is resumed")
    if status != GrantStatus.ACTIVE:
        return GrantNotActive(f"grant {grant_id} is {status}; only an active grant delivers records")
    if dataset_status != DatasetStatus.APPROVED:
        return GrantNotActive(f"grant {grant_id}: its dataset is {dataset_status}; nothing is delivered")
    if valid_until is not None and valid_until <= now:
        return GrantNotActive(f"grant {grant_id} expired at {valid_until.isoformat()}")
    return None


def check_readable(status: str, valid_until: datetime | None, now: datetime, *,
                   grantee_suspended: bool = False, dataset_suspended: bool = False,
                   owner_suspended: bool = False, dataset_status: str = DatasetStatus.APPROVED,
                   grant_id: str = "") -> None:
    """Raise ``grant_refusal``'s answer, if any (the read paths)."""
    refusal = grant_refusal(status, valid_until, now, grantee_suspended=grantee_suspended,
                            dataset_suspended=dataset_suspended, owner_suspended=owner_suspended,
                            dataset_status=dataset_status, grant_id=grant_id)
    if refusal is not None:
        raise refusal


def deliverable(status: str, valid_until: datetime | None, now: datetime, *,
                grantee_suspended: bool = False, dataset_suspended: bool = False,
                owner_suspended: bool = False, dataset_status: str = DatasetStatus.APPROVED) -> bool:
    """``grant_refusal``'s yes/no form (the pipeline, per batch)."""
    return grant_refusal(status, valid_until, now, grantee_suspended=grantee_suspended,
                         dataset_suspended=dataset_suspended, owner_suspended=owner_suspended,
                         dataset_status=dataset_status) is None
