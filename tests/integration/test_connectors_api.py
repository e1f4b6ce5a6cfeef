"""Registering connectors (R8, R13, R16): bindings, egress, per-kind config errors, masked secrets, audit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bus.context import BusContext
from bus.gateway.app import create_app
from bus.lineage.audit import verify
from bus.store.models import AuditEvent
from tests.integration.dataplane_helpers import grant

pytestmark = pytest.mark.integration
PW = "Hunter2-db-password"
HOOK_SECRET = "psb-webhook-secret-0123"


@pytest.fixture
def api(ctx: BusContext) -> Any:
    client = TestClient(create_app(ctx))
    admin = {"Authorization": f"Bearer {ctx.admin_key}"}

    def call(method: str, path: str, key: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else admin
        return client.request(method, path, headers=headers, **kw)

    return call


@pytest.fixture
def world(ctx: BusContext, agency_factory, dataset_factory) -> dict[str, Any]:
    market, market_key = agency_factory("market")
    psb, psb_key = agency_factory("psb")
    health, _ = agency_factory("health")
    ds = dataset_factory(market)
    domestic = dataset_factory(market, domestic_only=True)
    draft = dataset_factory(market, status="draft")
    return {
        "market": market,
        "market_key": market_key,
        "psb": psb,
        "psb_key": psb_key,
        "health": health,
        "ds": ds,
        "domestic": domestic,
        "draft": draft,
        "grant": grant(ctx, psb, ds)["id"],
        "domestic_grant": grant(ctx, psb, domestic)["id"],
    }


def csv_source(world: dict, **over: Any) -> dict[str, Any]:
    body = {
        "name": "market-csv",
        "kind": "file-source",
        "agency": world["market"],
        "dataset": world["ds"],
        "config": {"path": "/srv/market/licences.csv", "format": "csv"},
    }
    return {**body, **over}


def hook_sink(world: dict, url: str = "https://hooks.psb.gov.cn/licences", **over: Any) -> dict[str, Any]:
    body = {
        "name": "psb-hook",
        "kind": "http-sink",
        "agency": world["psb"],
        "grant": world["grant"],
        "config": {"url": url, "secret": HOOK_SECRET, "headers": {"Authorization": "Bearer psb-token-xyz"}},
    }
    return {**body, **over}


def system(api: Any, agency_id: str, url: str, inside: bool = True, name: str = "inbox") -> None:
    r = api(
        "POST",
        f"/v1/agencies/{agency_id}/systems",
        json={"name": name, "url": url, "in_jurisdiction": inside},
    )
    assert r.status_code == 201, r.text


def test_r13_source_registration_lifecycle_is_audited(ctx, api, world) -> None:
    r = api("POST", "/v1/connectors", json=csv_source(world))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["role"] == "source" and body["dataset"] == world["ds"] and body["desired_state"] == "stopped"
    assert body["config"]["batch_size"] == 500  # defaults are filled in and shown
    assert api("POST", "/v1/connectors/market-csv/start").json()["desired_state"] == "running"
    assert api("POST", "/v1/connectors/market-csv/stop").json()["desired_state"] == "stopped"
    assert [c["name"] for c in api("GET", "/v1/connectors").json()["connectors"]] == ["market-csv"]
    assert api("DELETE", "/v1/connectors/market-csv").json()["deleted"]["name"] == "market-csv"
    missing = api("GET", "/v1/connectors/market-csv")
    assert missing.status_code == 404 and missing.json()["code"] == "connector.not_found"
    with ctx.store.session() as s:
        actions = s.scalars(
            select(AuditEvent.action).where(AuditEvent.subject_type == "connector").order_by(AuditEvent.seq)
        ).all()
    assert actions == ["connector.registered", "connector.started", "connector.stopped", "connector.deleted"]
    assert verify(ctx.store)["ok"]


def test_r13_connector_names_may_be_63_characters(api, world) -> None:
    """R13: names over 22 characters fit ``connector:<name>`` in consumption lineage (migration 0002)."""
    name = "market-licences-csv-" + "x" * 42 + "1"
    assert len(name) == 63
    r = api("POST", "/v1/connectors", json=csv_source(world, name=name))
    assert r.status_code == 201, r.text
    assert api("GET", f"/v1/connectors/{name}").json()["name"] == name


@pytest.mark.parametrize(
    ("over", "status", "code", "words"),
    [
        ({"dataset": "nope"}, 404, "catalog.not_found", "not in the catalogue"),
        ({"dataset": None}, 422, "connector.binding_invalid", "R13"),
        ({"agency": "psb"}, 422, "connector.binding_invalid", "belongs to market"),
        ({"agency": "ghost"}, 404, "agency.not_found", "ghost"),
        ({"kind": "ftp-source"}, 422, "connector.unknown_kind", "file-source"),
        ({"name": "Market CSV"}, 422, "request.invalid", "lower-case"),
        ({"name": "kinds"}, 422, "request.invalid", "not 'kinds'"),
        ({"name": "m" * 64}, 422, "request.invalid", "1-63 lower-case"),
        (
            {"config": {"path": "relative.csv", "format": "csv"}},
            422,
            "connector.config_invalid",
            "absolute path",
        ),
        (
            {"config": {"path": "/x.csv", "format": "csv", "mapping": {"no": "licence_number"}}},
            422,
            "connector.config_invalid",
            "not fields of the dataset schema",
        ),
    ],
)
def test_r13_bad_source_registrations_are_refused_with_a_clear_error(
    api, world, over, status, code, words
) -> None:
    r = api("POST", "/v1/connectors", json=csv_source(world, **over))
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code and words in r.json()["detail"]


def test_r13_source_of_an_unapproved_dataset_is_refused(api, world) -> None:
    r = api("POST", "/v1/connectors", json=csv_source(world, dataset=world["draft"]))
    assert r.status_code == 409 and r.json()["code"] == "dataset.not_approved"


def test_r8_sink_to_a_destination_not_registered_to_the_grantee_is_refused(api, world) -> None:
    r = api("POST", "/v1/connectors", json=hook_sink(world))
    assert r.status_code == 403 and r.json()["code"] == "egress.refused"
    assert "not a receiving system registered to the grantee psb" in r.json()["detail"]

    system(api, world["health"], "https://hooks.psb.gov.cn/")  # the host belongs to another agency
    r = api("POST", "/v1/connectors", json=hook_sink(world))
    assert r.status_code == 403 and "third party" in r.json()["detail"]

    system(api, world["psb"], "https://hooks.psb.gov.cn/")
    r = api("POST", "/v1/connectors", json=hook_sink(world))
    assert r.status_code == 201, r.text


def test_r16_domestic_only_data_never_goes_to_a_system_abroad(api, world) -> None:
    system(api, world["psb"], "https://mirror.psb.example.org/", inside=False)
    r = api(
        "POST",
        "/v1/connectors",
        json=hook_sink(world, url="https://mirror.psb.example.org/hook", grant=world["domestic_grant"]),
    )
    assert r.status_code == 403 and r.json()["code"] == "egress.refused" and "R16" in r.json()["detail"]
    r = api("POST", "/v1/connectors", json=hook_sink(world, url="https://mirror.psb.example.org/hook"))
    assert r.status_code == 201, r.text  # the same system may receive data that is not domestic-only


def test_r8_sink_binding_is_to_the_grantee(api, world) -> None:
    system(api, world["psb"], "https://hooks.psb.gov.cn/")
    r = api("POST", "/v1/connectors", json=hook_sink(world, agency=world["health"]))
    assert r.status_code == 422 and r.json()["code"] == "connector.binding_invalid"
    assert "held by psb" in r.json()["detail"]
    r = api("POST", "/v1/connectors", json=hook_sink(world, grant=None))
    assert r.status_code == 422 and "give 'grant'" in r.json()["detail"]
    r = api("POST", "/v1/connectors", json=hook_sink(world, grant="nope"))
    assert r.status_code == 404 and r.json()["code"] == "grant.not_found"


def test_r14_secrets_are_stored_but_never_shown(ctx, api, world) -> None:
    system(api, world["psb"], "db.psb.gov.cn")
    system(api, world["psb"], "https://hooks.psb.gov.cn/", name="hooks")
    url = f"postgresql://psb:{PW}@db.psb.gov.cn:5432/psb"
    sink = {
        "name": "psb-db",
        "kind": "sql-sink",
        "agency": world["psb"],
        "grant": world["grant"],
        "config": {"url": url, "table": "licences"},
    }
    shown = [
        api("POST", "/v1/connectors", json=sink).json(),
        api("POST", "/v1/connectors", json=hook_sink(world)).json(),
        api("GET", "/v1/connectors/psb-db").json(),
        api("GET", "/v1/connectors").json(),
    ]
    bad = api(
        "POST", "/v1/connectors", json={**sink, "name": "psb-db2", "config": {"url": url, "table": "x y"}}
    )
    assert bad.status_code == 422
    shown.append(bad.json())
    with ctx.store.session() as s:
        shown += [e.data for e in s.scalars(select(AuditEvent))]
    text = json.dumps(shown)
    for secret in (PW, HOOK_SECRET, "psb-token-xyz"):
        assert secret not in text
    assert shown[0]["config"]["url"] == "postgresql://psb:***@db.psb.gov.cn:5432/psb"
    assert shown[1]["config"]["secret"] == "***" and shown[1]["config"]["headers"]["Authorization"] == "***"
    with ctx.store.session() as s:  # stored as given, for the runtime
        from bus.store.models import Connector

        assert s.get(Connector, "psb-db").config["url"] == url


def test_connector_changes_need_the_admin_key(api, world) -> None:
    r = api("POST", "/v1/connectors", key=world["market_key"], json=csv_source(world))
    assert r.status_code == 403 and r.json()["code"] == "auth.forbidden"
    assert api("GET", "/v1/connectors", key=world["psb_key"]).status_code == 403


def test_kinds_are_listed_with_their_config_schema(api) -> None:
    kinds = {k["kind"]: k for k in api("GET", "/v1/connectors/kinds").json()["kinds"]}
    assert set(kinds) == {"file-source", "sql-source", "mqtt-source", "http-sink", "sql-sink", "file-sink"}
    assert (
        kinds["http-sink"]["role"] == "sink" and "secret" in kinds["http-sink"]["config_schema"]["properties"]
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_connector_commands_register_start_and_show_status(ctx, settings, world, tmp_path) -> None:
    from typer.testing import CliRunner

    from bus.cli import app
    from bus.stack import Stack

    stack = Stack(settings, workers=False).start()
    try:
        run = CliRunner().invoke
        opts = ["--url", stack.url, "--key", ctx.admin_key]
        cfg = tmp_path / "source.yaml"
        cfg.write_text(f"path: {tmp_path / 'in.csv'}\nformat: csv\n")
        r = run(
            app,
            [
                "connector",
                "add",
                "market-csv",
                "--kind",
                "file-source",
                "--agency",
                world["market"],
                "--dataset",
                world["ds"],
                "--config",
                f"@{cfg}",
                "--set",
                "batch_size=50",
                "--set",
                "retry.max_attempts=3",
                *opts,
                "--json",
            ],
        )
        assert r.exit_code == 0, r.output
        added = json.loads(r.output)
        assert added["config"]["batch_size"] == 50 and added["config"]["retry"]["max_attempts"] == 3
        r = run(app, ["connector", "start", "market-csv", *opts, "--json"])
        assert r.exit_code == 0 and json.loads(r.output)["desired_state"] == "running"
        r = run(app, ["connector", "status", "market-csv", *opts, "--json"])
        assert r.exit_code == 0 and json.loads(r.output)["kind"] == "file-source"
        r = run(app, ["connector", "list", *opts, "--json"])
        assert r.exit_code == 0 and [c["name"] for c in json.loads(r.output)] == ["market-csv"]
        r = run(app, ["connector", "kinds", *opts])
        assert r.exit_code == 0 and "connector kinds" in r.output
        r = run(
            app,
            [
                "connector",
                "add",
                "bad",
                "--kind",
                "file-source",
                "--agency",
                world["market"],
                "--dataset",
                world["ds"],
                "--set",
                "path=relative.csv",
                "--set",
                "format=csv",
                *opts,
            ],
        )
        assert r.exit_code == 1 and "connector.config_invalid" in r.output and "absolute" in r.output
    finally:
        stack.stop()
