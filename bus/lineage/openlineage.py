"""A dataset's lineage graph as OpenLineage run events, for existing lineage tools (Marquez, DataHub...).

Each hop of the bus is an OpenLineage job whose run covers the period of the graph:

- ``<publisher>.publish.<dataset>``: outputs the ``data.<dataset>`` topic;
- ``databus.route.<grant>``: reads ``data.<dataset>``, writes ``deliver.<grant>`` (scenario, fields);
- ``<agency>.consume.<grant>``: reads ``deliver.<grant>`` (and writes a sink connector's system);
- ``databus.derive.<derived>``: reads ``data.<dataset>``, writes ``data.<derived>`` (R11 products).

Topics are named as OpenLineage names Kafka datasets (namespace ``kafka://<bootstrap>``, name = topic).
Events are ``COMPLETE`` run events of spec 2-0-2 with standard facets (schema, ownership,
documentation, nominal time, input/output statistics) and one custom facet, ``databus_grant``.
Run ids are UUIDs derived from the job and period, so exporting twice yields the same events.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from bus import __version__

SPEC = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
PRODUCER = f"https://databus.gov/databus/{__version__}"
JOB_NAMESPACE = "databus"
_FACETS = "https://openlineage.io/spec/facets"
SCHEMA_FACET = f"{_FACETS}/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet"
OWNERSHIP_FACET = f"{_FACETS}/1-0-1/OwnershipDatasetFacet.json#/$defs/OwnershipDatasetFacet"
DOCUMENTATION_FACET = f"{_FACETS}/1-1-0/DocumentationJobFacet.json#/$defs/DocumentationJobFacet"
NOMINAL_TIME_FACET = f"{_FACETS}/1-0-1/NominalTimeRunFacet.json#/$defs/NominalTimeRunFacet"
OUTPUT_STATS_FACET = (
    f"{_FACETS}/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet"
)
INPUT_STATS_FACET = (
    f"{_FACETS}/1-0-0/InputStatisticsInputDatasetFacet.json#/$defs/InputStatisticsInputDatasetFacet"
)
GRANT_FACET_PATH = "/openlineage/facets/1-0-0/DatabusGrantFacet.json"  # served by the gateway
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"  # `databus up`; the gateway passes BUS_PUBLIC_URL or its own
_RUN_NS = uuid.UUID("6f1d3c1e-5b0a-4c8e-9a57-0d1a7e0c2b11")


def _facet(schema_url: str, **body: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": schema_url, **body}


def _time(value: str | None, default: datetime) -> str:
    return value or default.isoformat()


class _Names:
    def __init__(self, namespace: str, prefix: str) -> None:
        self.namespace = namespace
        self.prefix = prefix

    def topic(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}.{name}"


def _schema_fields(schema: dict[str, Any] | None, only: list[str] | None = None) -> list[dict[str, Any]]:
    fields = []
    for f in (schema or {}).get("fields", []):
        if only is not None and f.get("name") not in only:
            continue
        t = f.get("type")
        if isinstance(t, list):
            t = "|".join(x if isinstance(x, str) else x.get("type", "record") for x in t)
        elif isinstance(t, dict):
            t = t.get("logicalType") or t.get("type", "record")
        entry = {"name": f.get("name"), "type": str(t)}
        if f.get("doc"):
            entry["description"] = f["doc"]
        fields.append(entry)
    return fields


def graph_events(
    graph: dict[str, Any],
    *,
    kafka_namespace: str,
    topic_prefix: str = "",
    schemas: dict[str, dict[str, Any]] | None = None,
    now: datetime | None = None,
    public_url: str = DEFAULT_PUBLIC_URL,
) -> list[dict[str, Any]]:
    """OpenLineage ``RunEvent`` dicts for a graph from ``queries.dataset_graph``.

    ``schemas`` maps dataset ids to their Avro schema (schema facets); ``kafka_namespace`` is
    ``kafka://host:port`` of the cluster; the custom facet's ``_schemaURL`` is under ``public_url``.
    """
    now = now or datetime.now(UTC)
    names = _Names(kafka_namespace, topic_prefix)
    schemas = schemas or {}
    nodes = {n["id"]: n for n in graph["nodes"]}
    dataset_id = graph["dataset"]
    dnode = nodes[f"dataset:{dataset_id}"]
    owner = dnode.get("owner")

    def data_ds(
        did: str, owner_id: str | None, stats: dict[str, Any] | None = None, io: str = "outputFacets"
    ) -> dict[str, Any]:
        facets: dict[str, Any] = {}
        fields = _schema_fields(schemas.get(did))
        if fields:
            facets["schema"] = _facet(SCHEMA_FACET, fields=fields)
        if owner_id:
            facets["ownership"] = _facet(
                OWNERSHIP_FACET, owners=[{"name": f"agency:{owner_id}", "type": "owner"}]
            )
        ds: dict[str, Any] = {
            "namespace": names.namespace,
            "name": names.topic("data", did),
            "facets": facets,
        }
        if stats is not None:
            ds[io] = stats
        return ds

    def event(
        job: str,
        edge: dict[str, Any],
        inputs: list[dict[str, Any]],
        outputs: list[dict[str, Any]],
        job_doc: str,
        run_facets: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        start, end = edge.get("first_at"), edge.get("last_at")
        run_id = uuid.uuid5(_RUN_NS, f"{job}|{start}|{end}")
        facets = {
            "nominalTime": _facet(
                NOMINAL_TIME_FACET, nominalStartTime=_time(start, now), nominalEndTime=_time(end, now)
            )
        }
        facets.update(run_facets or {})
        return {
            "eventType": "COMPLETE",
            "eventTime": _time(end, now),
            "producer": PRODUCER,
            "schemaURL": SPEC,
            "run": {"runId": str(run_id), "facets": facets},
            "job": {
                "namespace": JOB_NAMESPACE,
                "name": job,
                "facets": {"documentation": _facet(DOCUMENTATION_FACET, description=job_doc)},
            },
            "inputs": inputs,
            "outputs": outputs,
        }

    def out_stats(edge: dict[str, Any]) -> dict[str, Any]:
        return {"outputStatistics": _facet(OUTPUT_STATS_FACET, rowCount=edge["records"], size=edge["bytes"])}

    def in_stats(edge: dict[str, Any]) -> dict[str, Any]:
        return {"inputStatistics": _facet(INPUT_STATS_FACET, rowCount=edge["records"], size=edge["bytes"])}

    events: list[dict[str, Any]] = []
    for e in graph["edges"]:
        src, dst = nodes.get(e["from"], {}), nodes.get(e["to"], {})
        if e["kind"] == "published" and src.get("type") == "publisher":
            agency = src["agency"]
            events.append(
                event(
                    f"{agency}.publish.{dataset_id}",
                    e,
                    [],
                    [data_ds(dataset_id, owner, out_stats(e))],
                    f"{agency} publishes {dataset_id} to the bus ({e.get('refused', 0)} records refused)",
                )
            )
        elif e["kind"] == "delivered" and dst.get("type") == "grant":
            grant = dst["grant"]
            scenario = dst.get("scenario") or {}
            grant_facet = _facet(
                public_url.rstrip("/") + GRANT_FACET_PATH,
                grantId=grant,
                agency=dst.get("agency"),
                status=dst.get("status"),
                scenarioCode=scenario.get("code"),
                scenarioDescription=scenario.get("description"),
                fields=dst.get("fields") or [],
            )
            view_facets: dict[str, Any] = {}
            fields = _schema_fields(schemas.get(dataset_id), dst.get("fields"))
            if fields:
                view_facets["schema"] = _facet(SCHEMA_FACET, fields=fields)
            deliver = {
                "namespace": names.namespace,
                "name": names.topic("deliver", grant),
                "facets": view_facets,
                "outputFacets": out_stats(e),
            }
            events.append(
                event(
                    f"databus.route.{grant}",
                    e,
                    [data_ds(dataset_id, owner, in_stats(e), "inputFacets")],
                    [deliver],
                    f"route {dataset_id} to grant {grant} ({scenario.get('code')}) for {dst.get('agency')}",
                    {"databus_grant": grant_facet},
                )
            )
        elif e["kind"] == "consumed" and src.get("type") == "grant":
            grant = src["grant"]
            deliver = {
                "namespace": names.namespace,
                "name": names.topic("deliver", grant),
                "facets": {},
                "inputFacets": in_stats(e),
            }
            outputs = []
            if dst.get("type") == "connector":
                outputs.append(
                    {
                        "namespace": f"databus-connector://{dst.get('agency')}",
                        "name": dst["connector"],
                        "facets": {},
                        "outputFacets": out_stats(e),
                    }
                )
                agency = dst.get("agency")
            else:
                agency = dst.get("agency")
            via = e.get("via") or {}
            events.append(
                event(
                    f"{agency}.consume.{grant}"
                    + (f".{dst['connector']}" if dst.get("type") == "connector" else ""),
                    e,
                    [deliver],
                    outputs,
                    f"{agency} consumes grant {grant}" + (f" via {', '.join(sorted(via))}" if via else ""),
                )
            )
        elif e["kind"] == "derived" and dst.get("type") == "derived_dataset":
            derived = dst["dataset"]
            events.append(
                event(
                    f"databus.derive.{derived}",
                    e,
                    [data_ds(dataset_id, owner, None)],
                    [data_ds(derived, None, out_stats(e))],
                    f"{derived} is derived from {dataset_id}",
                )
            )
    return events
