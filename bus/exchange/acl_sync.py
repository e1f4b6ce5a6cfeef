"""Keep Apache Kafka's ACLs equal to the plan of the catalogue and grants (R8, R14).

The plan is pure (`bus.policy.acls`); this is its edge: read the facts from the store, make sure the
broker can hold ACLs at all, compare with ``describe_acls`` and apply the difference (create what is
missing, delete what a managed principal holds beyond the plan). ``sync`` is the one-call hook the grant
and catalogue services run after a committed change when ``BUS_KAFKA_ACLS=true``.

Never on the embedded broker: Tansu 0.6 announces CreateAcls in ApiVersions but answers it with nothing,
and librdkafka then aborts the whole process (exit 134). So the check stops on the embedded profile, on
a broker that does not announce all three ACL APIs (Tansu lacks DeleteAcls), on Tansu's cluster id and on
a broker without an authorizer, before any ACL call is made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import admin as ck
from sqlalchemy import select

from bus.errors import KafkaAclsUnsupported
from bus.exchange.api_versions import ACL_API_KEYS, api_versions
from bus.exchange.kafka import admin
from bus.policy import acls
from bus.settings import Settings
from bus.store.models import Agency, Dataset, Grant

if TYPE_CHECKING:
    from bus.context import BusContext
    from bus.store import Store

log = logging.getLogger(__name__)
_TIMEOUT = 10.0
_sync_lock = threading.Lock()  # one sync at a time per process: each reads the newest committed state


@dataclass(frozen=True)
class BrokerFacts:
    """What the broker said about itself; ``None`` where the check stopped before asking."""

    embedded_profile: bool
    apis: frozenset[int] | None = None
    cluster_id: str | None = None
    authorizer: str | None = None


def support_problem(facts: BrokerFacts) -> str | None:
    """Why the bus must not manage ACLs on this broker, or ``None`` when it may (pure)."""
    if facts.embedded_profile:
        return (
            "the bus runs on the embedded broker (Tansu) profile: it has no ACLs, and create_acls aborts "
            "the process there; records are sealed instead. Manage ACLs on Apache Kafka "
            "(BUS_KAFKA_BOOTSTRAP set, BUS_KAFKA_PROFILE=cluster)"
        )
    if facts.apis is not None:
        missing = [name for name, key in ACL_API_KEYS.items() if key not in facts.apis]
        if missing:
            return f"the broker's ApiVersions lacks {', '.join(missing)}: it cannot hold ACLs"
    if facts.cluster_id is not None and facts.cluster_id.lower().startswith("tansu"):
        return f"the broker is Tansu (cluster id {facts.cluster_id!r}), which has no ACLs"
    if facts.authorizer is not None and not facts.authorizer.strip():
        return "the broker has no authorizer.class.name: ACLs would not be enforced"
    return None


def broker_facts(settings: Settings, bootstrap: str) -> BrokerFacts:
    """Ask in order, stopping at the first answer that already rules ACLs out."""
    facts = BrokerFacts(embedded_profile=settings.embedded_kafka or settings.fast_profile)
    if support_problem(facts):
        return facts
    tls = (settings.kafka_security_protocol or "").endswith("SSL")
    facts = BrokerFacts(False, frozenset(api_versions(bootstrap, tls=tls)))
    if support_problem(facts):
        return facts
    client = admin(bootstrap, settings)
    cluster = client.describe_cluster(request_timeout=_TIMEOUT).result(_TIMEOUT)
    facts = BrokerFacts(False, facts.apis, str(cluster.cluster_id or ""))
    node = cluster.controller or (cluster.nodes[0] if cluster.nodes else None)
    if support_problem(facts) or node is None:  # no broker to ask: treated as "no authorizer"
        return BrokerFacts(False, facts.apis, facts.cluster_id, "" if node is None else None)
    resource = ck.ConfigResource(ck.ResourceType.BROKER, str(node.id))
    configs = client.describe_configs([resource], request_timeout=_TIMEOUT)[resource].result(_TIMEOUT)
    entry = configs.get("authorizer.class.name")
    return BrokerFacts(False, facts.apis, facts.cluster_id, (entry.value or "") if entry else "")


def check_acl_support(settings: Settings, bootstrap: str) -> None:
    """Raise ``KafkaAclsUnsupported`` unless the broker can hold and enforce ACLs."""
    problem = support_problem(broker_facts(settings, bootstrap))
    if problem:
        raise KafkaAclsUnsupported(f"not managing Kafka ACLs: {problem}", bootstrap=bootstrap)


def load_catalogue(store: Store) -> acls.Catalogue:
    """Every agency, dataset and grant, as the plan's plain facts."""
    with store.session() as s:
        agencies = tuple(
            acls.AgencyFact(a.id, frozenset(a.roles or ()), bool(a.suspended))
            for a in s.scalars(select(Agency))
        )
        datasets = tuple(
            acls.DatasetFact(d.id, d.owner_id, d.status, bool(d.suspended))
            for d in s.scalars(select(Dataset))
        )
        grants = tuple(
            acls.GrantFact(g.id, g.dataset_id, g.agency_id, g.status, g.valid_until)
            for g in s.scalars(select(Grant))
        )
    return acls.Catalogue(agencies, datasets, grants)


def current_plan(store: Store, settings: Settings, now: datetime | None = None) -> acls.AclPlan:
    return acls.plan(
        load_catalogue(store),
        now or datetime.now(UTC),
        topic_prefix=settings.topic_prefix,
        bus_user=settings.kafka_sasl_username or "bus",
    )


def to_kafka(b: acls.AclBinding) -> ck.AclBinding:
    return ck.AclBinding(
        ck.ResourceType[b.restype.value],
        b.name,
        ck.ResourcePatternType[b.resource_pattern_type.value],
        b.principal,
        b.host,
        ck.AclOperation[b.operation.value],
        ck.AclPermissionType[b.permission_type.value],
    )


def _member(value: object) -> str:
    """An enum member's name (the stubs also allow the str and int spellings ``AclBinding`` accepts)."""
    return str(getattr(value, "name", value))


def from_kafka(b: ck.AclBinding) -> acls.AclBinding:
    return acls.AclBinding(
        acls.ResourceType(_member(b.restype)),
        b.name,
        acls.PatternType(_member(b.resource_pattern_type)),
        b.principal,
        b.host,
        acls.Operation(_member(b.operation)),
        acls.Permission(_member(b.permission_type)),
    )


def _existing(client: ck.AdminClient) -> list[acls.AclBinding]:
    anything: Any = None  # the filter's "any name / principal / host" (the stubs say str)
    every = ck.AclBindingFilter(
        ck.ResourceType.ANY,
        anything,
        ck.ResourcePatternType.ANY,
        anything,
        anything,
        ck.AclOperation.ANY,
        ck.AclPermissionType.ANY,
    )
    found = client.describe_acls(every, request_timeout=_TIMEOUT).result(_TIMEOUT)
    return [from_kafka(b) for b in found]


def _exact(b: acls.AclBinding) -> ck.AclBindingFilter:
    k = to_kafka(b)
    return ck.AclBindingFilter(
        k.restype, k.name, k.resource_pattern_type, k.principal, k.host, k.operation, k.permission_type
    )


def _wait(futures: Iterable[object]) -> None:
    for fut in futures:
        fut.result(_TIMEOUT)  # type: ignore[attr-defined]


def apply_plan(settings: Settings, bootstrap: str, plan: acls.AclPlan) -> acls.AclDiff:
    """Check the broker, then create the missing bindings and delete the managed extras."""
    check_acl_support(settings, bootstrap)
    client = admin(bootstrap, settings)
    change = acls.diff(plan.bindings, _existing(client), plan.principals)
    if change.create:
        _wait(client.create_acls([to_kafka(b) for b in change.create], request_timeout=_TIMEOUT).values())
    if change.delete:
        _wait(client.delete_acls([_exact(b) for b in change.delete], request_timeout=_TIMEOUT).values())
    return change


def sync(ctx: BusContext, reason: str) -> acls.AclDiff | None:
    """The hook after a committed grant or catalogue change: apply the new plan when ``BUS_KAFKA_ACLS``
    is on. Never raises (the change is committed already); a failure is logged, and the next change or
    ``databus kafka acls --apply`` catches up."""
    if not ctx.settings.kafka_acls:
        return None
    try:
        with _sync_lock:
            change = apply_plan(ctx.settings, ctx.bootstrap, current_plan(ctx.store, ctx.settings))
    except Exception as exc:
        log.error(
            "Kafka ACLs not updated after %s: %s [%s]", reason, exc, getattr(exc, "code", type(exc).__name__)
        )
        return None
    if change.create or change.delete:
        log.info(
            "Kafka ACLs after %s: %d created, %d deleted", reason, len(change.create), len(change.delete)
        )
    return change
