"""R8/R14: the Kafka ACL plan gives each agency its own ingress, deliveries and groups, and nothing else."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.exchange.topics import Topics
from bus.policy.acls import (
    BUS_TOPIC_FAMILIES,
    CLUSTER,
    AclBinding,
    AgencyFact,
    Catalogue,
    DatasetFact,
    GrantFact,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    agency_group_prefix,
    allows,
    consumer_group,
    diff,
    plan,
    principal_of,
)
from bus.vocab import DatasetStatus, GrantStatus, Role

NOW = datetime(2026, 6, 1, tzinfo=UTC)
T, G, B = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.BROKER
R, W, D = Operation.READ, Operation.WRITE, Operation.DESCRIBE


def _cat(
    *,
    owner_roles: frozenset[str] = frozenset({"agency"}),
    grantee_roles: frozenset[str] = frozenset({"agency"}),
    owner_suspended: bool = False,
    grantee_suspended: bool = False,
    ds_status: str = "approved",
    ds_suspended: bool = False,
    grant_status: str = "active",
    valid_until: datetime | None = None,
) -> Catalogue:
    return Catalogue(
        (
            AgencyFact("market", owner_roles, owner_suspended),
            AgencyFact("psb", grantee_roles, grantee_suspended),
        ),
        (DatasetFact("licences", "market", ds_status, ds_suspended),),
        (GrantFact("gr-0123456789ab", "licences", "psb", grant_status, valid_until),),
    )


def _can(
    cat: Catalogue, agency: str, restype: ResourceType, name: str, op: Operation, prefix: str = ""
) -> bool:
    p = plan(cat, NOW, topic_prefix=prefix)
    return allows(p.bindings, principal_of(agency, prefix), restype, name, op)


TOPICS = Topics("")
INGRESS, DELIVER = TOPICS.ingress("licences"), TOPICS.deliver("gr-0123456789ab")


# --- grant states ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "valid_until", "reads"),
    [
        (GrantStatus.PENDING, None, False),
        (GrantStatus.ACTIVE, None, True),
        (GrantStatus.ACTIVE, NOW + timedelta(days=1), True),
        (GrantStatus.ACTIVE, NOW, False),  # past valid_until, not yet swept to expired
        (GrantStatus.DENIED, None, False),
        (GrantStatus.REVOKED, None, False),
        (GrantStatus.EXPIRED, None, False),
        (GrantStatus.SUSPENDED, None, False),
    ],
)
def test_r8_only_a_delivering_grant_gives_its_grantee_read(
    status: str, valid_until: datetime | None, reads: bool
) -> None:
    cat = _cat(grant_status=status, valid_until=valid_until)
    assert _can(cat, "psb", T, DELIVER, R) is reads
    assert _can(cat, "psb", G, consumer_group("gr-0123456789ab"), R) is reads
    assert _can(cat, "psb", G, agency_group_prefix("psb") + "mine", R) is reads
    assert _can(cat, "psb", T, TOPICS.receipts, W) is reads  # receipts only while it reads something
    assert not _can(cat, "psb", T, TOPICS.receipts, R)
    assert not _can(cat, "market", T, DELIVER, R)  # the owner never reads the grantee's stream


# --- roles -------------------------------------------------------------------------------------------
ROLE_SETS = [
    frozenset(s)
    for s in (
        [],
        ["agency"],
        ["reviewer"],
        ["auditor"],
        ["operator"],
        ["admin"],
        ["agency", "reviewer"],
        ["agency", "auditor", "operator"],
        ["reviewer", "auditor", "operator", "admin"],
    )
]


@pytest.mark.parametrize("roles", ROLE_SETS, ids=lambda r: "+".join(sorted(r)) or "none")
def test_r14_only_the_agency_role_uses_kafka(roles: frozenset[str]) -> None:
    """Reviewers, auditors and operators (R11: raw data never leaves) work through the gateway only."""
    on_kafka = Role.AGENCY.value in roles
    cat = _cat(owner_roles=roles, grantee_roles=roles)
    assert _can(cat, "market", T, INGRESS, W) is on_kafka
    assert _can(cat, "psb", T, DELIVER, R) is on_kafka
    p = plan(cat, NOW)
    for who in ("market", "psb"):
        mine = [b for b in p.bindings if b.principal == principal_of(who)]
        assert bool(mine) is on_kafka
        assert principal_of(who) in p.principals  # managed either way: stale bindings get deleted


# --- datasets and suspension -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "writes"),
    [
        (DatasetStatus.DRAFT, False),
        (DatasetStatus.SUBMITTED, False),
        (DatasetStatus.APPROVED, True),
        (DatasetStatus.REJECTED, False),
        (DatasetStatus.RETIRED, False),
    ],
)
def test_r13_only_an_approved_dataset_takes_writes_from_its_owner(status: str, writes: bool) -> None:
    cat = _cat(ds_status=status)
    assert _can(cat, "market", T, INGRESS, W) is writes
    assert _can(cat, "market", T, INGRESS, D) is writes
    assert not _can(cat, "psb", T, INGRESS, W)  # never the grantee
    assert not _can(cat, "market", T, INGRESS, R)  # an ingress topic is never read by an agency


@pytest.mark.parametrize("status", [DatasetStatus.RETIRED, DatasetStatus.SUBMITTED, DatasetStatus.REJECTED])
def test_r8_a_dataset_that_is_not_approved_gives_no_access_at_all(status: str) -> None:
    """Retiring stops publishing and delivering: no ingress WRITE, no READ of its grants' streams."""
    cat = _cat(ds_status=status)
    assert not _can(cat, "market", T, INGRESS, W)
    assert not _can(cat, "psb", T, DELIVER, R)
    assert _can(_cat(), "psb", T, DELIVER, R)


@pytest.mark.parametrize(
    ("flags", "owner_writes", "grantee_reads"),
    [
        ({}, True, True),
        ({"ds_suspended": True}, False, False),
        ({"owner_suspended": True}, False, False),
        ({"grantee_suspended": True}, True, False),
        ({"owner_suspended": True, "grantee_suspended": True}, False, False),
    ],
)
def test_r15_suspension_removes_every_binding_it_concerns(
    flags: dict[str, Any], owner_writes: bool, grantee_reads: bool
) -> None:
    cat = _cat(**flags)
    assert _can(cat, "market", T, INGRESS, W) is owner_writes
    assert _can(cat, "psb", T, DELIVER, R) is grantee_reads
    p = plan(cat, NOW)
    if flags.get("grantee_suspended"):
        assert not [b for b in p.bindings if b.principal == principal_of("psb")]


def test_r8_grant_on_an_unknown_dataset_or_of_an_unknown_agency_gives_nothing() -> None:
    cat = Catalogue(
        (AgencyFact("psb"),),
        (),
        (GrantFact("gr-1", "gone", "psb", "active"), GrantFact("gr-2", "x", "ghost", "active")),
    )
    p = plan(cat, NOW)
    assert [b.principal for b in p.bindings if b.principal != p.bus_principal] == []
    assert p.principals == ("User:bus", "User:psb")


# --- prefix, bus principal ---------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["", "t1.", "prod-"])
def test_r14_names_follow_the_topic_prefix(prefix: str) -> None:
    topics = Topics(prefix)
    cat = _cat()
    p = plan(cat, NOW, topic_prefix=prefix)
    assert principal_of("psb", prefix) == f"User:{prefix}psb"
    assert _can(cat, "market", T, topics.ingress("licences"), W, prefix)
    assert _can(cat, "psb", T, topics.deliver("gr-0123456789ab"), R, prefix)
    assert _can(cat, "psb", T, topics.receipts, W, prefix)
    assert _can(cat, "psb", G, f"{prefix}sub.gr-0123456789ab", R, prefix)
    if prefix:  # the unprefixed names of another bus are not ours
        assert not _can(cat, "psb", T, Topics("").deliver("gr-0123456789ab"), R, prefix)
        assert not allows(p.bindings, p.bus_principal, T, Topics("other.").data("licences"), R)
    for b in p.bindings:
        if b.restype == T:
            assert b.name.startswith(prefix)


@pytest.mark.parametrize("prefix", ["", "t1."])
def test_r14_the_bus_principal_has_every_bus_topic_group_and_the_cluster(prefix: str) -> None:
    topics = Topics(prefix)
    p = plan(Catalogue(), NOW, topic_prefix=prefix, bus_user="svc-bus")
    assert p.bus_principal == "User:svc-bus"
    names = [
        topics.ingress("a"),
        topics.data("a"),
        topics.rejected("a"),
        topics.deliver("gr-1"),
        topics.audit,
        topics.catalog,
        topics.receipts,
        topics.incidents,
        topics.dead_letter,
        f"{prefix}derived.op-1",
    ]
    for name in names:
        for op in (R, W, Operation.CREATE, D, Operation.DELETE):
            assert allows(p.bindings, p.bus_principal, T, name, op), (name, op)
    # the group ids the bus's workers use (bus.exchange.batch_worker, receipts, connectors_runtime, gateway)
    for group in (
        f"{prefix}bus.validator",
        f"{prefix}bus.router",
        f"{prefix}bus-receipts",
        f"{prefix}connector.sink-1",
        "http-0a1b2c",
    ):
        assert allows(p.bindings, p.bus_principal, G, group, R), group
    for op in (Operation.CREATE, D, Operation.ALTER, Operation.DESCRIBE_CONFIGS):
        assert allows(p.bindings, p.bus_principal, B, CLUSTER, op)
    assert not allows(p.bindings, p.bus_principal, T, "__consumer_offsets", R)  # not a bus topic
    assert {f"{prefix}{f}" for f in BUS_TOPIC_FAMILIES} == {
        b.name for b in p.bindings if b.restype == T and b.principal == p.bus_principal
    }


def test_r14_an_agency_named_like_the_bus_user_gets_no_kafka_identity() -> None:
    cat = Catalogue((AgencyFact("bus"), AgencyFact("psb")), (DatasetFact("d", "bus", "approved"),), ())
    p = plan(cat, NOW)
    assert p.unmapped == ("bus",)
    assert [a.agency_id for a in p.agencies] == ["psb"]
    assert not [b for b in p.bindings if b.name == Topics("").ingress("d")]
    assert plan(cat, NOW, topic_prefix="x.").unmapped == ()


def test_r14_plan_is_deterministic_and_sorted() -> None:
    cat = _cat()
    shuffled = Catalogue(cat.agencies[::-1], cat.datasets, cat.grants)
    assert plan(cat, NOW) == plan(shuffled, NOW)
    assert list(plan(cat, NOW).bindings) == sorted(plan(cat, NOW).bindings)


# --- diff --------------------------------------------------------------------------------------------
def _b(name: str, principal: str, op: Operation = R) -> AclBinding:
    return AclBinding(T, name, PatternType.LITERAL, principal, "*", op, Permission.ALLOW)


def test_r14_diff_creates_missing_and_deletes_only_managed_extras() -> None:
    want = [_b("deliver.g1", "User:psb"), _b("ingress.d", "User:market", W)]
    have = [_b("deliver.g1", "User:psb"), _b("deliver.g0", "User:psb"), _b("anything", "User:monitoring")]
    d = diff(want, have, {"User:psb", "User:market", "User:bus"})
    assert d.create == (_b("ingress.d", "User:market", W),)
    assert d.delete == (_b("deliver.g0", "User:psb"),)  # the monitoring user's binding is not ours
    assert diff(want, want, {"User:psb"}).create == diff(want, want, {"User:psb"}).delete == ()


def test_r8_revocation_shows_as_a_deletion_in_the_diff() -> None:
    before, after = plan(_cat(), NOW), plan(_cat(grant_status=GrantStatus.REVOKED), NOW)
    d = diff(after.bindings, before.bindings, after.principals)
    assert d.create == ()
    assert {b.name for b in d.delete} == {
        DELIVER,
        consumer_group("gr-0123456789ab"),
        agency_group_prefix("psb"),
        TOPICS.receipts,
    }


# --- the authorizer's semantics ----------------------------------------------------------------------
def test_r14_allows_follows_kafkas_matching_rules() -> None:
    lit = _b("deliver.g1", "User:psb")
    assert allows([lit], "User:psb", T, "deliver.g1", R)
    assert allows([lit], "User:psb", T, "deliver.g1", D)  # READ implies DESCRIBE
    assert not allows([lit], "User:psb", T, "deliver.g10", R)  # literal is exact
    assert not allows([lit], "User:psb", T, "deliver.g1", W)
    assert not allows([lit], "User:other", T, "deliver.g1", R)
    assert not allows([lit], "User:psb", G, "deliver.g1", R)
    pre = AclBinding(T, "deliver.", PatternType.PREFIXED, "User:*", "*", Operation.ALL, Permission.ALLOW)
    assert allows([pre], "User:x", T, "deliver.g9", W)
    star = AclBinding(T, "*", PatternType.LITERAL, "User:x", "*", R, Permission.ALLOW)
    deny = AclBinding(T, "deliver.g9", PatternType.LITERAL, "User:x", "*", R, Permission.DENY)
    assert allows([star], "User:x", T, "deliver.g9", R) and not allows(
        [star, deny], "User:x", T, "deliver.g9", R
    )
    assert not allows([], "User:x", T, "anything", R)  # allow.everyone.if.no.acl.found=false


def test_r14_bindings_map_field_for_field_onto_confluent_kafka() -> None:
    from confluent_kafka import admin

    params = list(inspect.signature(admin.AclBinding.__init__).parameters)[1:]
    assert params == [f for f in AclBinding.__dataclass_fields__]
    for ours, theirs in (
        (ResourceType, admin.ResourceType),
        (PatternType, admin.ResourcePatternType),
        (Operation, admin.AclOperation),
        (Permission, admin.AclPermissionType),
    ):
        for member in ours:
            assert theirs[member.name].name == member.value


# --- properties over random catalogues ---------------------------------------------------------------
slug = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8).map(lambda s: f"a{s}")
ROLES = st.frozensets(st.sampled_from([r.value for r in Role]), max_size=3)


@st.composite
def catalogues(draw: st.DrawFn) -> Catalogue:
    ids = draw(st.lists(slug, min_size=1, max_size=5, unique=True))
    agencies = tuple(AgencyFact(i, draw(ROLES), draw(st.booleans())) for i in ids)
    ds_ids = draw(st.lists(slug, max_size=5, unique=True))
    datasets = tuple(
        DatasetFact(
            d, draw(st.sampled_from(ids)), draw(st.sampled_from(list(DatasetStatus))), draw(st.booleans())
        )
        for d in ds_ids
    )
    grants = tuple(
        GrantFact(
            f"gr-{n:012x}",
            draw(st.sampled_from(ds_ids)),
            draw(st.sampled_from(ids)),
            draw(st.sampled_from(list(GrantStatus))),
            draw(
                st.one_of(st.none(), st.sampled_from([NOW - timedelta(seconds=1), NOW + timedelta(days=1)]))
            ),
        )
        for n in range(draw(st.integers(0, 8) if ds_ids else st.just(0)))
    )
    return Catalogue(agencies, datasets, grants)


@settings(max_examples=200, deadline=None)
@given(cat=catalogues(), prefix=st.sampled_from(["", "t1.", "x-"]))
def test_r8_no_binding_ever_lets_an_agency_read_what_is_not_its_delivery(cat: Catalogue, prefix: str) -> None:
    topics = Topics(prefix)
    p = plan(cat, NOW, topic_prefix=prefix)
    datasets = {d.id: d for d in cat.datasets}
    agencies = {a.id: a for a in cat.agencies}
    for a in cat.agencies:
        who = principal_of(a.id, prefix)
        for d in cat.datasets:
            for name in (topics.data(d.id), topics.rejected(d.id), topics.ingress(d.id)):
                assert not allows(p.bindings, who, T, name, R), (a.id, name)
            writes = allows(p.bindings, who, T, topics.ingress(d.id), W)
            assert writes == (
                d.owner_id == a.id
                and d.status == "approved"
                and not d.suspended
                and not a.suspended
                and "agency" in a.roles
            )
            assert not allows(p.bindings, who, T, topics.data(d.id), W)
        for g in cat.grants:
            reads = allows(p.bindings, who, T, topics.deliver(g.id), R)
            if g.agency_id != a.id:
                assert not reads
                assert not allows(p.bindings, who, G, consumer_group(g.id, prefix), R)
            else:
                ds, owner = datasets[g.dataset_id], agencies.get(datasets[g.dataset_id].owner_id)
                assert reads == (
                    g.status == "active"
                    and ds.status == "approved"
                    and (g.valid_until is None or g.valid_until > NOW)
                    and not a.suspended
                    and "agency" in a.roles
                    and not ds.suspended
                    and owner is not None
                    and not owner.suspended
                )
            assert not allows(p.bindings, who, T, topics.deliver(g.id), W)  # nobody forges deliveries
        for other in cat.agencies:
            if other.id != a.id:
                assert not allows(p.bindings, who, G, agency_group_prefix(other.id, prefix) + "g", R)
        for name in (topics.audit, topics.catalog, topics.incidents, topics.dead_letter, topics.receipts):
            assert not allows(p.bindings, who, T, name, R)
        assert not allows(p.bindings, who, B, CLUSTER, Operation.CREATE)
        assert not allows(p.bindings, who, B, CLUSTER, Operation.ALTER)


@settings(max_examples=200, deadline=None)
@given(cat=catalogues(), prefix=st.sampled_from(["", "t1."]))
def test_r14_agency_bindings_are_literal_allows_on_their_own_principal(cat: Catalogue, prefix: str) -> None:
    p = plan(cat, NOW, topic_prefix=prefix)
    assert set(p.principals) == {p.bus_principal} | {principal_of(a.id, prefix) for a in cat.agencies}
    for b in p.bindings:
        assert b.principal in p.principals and b.host == "*" and b.permission_type == Permission.ALLOW
        if b.principal != p.bus_principal:
            assert b.operation in (R, W, D)
            assert b.restype != B
            if b.restype == T:
                assert b.resource_pattern_type == PatternType.LITERAL
    assert diff(p.bindings, p.bindings, p.principals) == diff((), (), ())
