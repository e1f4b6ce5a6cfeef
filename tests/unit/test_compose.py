"""The production shape (docker-compose.yml) is wired the way the bus reads its settings.

No Docker engine runs here, so the file's structure is what we check: every part the bus needs
exists, has a health check, and reaches the bus through the same variables as on a laptop.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bus.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_part_the_bus_needs_is_a_service_with_a_health_check() -> None:
    services = _compose()["services"]
    for name in ("kafka", "redis", "postgres", "otel-collector", "jaeger", "bus"):
        assert name in services, f"docker-compose.yml lacks the {name} service"
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert (
        services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    )  # KRaft, no ZooKeeper


def test_bus_is_wired_to_each_part_through_its_settings_variables() -> None:
    compose = _compose()
    services = compose["services"]
    env = services["bus"]["environment"]
    assert env["BUS_KAFKA_BOOTSTRAP"].split(":")[0] == "kafka"
    assert env["BUS_REDIS_URL"].startswith("redis://redis:")
    assert "@postgres:5432/" in env["BUS_DATABASE_URL"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://otel-collector:")
    # the variable names are the ones Settings reads (a typo would silently fall back to embedded parts)
    fields = {f"BUS_{name.upper()}" for name in Settings.model_fields} | {
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
    }
    assert set(env) <= fields, f"unknown settings variables: {set(env) - fields}"
    deps = services["bus"]["depends_on"]
    for part in ("kafka", "redis", "postgres"):
        assert deps[part]["condition"] == "service_healthy"
    assert services["pipeline"]["environment"] == env  # scaled-out workers share one configuration


def test_collector_config_in_the_repo_forwards_traces_to_jaeger() -> None:
    compose = _compose()
    mount = compose["services"]["otel-collector"]["volumes"][0].split(":")[0]
    config = yaml.safe_load((ROOT / mount).read_text())
    assert "otlp" in config["receivers"]
    exporters = config["service"]["pipelines"]["traces"]["exporters"]
    jaeger = [e for e in exporters if e.startswith("otlp/")]
    assert jaeger and config["exporters"][jaeger[0]]["endpoint"].startswith("jaeger:")


def test_bus_image_is_built_from_the_dockerfile_and_runs_databus_up() -> None:
    assert _compose()["services"]["bus"]["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert '"databus", "up"' in dockerfile
    assert "HEALTHCHECK" in dockerfile and "USER " in dockerfile  # never run as root


def test_scaled_out_pipeline_command_is_a_valid_databus_invocation() -> None:
    """The compose file's worker command must parse with the real CLI (a flag missing its value would
    make every replica exit at start)."""
    from typer.testing import CliRunner

    from bus.cli import app

    command = _compose()["services"]["pipeline"]["command"]
    assert command[0] == "databus"
    result = CliRunner().invoke(app, [*command[1:], "--help"])
    assert result.exit_code == 0, result.output
    group = command[command.index("--group") + 1]
    assert group and not group.startswith("-")


def test_r14_pipeline_replicas_share_one_consumer_group_with_the_bus_pipeline() -> None:
    """The bus's in-process pipeline and the replicas must be members of one group: a pipeline that assigns
    itself every partition next to subscribers would deliver every record twice and its commits would
    fight theirs. So the bus runs its workers in group mode, and the replicas name the group the bus's
    pipeline derives (``<BUS_TOPIC_PREFIX>bus.pipeline``)."""
    from bus.settings import Settings

    services = _compose()["services"]
    env = services["bus"]["environment"]
    assert Settings(worker_group_mode=env["BUS_WORKER_GROUP_MODE"]).worker_group_mode is True
    command = services["pipeline"]["command"]
    prefix = env.get("BUS_TOPIC_PREFIX", "")
    assert command[command.index("--group") + 1] == f"{prefix}bus.pipeline"
    assert services["pipeline"]["environment"] == env  # same bus: same prefix, keys, store
