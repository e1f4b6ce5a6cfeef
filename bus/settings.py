"""One typed settings object, read once from the environment (``BUS_*`` and ``OTEL_*``).

Every external URL, when set, replaces the corresponding embedded part.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUS_", extra="ignore")

    data_dir: Path = Field(default=Path(".databus"), description="where the embedded parts keep their files")
    kafka_bootstrap: str | None = Field(default=None, description="external Kafka bootstrap servers")
    redis_url: str | None = Field(default=None, description="external Redis URL")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the control-plane store")
    admin_key: SecretStr | None = Field(default=None, description="admin API key (else <data-dir>/admin.key)")
    topic_prefix: str = Field(
        default="", description="prefix for every topic, so several buses share a cluster"
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="master secret for record signatures and pseudonyms (else <data-dir>/bus.key)",
    )
    max_record_bytes: int = Field(default=1_000_000, description="largest accepted record value")
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="largest accepted HTTP request body; larger ones are refused with request.too_large "
        "(413) before they are parsed",
    )
    kafka_profile: str = Field(
        default="auto",
        description="'embedded' (short sessions, fast fetch) or 'cluster'; 'auto' picks embedded when no "
        "external bootstrap is set",
    )
    worker_group_mode: bool = Field(
        default=False,
        description="validators and routers subscribe as the Kafka consumer groups "
        "'<prefix>bus.validator' and '<prefix>bus.router' instead of assigning every partition to "
        "themselves: set it on every node when extra `databus worker ... --group` replicas share the "
        "work (docker-compose does)",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = Field(
        default=None,
        description="librdkafka 'security.protocol' of the bus's own Kafka clients (unset: PLAINTEXT)",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] | None = Field(
        default=None, description="librdkafka 'sasl.mechanism' (docker-compose: SCRAM-SHA-512)"
    )
    kafka_sasl_username: str | None = Field(
        default=None,
        description="the bus's SASL user: its principal is User:<name> (the broker's super user in "
        "docker-compose; 'bus' when unset in the ACL plan)",
    )
    kafka_sasl_password: SecretStr | None = Field(default=None, description="the bus's SASL password")
    kafka_acls: bool = Field(
        default=False,
        description="keep the broker's ACLs equal to the plan of the catalogue and grants (Apache Kafka "
        "with an authorizer only): every grant or dataset change applies the difference after its commit",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "BUS_OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP endpoint of an OpenTelemetry Collector",
    )
    public_url: str | None = Field(
        default=None,
        description="the bus's public base URL (https://bus.example.gov): problem `type` URIs and the "
        "OpenLineage facet `_schemaURL` point under it; unset, they point at the URL each request came to",
    )
    jaeger_url: str | None = Field(
        default=None, description="Jaeger UI base URL: the console links a record's trace id there"
    )
    lineage_retention_days: int = Field(default=365, description="how long lineage rows are kept")
    stall_seconds: float = Field(
        default=30, gt=0, description="a worker stuck on the same offsets this long makes /healthz answer 503"
    )
    grant_key_rotate_hours: float = Field(
        default=24, gt=0, description="a grant's data key is replaced this often (and at every grant change)"
    )
    grant_key_retention_days: float = Field(
        default=30, ge=0, description="keys of an ended grant are destroyed this long after it ended"
    )
    incident_window_seconds: float = Field(
        default=600.0,
        gt=0,
        description="violations of one agency, kind and dataset join the open incident while each comes "
        "within this many seconds of the previous one; after a quiet window a new incident opens",
    )
    incident_signature_burst: int = Field(
        default=20,
        ge=1,
        description="records with a bad signature from one agency in the current and previous minute that "
        "open a bad_signature_burst incident",
    )
    incident_refusal_rise: int = Field(
        default=50,
        ge=1,
        description="refusals of one agency in a minute needed (with the factor) to open a refusal_spike "
        "incident",
    )
    incident_refusal_rise_factor: float = Field(
        default=5.0,
        gt=0,
        description="a refusal_spike also needs this many times the agency's average refusals a minute over "
        "the ten minutes before",
    )

    min_group_size: int = Field(
        default=10, ge=2, description="R11: the bus floor of an analysis rule's min_group_size (k)"
    )
    window_idle_close_seconds: float = Field(
        default=5.0,
        gt=0,
        description="R11: with no record for this long, operator windows close on the wall clock",
    )
    window_allowed_lateness_seconds: float = Field(
        default=2.0, ge=0, description="R11: how late (event time) a record may come into an open window"
    )

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'bus.db').resolve()}"

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    def kafka_security(self) -> dict[str, str]:
        """The librdkafka settings that authenticate the bus's own clients (empty when none are set)."""
        conf: dict[str, str] = {}
        if self.kafka_security_protocol:
            conf["security.protocol"] = self.kafka_security_protocol
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return conf

    @property
    def fast_profile(self) -> bool:
        """Short group sessions and fetch waits: right for the embedded broker, refused by Apache Kafka."""
        if self.kafka_profile == "auto":
            return self.embedded_kafka
        return self.kafka_profile == "embedded"


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment, with explicit overrides (CLI flags) on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]
