"""R8/R16 egress control, pure: where a grant's data may go when it leaves the bus."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.policy.egress import ReceivingSystem, decide_egress, host_of


@pytest.mark.parametrize(
    ("destination", "host"),
    [
        ("https://ingest.health.gov.example/api/v1", "ingest.health.gov.example"),
        ("http://INGEST.Health.example:8080/x", "ingest.health.example"),
        ("postgresql+psycopg://user:secret@db.health.example:5432/warehouse", "db.health.example"),
        ("mysql://u@10.1.2.3/db", "10.1.2.3"),
        ("mqtt://broker.health.example:1883", "broker.health.example"),
        ("db.health.example:5432", "db.health.example"),
        ("db.health.example", "db.health.example"),
        ("10.1.2.3:9092", "10.1.2.3"),
        ("[2001:db8::1]:8080", "2001:db8::1"),
        ("http://[2001:db8::1]:8080/", "2001:db8::1"),
        ("http://127.0.0.1:9000/", "localhost"),
        ("http://[::1]/", "localhost"),
        ("/var/lib/health/records.jsonl", "localhost"),
        ("./out/records.jsonl", "localhost"),
        ("out/records.jsonl", "localhost"),
        ("file:///var/lib/x.jsonl", "localhost"),
        ("sqlite:////var/lib/x.db", "localhost"),
        ("sqlite:///relative.db", "localhost"),
        ("C:\\exports\\x.csv", "localhost"),
        ("ingest.health.example/path", "ingest.health.example"),
    ],
)
def test_r8_host_of_table(destination: str, host: str) -> None:
    assert host_of(destination) == host


@pytest.mark.parametrize("destination", ["", "   ", "http:///nohost"])
def test_r8_host_of_refuses_what_names_no_host(destination: str) -> None:
    with pytest.raises(ValueError):
        host_of(destination)


SYSTEMS = [
    ReceivingSystem("health", "clinic warehouse", "db.health.example", True),
    ReceivingSystem("health", "cloud analytics", "analytics.cloud.example", False),
    ReceivingSystem("health", "local files", "localhost", True),
    ReceivingSystem("market", "market portal", "portal.market.example", True),
]


@pytest.mark.parametrize(
    ("destination", "grantee", "domestic", "allowed", "reason_has"),
    [
        ("postgresql://u@db.health.example/w", "health", False, True, "clinic warehouse"),
        ("postgresql://u@db.health.example/w", "health", True, True, "inside the jurisdiction"),
        ("https://analytics.cloud.example/in", "health", False, True, "outside the jurisdiction"),
        ("https://analytics.cloud.example/in", "health", True, False, "domestic-only"),
        ("https://portal.market.example/in", "health", False, False, "not of the grantee health"),
        ("https://elsewhere.example/in", "health", False, False, "not a receiving system registered"),
        ("https://elsewhere.example/in", "tax", False, False, "it has none registered"),
        ("/var/lib/exports/x.jsonl", "health", True, True, "local files"),
        ("/var/lib/exports/x.jsonl", "market", False, False, "localhost is a receiving system of health"),
        ("http:///nohost", "health", False, False, "cannot tell where"),
        ("https://DB.HEALTH.EXAMPLE./x", "health", True, True, "clinic warehouse"),
    ],
    ids=[
        "own-system",
        "own-domestic",
        "own-abroad",
        "domestic-abroad",
        "third-party",
        "unregistered",
        "no-systems",
        "local-file",
        "local-file-other-agency",
        "no-host",
        "case-and-dot",
    ],
)
def test_r8_r16_egress_decision_table(
    destination: str, grantee: str, domestic: bool, allowed: bool, reason_has: str
) -> None:
    d = decide_egress(destination, grantee, SYSTEMS, domestic)
    assert d.allowed is allowed
    assert d.code == (None if allowed else "egress.refused")
    assert reason_has in d.reason


def test_r16_a_host_registered_both_inside_and_outside_is_allowed_through_the_inside_one() -> None:
    systems = [
        ReceivingSystem("health", "mirror abroad", "h.example", False),
        ReceivingSystem("health", "primary", "h.example", True),
    ]
    d = decide_egress("https://h.example", "health", systems, True)
    assert d.allowed and "primary" in d.reason


HOSTS = st.sampled_from(["a.example", "b.example", "localhost", "10.0.0.1"])


@given(
    st.lists(st.tuples(st.sampled_from(["health", "market", "tax"]), HOSTS, st.booleans()), max_size=6),
    HOSTS,
    st.sampled_from(["health", "market", "tax"]),
    st.booleans(),
)
def test_r8_r16_egress_is_allowed_only_to_the_grantees_systems(
    specs: list, host: str, grantee: str, domestic: bool
) -> None:
    systems = [ReceivingSystem(a, f"s{i}", h, inside) for i, (a, h, inside) in enumerate(specs)]
    d = decide_egress(f"https://{host}/in", grantee, systems, domestic)
    mine = [
        s
        for s in systems
        if s.agency_id == grantee and s.host == host and (s.in_jurisdiction or not domestic)
    ]
    assert d.allowed == bool(mine)
    assert d.reason
