"""R14: the bus asks the broker's ApiVersions before any ACL call; brokers without ACLs are refused."""

from __future__ import annotations

import struct

import pytest

from bus.exchange.acl_sync import BrokerFacts, support_problem
from bus.exchange.api_versions import ACL_API_KEYS, ApiRange, _hosts, decode_response, encode_request


def _answer(corr: int, error: int, keys: list[tuple[int, int, int]]) -> bytes:
    return struct.pack(">ihi", corr, error, len(keys)) + b"".join(struct.pack(">hhh", *k) for k in keys)


def test_r14_request_is_apiversions_v0_with_its_size_prefix() -> None:
    raw = encode_request(7, b"cli")
    size, key, version, corr, n = struct.unpack_from(">ihhih", raw)
    assert (size, key, version, corr, n) == (len(raw) - 4, 18, 0, 7, 3) and raw.endswith(b"cli")


def test_r14_answer_lists_each_api_key_with_its_versions() -> None:
    got = decode_response(_answer(7, 0, [(30, 0, 3), (29, 1, 3), (18, 0, 4)]), 7)
    assert got == {30: ApiRange(0, 3), 29: ApiRange(1, 3), 18: ApiRange(0, 4)}


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (_answer(8, 0, [(30, 0, 3)]), "not 7"),
        (_answer(7, 35, []), "error code 35"),
        (_answer(7, 0, [(30, 0, 3)])[:-2], "truncated"),
        (b"\x00\x00", "malformed"),
    ],
)
def test_r14_anything_but_a_clean_answer_is_refused(payload: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_response(payload, 7)


def test_bootstrap_lists_are_split_into_hosts() -> None:
    assert _hosts("kafka:9092, b2:9093,tcp://127.0.0.1:1,[::1]:9") == [
        ("kafka", 9092),
        ("b2", 9093),
        ("127.0.0.1", 1),
        ("::1", 9),
    ]


ALL_ACL_APIS = frozenset(ACL_API_KEYS.values())
TANSU_APIS = frozenset({29, 30, 0, 1, 3})  # measured: DescribeAcls and CreateAcls, no DeleteAcls


@pytest.mark.parametrize(
    ("facts", "problem"),
    [
        (BrokerFacts(True), "embedded"),
        (BrokerFacts(False, TANSU_APIS), "lacks DeleteAcls"),
        (BrokerFacts(False, frozenset()), "lacks DescribeAcls, CreateAcls, DeleteAcls"),
        (BrokerFacts(False, ALL_ACL_APIS, "tansu_cluster"), "Tansu"),
        (BrokerFacts(False, ALL_ACL_APIS, "MkU3OEVBNTcwNTJENDM2Qk", ""), "no authorizer"),
        (BrokerFacts(False, ALL_ACL_APIS, "MkU3OEVBNTcwNTJENDM2Qk", " "), "no authorizer"),
        (
            BrokerFacts(
                False,
                ALL_ACL_APIS,
                "MkU3OEVBNTcwNTJENDM2Qk",
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            ),
            None,
        ),
    ],
)
def test_r14_acls_are_managed_only_on_a_broker_that_enforces_them(
    facts: BrokerFacts, problem: str | None
) -> None:
    got = support_problem(facts)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


def test_r14_plan_bindings_convert_to_confluent_kafka_and_back_unchanged() -> None:
    from datetime import UTC, datetime

    from bus.exchange.acl_sync import from_kafka, to_kafka
    from bus.policy.acls import AgencyFact, Catalogue, DatasetFact, GrantFact, plan

    cat = Catalogue(
        (AgencyFact("market"), AgencyFact("psb")),
        (DatasetFact("licences", "market", "approved"),),
        (GrantFact("gr-1", "licences", "psb", "active"),),
    )
    bindings = plan(cat, datetime.now(UTC), topic_prefix="t.").bindings
    assert {b.restype for b in bindings} == {"TOPIC", "GROUP", "BROKER"}
    for b in bindings:
        assert from_kafka(to_kafka(b)) == b
