"""R8/R14: ``databus kafka acls`` prints the plan of the real store, and never calls create_acls on the
embedded broker (where it aborts librdkafka): the refusal is checked against the real broker, in a
subprocess so that an abort could not take pytest down with it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bus.cli import app
from bus.context import BusContext
from bus.embedded import EmbeddedKafka
from bus.exchange.kafka import admin
from bus.settings import Settings
from bus.store.models import Grant
from tests.helpers import poll_until
from tests.integration.dataplane_helpers import api, grant_body


def _grant(ctx: BusContext, gid: str, dataset: str, agency: str, status: str) -> None:
    now = datetime.now(UTC)
    with ctx.store.session() as s:
        s.add(
            Grant(
                id=gid,
                dataset_id=dataset,
                agency_id=agency,
                fields=["licence_no"],
                scenario_code="c",
                scenario_description="d",
                legal_basis="l",
                status=status,
                version=1,
                requested_at=now,
            )
        )


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "OTEL_"))}
    env.update(
        BUS_DATA_DIR=str(settings.data_dir),
        BUS_DATABASE_URL=settings.resolved_database_url,
        BUS_TOPIC_PREFIX=settings.topic_prefix,
    )
    env.update(extra)
    return env


def test_r8_the_cli_prints_the_plan_of_the_store(
    ctx: BusContext, settings: Settings, agency_factory, dataset_factory
) -> None:
    market, _ = agency_factory("market")
    psb, _ = agency_factory("psb")
    agency_factory("audit-office", roles=("auditor",))
    ds = dataset_factory(market, dataset_id="licences")
    dataset_factory(market, dataset_id="drafted", status="draft")
    _grant(ctx, "gr-00000000000a", ds, psb, "active")
    _grant(ctx, "gr-00000000000b", ds, psb, "revoked")
    env = _env(settings)
    out = CliRunner().invoke(app, ["kafka", "acls", "--json"], env=env)
    assert out.exit_code == 0, out.output
    plan = json.loads(out.output)
    p = settings.topic_prefix
    assert plan["bus_principal"] == "User:bus"
    assert {a["agency"]: (a["publishes"], a["reads"]) for a in plan["agencies"]} == {
        "market": (["licences"], []),
        "psb": ([], ["gr-00000000000a"]),
        "audit-office": ([], []),
    }
    agency_topics = {
        (b["principal"], b["name"], b["operation"])
        for b in plan["bindings"]
        if b["principal"] != "User:bus" and b["restype"] == "TOPIC"
    }
    assert agency_topics == {
        (f"User:{p}market", f"{p}ingress.licences", "WRITE"),
        (f"User:{p}market", f"{p}ingress.licences", "DESCRIBE"),
        (f"User:{p}psb", f"{p}deliver.gr-00000000000a", "READ"),
        (f"User:{p}psb", f"{p}deliver.gr-00000000000a", "DESCRIBE"),
        (f"User:{p}psb", f"{p}bus.receipts", "WRITE"),
        (f"User:{p}psb", f"{p}bus.receipts", "DESCRIBE"),
    }
    table = CliRunner().invoke(app, ["kafka", "acls"], env=env)
    assert (
        table.exit_code == 0 and "SASL/SCRAM principals" in table.output and "gr-00000000000a" in table.output
    )


def _apply(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("databus")), "kafka", "acls", "--apply", "--json"],
        env=_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("profile", "reason"),
    [
        ("embedded", "embedded broker"),  # the profile alone rules it out, before any request
        ("cluster", "lacks DeleteAcls"),  # told it is a cluster: the broker's own ApiVersions rule it out
    ],
)
def test_r14_apply_refuses_the_embedded_broker_with_a_stable_code(
    kafka: EmbeddedKafka, settings: Settings, profile: str, reason: str
) -> None:
    done = _apply(settings, BUS_KAFKA_BOOTSTRAP=kafka.bootstrap, BUS_KAFKA_PROFILE=profile)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)  # not 134 (abort)
    err = json.loads(done.stdout)["error"]
    assert err["code"] == "kafka.acls_unsupported" and err["status"] == 501
    assert reason in err["detail"], err["detail"]
    assert "kafka.acls_unsupported" in done.stderr
    # the broker is untouched and still serves
    assert admin(kafka.bootstrap).describe_cluster(request_timeout=5).result(6).cluster_id


def test_r14_apply_without_an_external_broker_refuses(settings: Settings) -> None:
    done = _apply(settings)  # no BUS_KAFKA_BOOTSTRAP: `databus up`'s embedded Tansu
    assert done.returncode == 1 and json.loads(done.stdout)["error"]["code"] == "kafka.acls_unsupported"


# --- BUS_KAFKA_ACLS=true: every change calls the hook after its commit ---------------------------------
@pytest.fixture
def settings(settings: Settings) -> Settings:  # noqa: F811 - this module's bus manages its ACLs
    return settings.model_copy(update={"kafka_acls": True})


def _hook_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bus.exchange.acl_sync"]


def test_r8_grant_and_catalogue_changes_update_the_acls_and_fail_safe_on_the_embedded_broker(
    ctx: BusContext, bus_stack: Any, agency_factory, dataset_factory, caplog: pytest.LogCaptureFixture
) -> None:
    """On the embedded broker every hook refuses (logged, no create_acls) and every change still stands."""
    caplog.set_level(logging.INFO, logger="bus.exchange.acl_sync")
    market, market_key = agency_factory("market")
    psb, psb_key = agency_factory("psb")
    _, reviewer_key = agency_factory("review-office", roles=("reviewer",))
    ds = dataset_factory(market, dataset_id="licences", status="submitted")
    with (
        api(bus_stack, reviewer_key) as reviewer,
        api(bus_stack, psb_key) as grantee,
        api(bus_stack, market_key) as owner,
        api(bus_stack, ctx.admin_key) as admin_api,
    ):
        assert reviewer.post(f"/v1/datasets/{ds}/review", json={"decision": "approve"}).status_code == 200
        g = grantee.post("/v1/grants", json=grant_body(ds, ["licence_no"])).json()
        assert g["status"] == "active"
        suspended = admin_api.post(
            "/v1/emergency/suspend", json={"kind": "grant", "id": g["id"], "reason": "t"}
        )
        assert suspended.status_code == 200, suspended.text
        resumed = admin_api.post("/v1/emergency/resume", json={"kind": "grant", "id": g["id"], "reason": "t"})
        assert resumed.status_code == 200, resumed.text
        assert owner.post(f"/v1/grants/{g['id']}/revoke").json()["status"] == "revoked"
        assert owner.post(f"/v1/datasets/{ds}/retire").status_code == 200
    expected = [
        f"dataset {ds} approved",
        f"grant {g['id']} granted",
        f"grant {g['id']} suspended",
        f"grant {g['id']} resumed",
        f"grant {g['id']} revoked",
        f"dataset {ds} retired",
    ]
    poll_until(lambda: len(_hook_reasons(caplog)) >= len(expected), timeout=10, what="every hook ran")
    messages = _hook_reasons(caplog)
    for want, got in zip(expected, messages, strict=True):
        assert got.startswith(f"Kafka ACLs not updated after {want}: ") and "[kafka.acls_unsupported]" in got
        assert "embedded broker" in got


def test_r8_expiry_updates_the_acls(
    ctx: BusContext, agency_factory, dataset_factory, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import timedelta

    from bus.grants.service import expire_due

    market, _ = agency_factory("market")
    psb, _ = agency_factory("psb")
    ds = dataset_factory(market, dataset_id="licences")
    _grant(ctx, "gr-0000000000e1", ds, psb, "active")
    with ctx.store.session() as s:
        s.get(Grant, "gr-0000000000e1").valid_until = datetime.now(UTC) - timedelta(seconds=1)
    caplog.set_level(logging.INFO, logger="bus.exchange.acl_sync")
    assert expire_due(ctx) == ["gr-0000000000e1"]
    assert [
        m for m in _hook_reasons(caplog) if m.startswith("Kafka ACLs not updated after 1 grants expired: ")
    ]
    assert expire_due(ctx) == [] and len(_hook_reasons(caplog)) == 1  # nothing changed: no sync
