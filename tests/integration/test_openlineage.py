"""R14: a dataset's lineage exports as OpenLineage run events that existing lineage tools accept.

The events are checked against the maintained OpenLineage Python client (``openlineage-python``),
whose classes are generated from the OpenLineage JSON schema (spec 2-0-2) and validate on
construction: every event is rebuilt from those classes (unknown keys fail, ``runId`` must be a
UUID, ``eventTime`` ISO 8601 with a time, URIs parse) and must serialise back to exactly what the bus
exported; every standard facet must name the schema URL the client's spec model names.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.generated import (
    documentation_job,
    input_statistics_input_dataset,
    nominal_time_run,
    output_statistics_output_dataset,
    ownership_dataset,
    schema_dataset,
)
from openlineage.client.serde import Serde

from bus.context import BusContext
from bus.gateway.app import create_app
from bus.lineage import queries
from bus.lineage.openlineage import graph_events
from tests.helpers import licence_schema
from tests.integration.lineage_helpers import World

pytestmark = pytest.mark.integration

SCHEMA_F = schema_dataset.SchemaDatasetFacet
FACETS: dict[str, Any] = {
    "schema": SCHEMA_F,
    "ownership": ownership_dataset.OwnershipDatasetFacet,
    "documentation": documentation_job.DocumentationJobFacet,
    "nominalTime": nominal_time_run.NominalTimeRunFacet,
    "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet,
    "inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet,
}
CUSTOM = {"databus_grant"}


def _facet(name: str, body: dict[str, Any]) -> Any:
    cls = FACETS[name]
    assert body["_schemaURL"] == cls._get_schema(), f"{name} facet names another spec version"
    fields = {k: v for k, v in body.items() if not k.startswith("_")}
    if name == "schema":
        fields["fields"] = [schema_dataset.SchemaDatasetFacetFields(**f) for f in fields["fields"]]
    if name == "ownership":
        fields["owners"] = [ownership_dataset.Owner(**o) for o in fields["owners"]]
    return cls(**fields, producer=body["_producer"])


def _facets(facets: dict[str, Any]) -> dict[str, Any]:
    for name in set(facets) & CUSTOM:  # custom facets: the spec only asks for _producer and _schemaURL URIs
        assert facets[name]["_producer"].startswith("https://")
        assert facets[name]["_schemaURL"].startswith(("https://", "http://"))  # BUS_PUBLIC_URL or the gateway
    return {k: _facet(k, v) for k, v in facets.items() if k not in CUSTOM}


def _dataset(cls: Any, ds: dict[str, Any], io_key: str) -> Any:
    kw: dict[str, Any] = {
        "namespace": ds["namespace"],
        "name": ds["name"],
        "facets": _facets(ds.get("facets", {})),
    }
    if io_key in ds:
        kw[io_key] = _facets(ds[io_key])
    return cls(**kw)


def rebuild(ev: dict[str, Any]) -> RunEvent:
    """The exported event as the OpenLineage client's spec classes (raises on anything off-spec)."""
    assert set(ev) == {"eventType", "eventTime", "producer", "schemaURL", "run", "job", "inputs", "outputs"}
    assert ev["schemaURL"] == RunEvent._get_schema()
    return RunEvent(
        eventType=RunState(ev["eventType"]),
        eventTime=ev["eventTime"],
        producer=ev["producer"],
        run=Run(runId=ev["run"]["runId"], facets=_facets(ev["run"]["facets"])),
        job=Job(
            namespace=ev["job"]["namespace"], name=ev["job"]["name"], facets=_facets(ev["job"]["facets"])
        ),
        inputs=[_dataset(InputDataset, d, "inputFacets") for d in ev["inputs"]],
        outputs=[_dataset(OutputDataset, d, "outputFacets") for d in ev["outputs"]],
    )


def _plain(value: Any) -> Any:
    """Drop empty and null members (the client's serialiser and ours differ only there)."""
    if isinstance(value, dict):
        out = {k: _plain(v) for k, v in value.items() if k not in CUSTOM}
        return {k: v for k, v in out.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.fixture
def world(ctx: BusContext, agency_factory: Any, dataset_factory: Any) -> World:
    return World(ctx, agency_factory, dataset_factory).full()


def test_r14_openlineage_events_match_the_openlineage_spec_model(world: World) -> None:
    with world.ctx.store.session() as s:
        graph = queries.dataset_graph(s, world.dataset)
    events = graph_events(
        graph,
        kafka_namespace="kafka://broker:9092",
        topic_prefix="",
        schemas={world.dataset: licence_schema()},
    )
    assert events
    for ev in events:
        rebuilt = rebuild(ev)
        assert _plain(Serde.to_dict(rebuilt)) == _plain(ev)
        uuid.UUID(ev["run"]["runId"])


def test_r14_openlineage_events_describe_every_hop(world: World) -> None:
    with world.ctx.store.session() as s:
        graph = queries.dataset_graph(s, world.dataset)
    events = graph_events(
        graph,
        kafka_namespace="kafka://broker:9092",
        topic_prefix="p.",
        schemas={world.dataset: licence_schema()},
    )
    jobs = {e["job"]["name"]: e for e in events}
    publish = jobs[f"{world.owner}.publish.{world.dataset}"]
    assert publish["outputs"][0]["name"] == f"p.data.{world.dataset}"
    assert publish["outputs"][0]["namespace"] == "kafka://broker:9092"
    assert publish["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 10
    assert {f["name"] for f in publish["outputs"][0]["facets"]["schema"]["fields"]} >= {"licence_no", "phone"}
    route = jobs[f"databus.route.{world.g_health}"]
    assert route["inputs"][0]["name"] == f"p.data.{world.dataset}"
    assert route["outputs"][0]["name"] == f"p.deliver.{world.g_health}"
    assert [f["name"] for f in route["outputs"][0]["facets"]["schema"]["fields"]] == ["licence_no", "status"]
    grant = route["run"]["facets"]["databus_grant"]
    assert grant["scenarioCode"] == "epidemic-response" and grant["agency"] == world.health
    consume = jobs[f"{world.tax}.consume.{world.g_tax}"]
    assert consume["inputs"][0]["inputFacets"]["inputStatistics"]["rowCount"] == 10
    assert f"{world.health}.consume.{world.g_health}" in jobs  # granted, nothing consumed: still a hop
    again = graph_events(
        graph,
        kafka_namespace="kafka://broker:9092",
        topic_prefix="p.",
        schemas={world.dataset: licence_schema()},
    )
    assert [e["run"]["runId"] for e in again] == [e["run"]["runId"] for e in events]  # stable re-export


def test_r14_openlineage_endpoint_exports_the_dataset_graph(world: World, agency_factory: Any) -> None:
    _, key = agency_factory(roles=("auditor",))
    http = TestClient(create_app(world.ctx))
    r = http.get(
        f"/v1/lineage/datasets/{world.dataset}/openlineage", headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 200
    events = r.json()["events"]
    assert len(events) == 5  # publish, two routes, two consumer hops
    for ev in events:
        rebuild(ev)
        assert ev["inputs"] + ev["outputs"]
        for ds in ev["inputs"] + ev["outputs"]:
            if ds["name"].endswith(f"data.{world.dataset}"):
                assert ds["namespace"] == f"kafka://{world.ctx.bootstrap}"
