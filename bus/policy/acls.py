"""Broker-level access control for Apache Kafka (R8, R14): the ACL plan, as a pure function.

The gateway guards the front door; on Apache Kafka the broker's own authorizer guards the back door
too. From the catalogue and the grants alone (no Kafka, no store) this module works out which SASL/SCRAM
principal may do what: an agency writes the ``ingress.<dataset>`` topics of the datasets it owns
(approved, nothing suspended), reads the ``deliver.<grant>`` topics of its grants that deliver right now
and its own consumer groups, writes ``bus.receipts`` while it reads something, and nothing else — never
``data.*``, ``rejected.*``, another agency's topics, or anything with only a reviewer, auditor or
operator role. The bus's principal gets every bus topic and group and what it needs on the cluster.

Bindings are plain frozen dataclasses whose fields are those of confluent-kafka's ``AclBinding`` (enum
members named alike), so the I/O edge converts them one to one (`bus.exchange.acl_sync`). ``allows``
answers the authorizer's question for a set of bindings, so tests can state the rules as Kafka applies them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from bus.exchange.topics import Topics
from bus.policy.decision import deliverable
from bus.vocab import DatasetStatus, Role


class ResourceType(StrEnum):
    """Members named as confluent-kafka's ``ResourceType`` (``BROKER`` is Kafka's CLUSTER resource)."""

    TOPIC = "TOPIC"
    GROUP = "GROUP"
    BROKER = "BROKER"
    TRANSACTIONAL_ID = "TRANSACTIONAL_ID"  # never planned: known so that a stray one is deleted


class PatternType(StrEnum):
    """confluent-kafka's ``ResourcePatternType``: an exact name, or every name starting with it."""

    LITERAL = "LITERAL"
    PREFIXED = "PREFIXED"


class Operation(StrEnum):
    """confluent-kafka's ``AclOperation`` members the plan uses or the authorizer knows."""

    ALL = "ALL"
    READ = "READ"
    WRITE = "WRITE"
    CREATE = "CREATE"
    DELETE = "DELETE"
    ALTER = "ALTER"
    DESCRIBE = "DESCRIBE"
    CLUSTER_ACTION = "CLUSTER_ACTION"
    DESCRIBE_CONFIGS = "DESCRIBE_CONFIGS"
    ALTER_CONFIGS = "ALTER_CONFIGS"
    IDEMPOTENT_WRITE = "IDEMPOTENT_WRITE"


class Permission(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"


CLUSTER = "kafka-cluster"  # the one name of Kafka's cluster resource
ANY_HOST = "*"
# topic families the bus owns (under its prefix): the contract's topics and the coming derived products
BUS_TOPIC_FAMILIES = ("ingress.", "data.", "rejected.", "deliver.", "derived.", "bus.")
# consumer groups of the bus's own workers: validator/router (`<prefix>bus.<name>`), the receipts worker
# (`<prefix>bus-receipts`), sink connectors (`<prefix>connector.<name>`); the gateway's HTTP readers use
# `http-<uuid>` without the prefix
BUS_GROUPS: tuple[tuple[str, PatternType, bool], ...] = (
    ("bus.", PatternType.PREFIXED, True),
    ("bus-receipts", PatternType.LITERAL, True),
    ("connector.", PatternType.PREFIXED, True),
    ("http-", PatternType.PREFIXED, False),
)
# on the cluster: create topics (CREATE), metadata and DescribeAcls (DESCRIBE), Create/DeleteAcls (ALTER,
# when BUS_KAFKA_ACLS applies the plan itself) and the broker's configs (the authorizer check)
BUS_CLUSTER_OPERATIONS = (Operation.CREATE, Operation.DESCRIBE, Operation.ALTER, Operation.DESCRIBE_CONFIGS)
# READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS (Kafka's authorizer)
_IMPLIES = {
    Operation.DESCRIBE: {Operation.READ, Operation.WRITE, Operation.DELETE, Operation.ALTER},
    Operation.DESCRIBE_CONFIGS: {Operation.ALTER_CONFIGS},
}


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ACL entry, field for field confluent-kafka's ``AclBinding``."""

    restype: ResourceType
    name: str
    resource_pattern_type: PatternType
    principal: str
    host: str
    operation: Operation
    permission_type: Permission


@dataclass(frozen=True)
class AgencyFact:
    id: str
    roles: frozenset[str] = frozenset({Role.AGENCY.value})
    suspended: bool = False


@dataclass(frozen=True)
class DatasetFact:
    id: str
    owner_id: str
    status: str
    suspended: bool = False


@dataclass(frozen=True)
class GrantFact:
    id: str
    dataset_id: str
    agency_id: str
    status: str
    valid_until: datetime | None = None


@dataclass(frozen=True)
class Catalogue:
    """What the plan is made from: every agency, dataset and grant of the store."""

    agencies: tuple[AgencyFact, ...] = ()
    datasets: tuple[DatasetFact, ...] = ()
    grants: tuple[GrantFact, ...] = ()


@dataclass(frozen=True)
class AgencyAccess:
    """One agency's Kafka identity and what it may use: the datasets it publishes, the grants it reads."""

    agency_id: str
    principal: str
    publishes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()


@dataclass(frozen=True)
class AclPlan:
    bus_principal: str
    agencies: tuple[AgencyAccess, ...]
    bindings: tuple[AclBinding, ...]
    # agencies whose principal would be the bus's own (an agency named like the bus's SCRAM user): no
    # Kafka identity of their own, so no bindings; they use the gateway
    unmapped: tuple[str, ...] = field(default=())

    @property
    def principals(self) -> tuple[str, ...]:
        """Every principal whose bindings the bus manages: its own and one per agency."""
        return (self.bus_principal, *(a.principal for a in self.agencies))


@dataclass(frozen=True)
class AclDiff:
    create: tuple[AclBinding, ...]
    delete: tuple[AclBinding, ...]


def principal_of(agency_id: str, topic_prefix: str = "") -> str:
    """``User:<prefix><agency>``: the topic prefix keeps the agencies of buses sharing a cluster apart."""
    return f"User:{topic_prefix}{agency_id}"


def consumer_group(grant_id: str, topic_prefix: str = "") -> str:
    """The SDK subscriber's default group for a grant (`bus.client.subscriber.Subscriber`)."""
    return f"{topic_prefix}sub.{grant_id}"


def agency_group_prefix(agency_id: str, topic_prefix: str = "") -> str:
    """Groups an agency names itself (``Subscriber(group=...)``) must start with this."""
    return f"{topic_prefix}sub.{agency_id}."


def _allow(
    restype: ResourceType, name: str, pattern: PatternType, principal: str, *ops: Operation
) -> list[AclBinding]:
    return [AclBinding(restype, name, pattern, principal, ANY_HOST, op, Permission.ALLOW) for op in ops]


def bus_bindings(principal: str, topic_prefix: str = "") -> list[AclBinding]:
    """The bus's own principal: every bus topic and group (ALL), and the cluster operations it uses."""
    out: list[AclBinding] = []
    for family in BUS_TOPIC_FAMILIES:
        out += _allow(
            ResourceType.TOPIC, topic_prefix + family, PatternType.PREFIXED, principal, Operation.ALL
        )
    for name, pattern, prefixed in BUS_GROUPS:
        group = topic_prefix + name if prefixed else name
        out += _allow(ResourceType.GROUP, group, pattern, principal, Operation.ALL)
    out += _allow(ResourceType.BROKER, CLUSTER, PatternType.LITERAL, principal, *BUS_CLUSTER_OPERATIONS)
    return out


def agency_bindings(access: AgencyAccess, topic_prefix: str = "") -> list[AclBinding]:
    """What one agency's principal may do: nothing beyond its own ingress, deliveries and groups."""
    topics, who = Topics(topic_prefix), access.principal
    out: list[AclBinding] = []
    for dataset_id in access.publishes:
        out += _allow(
            ResourceType.TOPIC,
            topics.ingress(dataset_id),
            PatternType.LITERAL,
            who,
            Operation.WRITE,
            Operation.DESCRIBE,
        )
    for grant_id in access.reads:
        out += _allow(
            ResourceType.TOPIC,
            topics.deliver(grant_id),
            PatternType.LITERAL,
            who,
            Operation.READ,
            Operation.DESCRIBE,
        )
        out += _allow(
            ResourceType.GROUP,
            consumer_group(grant_id, topic_prefix),
            PatternType.LITERAL,
            who,
            Operation.READ,
        )
    if access.reads:  # a subscriber acknowledges what it consumed with a receipt
        out += _allow(
            ResourceType.GROUP,
            agency_group_prefix(access.agency_id, topic_prefix),
            PatternType.PREFIXED,
            who,
            Operation.READ,
        )
        out += _allow(
            ResourceType.TOPIC, topics.receipts, PatternType.LITERAL, who, Operation.WRITE, Operation.DESCRIBE
        )
    return out


def _on_kafka(agency: AgencyFact | None) -> bool:
    """Only agency systems use Kafka: reviewers, auditors and operators work through the gateway."""
    return agency is not None and not agency.suspended and Role.AGENCY.value in agency.roles


def access_of(catalogue: Catalogue, now: datetime) -> dict[str, tuple[list[str], list[str]]]:
    """Per agency on Kafka: the datasets it may publish to and the grants it may read, right now."""
    agencies = {a.id: a for a in catalogue.agencies}
    datasets = {d.id: d for d in catalogue.datasets}
    out: dict[str, tuple[list[str], list[str]]] = {a.id: ([], []) for a in catalogue.agencies if _on_kafka(a)}
    for ds in catalogue.datasets:
        if ds.status == DatasetStatus.APPROVED and not ds.suspended and ds.owner_id in out:
            out[ds.owner_id][0].append(ds.id)
    for g in catalogue.grants:
        source = datasets.get(g.dataset_id)
        if source is None or g.agency_id not in out:
            continue
        owner = agencies.get(source.owner_id)
        # the delivery rule of the pipeline: an active grant before its valid_until (`deliverable`), on an
        # approved dataset, nothing suspended (the grantee's own flag is checked by _on_kafka)
        delivering = source.status == DatasetStatus.APPROVED and not source.suspended
        if (
            delivering
            and owner is not None
            and not owner.suspended
            and deliverable(g.status, g.valid_until, now)
        ):
            out[g.agency_id][1].append(g.id)
    return out


def plan(catalogue: Catalogue, now: datetime, *, topic_prefix: str = "", bus_user: str = "bus") -> AclPlan:
    """The complete set of bindings the broker should hold for this catalogue at ``now``."""
    bus_principal = f"User:{bus_user}"
    access = access_of(catalogue, now)
    agencies: list[AgencyAccess] = []
    unmapped: list[str] = []
    bindings = bus_bindings(bus_principal, topic_prefix)
    for a in sorted(catalogue.agencies, key=lambda a: a.id):
        principal = principal_of(a.id, topic_prefix)
        if principal == bus_principal:
            unmapped.append(a.id)
            continue
        publishes, reads = access.get(a.id, ([], []))
        entry = AgencyAccess(a.id, principal, tuple(sorted(publishes)), tuple(sorted(reads)))
        agencies.append(entry)
        bindings += agency_bindings(entry, topic_prefix)
    return AclPlan(bus_principal, tuple(agencies), tuple(sorted(set(bindings))), tuple(unmapped))


def diff(desired: Iterable[AclBinding], existing: Iterable[AclBinding], managed: Collection[str]) -> AclDiff:
    """What to create (planned, not on the broker) and delete (on the broker for a principal the bus
    manages, not planned). Bindings of other principals are never touched."""
    want, have = set(desired), set(existing)
    extra = {b for b in have - want if b.principal in managed}
    return AclDiff(tuple(sorted(want - have)), tuple(sorted(extra)))


def _matches(b: AclBinding, principal: str, restype: ResourceType, name: str, op: Operation) -> bool:
    if b.restype != restype or b.principal not in (principal, "User:*"):
        return False
    if b.resource_pattern_type == PatternType.LITERAL:
        named = b.name in (name, "*")
    else:
        named = name.startswith(b.name)
    return named and (b.operation in (op, Operation.ALL) or b.operation in _IMPLIES.get(op, ()))


def allows(
    bindings: Iterable[AclBinding], principal: str, restype: ResourceType, name: str, op: Operation
) -> bool:
    """Kafka's StandardAuthorizer with ``allow.everyone.if.no.acl.found=false``: some ALLOW matches and
    no DENY does (any host)."""
    hits = [b for b in bindings if _matches(b, principal, restype, name, op)]
    return any(b.permission_type == Permission.ALLOW for b in hits) and not any(
        b.permission_type == Permission.DENY for b in hits
    )
