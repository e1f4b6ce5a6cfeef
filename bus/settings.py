"""One typed settings object, read once from the environment (``BUS_*`` and ``OTEL_*``).

Every external URL, when set, replaces the corresponding embedded part.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

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
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "BUS_OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP endpoint of an OpenTelemetry Collector",
    )
    lineage_retention_days: int = Field(default=365, description="how long lineage rows are kept")
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
