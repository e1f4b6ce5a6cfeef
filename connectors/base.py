"""The one base class every connector kind shares, and the small vocabulary around it.

A connector talks to one external system; the bus side (publishing through the SDK path, reading a
grant's delivered view, positions, retries, dead letters, status rows) is the runtime's job
(`bus.connectors_runtime`). So a kind only has to: validate its config (a pydantic model), ``start``
from a saved position, ``stop``, report ``status``, and either ``poll`` records (sources) or ``write``
them (sinks). Constructors never touch the network.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bus.errors import ConnectorConfigInvalid

# --- secrets: stored in the config, never echoed -------------------------------------------------
SECRET_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "authorization",
    "credential",
    "private_key",
)
MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@/\s]+)(?P<at>@)")


def is_secret_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return any(word in k for word in SECRET_WORDS)


def mask_text(text: str) -> str:
    """Hide passwords inside URLs (``postgresql://u:pw@h/db`` -> ``postgresql://u:***@h/db``)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)


def mask_config(value: Any, key: str = "") -> Any:
    """A copy of a config that can be shown and logged: secret keys masked, URL passwords hidden."""
    if isinstance(value, Mapping):
        return {
            k: (MASK if is_secret_key(str(k)) and v not in (None, "") else mask_config(v, str(k)))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_config(v, key) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


# --- config -------------------------------------------------------------------------------------
class RetryPolicy(BaseModel):
    """Exponential backoff with full jitter; after ``max_attempts`` failed tries the connector stops."""

    model_config = ConfigDict(extra="forbid")
    max_attempts: int = Field(default=8, ge=1, le=1000)
    initial_backoff: float = Field(default=0.2, gt=0, le=60)
    max_backoff: float = Field(default=30.0, gt=0, le=3600)


class ConnectorConfig(BaseModel):
    """Settings every kind has; each kind subclasses this with its own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    batch_size: int = Field(500, ge=1, le=10_000, description="records per batch (one position save each)")
    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy())


def config_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Field and message of each problem, without the offending input (it may be a secret)."""
    out = []
    for e in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in e.get("loc", ())) or "config"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"field": loc, "message": mask_text(msg)})
    return out


# --- records between a connector and the runtime -------------------------------------------------
@dataclass
class SourceRecord:
    """One record read from an external system, already shaped like the dataset's schema."""

    value: dict[str, Any]
    key: str | None = None
    origin: str = ""  # where it came from (file:line, table:id, topic), for dead letters and logs
    # The record's place in the source, the same each time that place is read (file inode and byte
    # offset, table row's incremental and tie-break values): the runtime derives the record's
    # ``bus-record-id`` from it, so a batch read again after a crash repeats its ids instead of
    # inventing new ones. ``None`` when the source has no replayable position (MQTT): a new id.
    position_id: str | None = None


@dataclass
class Unreadable:
    """Input a source could not turn into a record: goes to the dead-letter topic with the reason."""

    raw: bytes
    detail: str
    origin: str = ""
    code: str = "connector.record_refused"


@dataclass
class SourceBatch:
    records: list[SourceRecord]
    position: dict[str, Any]  # where to resume once this batch is durably published
    unreadable: list[Unreadable] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records) + len(self.unreadable)


@dataclass(frozen=True)
class SinkRecord:
    """One record of a grant's delivered view, as a sink writes it."""

    record_id: str
    value: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Refused:
    """A record the destination refused for good (not a transient failure): dead-lettered with ``detail``."""

    record: SinkRecord
    detail: str


@dataclass(frozen=True)
class SourceContext:
    """What a source knows about the bus side: the dataset it feeds and its current schema."""

    connector: str
    dataset_id: str
    agency_id: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class SinkContext:
    """What a sink knows about the bus side: the grant, its scenario and the delivered view's schema."""

    connector: str
    grant_id: str
    agency_id: str
    dataset_id: str
    scenario: str
    view_schema: dict[str, Any]


# --- failures a connector reports to the runtime ------------------------------------------------
class TransientFailure(Exception):
    """The external system failed in a way worth retrying (network, 5xx, lock timeout).

    ``retry_after`` (seconds), when the system said so, replaces the computed backoff.
    """

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class PermanentFailure(Exception):
    """The connector cannot go on (bad credentials, missing table, refused destination): stop and report."""


# --- the base classes ----------------------------------------------------------------------------
class Connector(ABC):
    """One connector kind. Subclasses set ``kind``, ``role``, ``Config`` and implement the I/O."""

    kind: ClassVar[str]
    role: ClassVar[Literal["source", "sink"]]
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init__(self, name: str, config: ConnectorConfig) -> None:
        self.name = name
        self.config = config

    @classmethod
    def validate_config(cls, raw: Mapping[str, Any] | None) -> ConnectorConfig:
        """Parse ``raw`` into this kind's config or raise ``connector.config_invalid`` naming each field."""
        if raw is not None and not isinstance(raw, Mapping):
            raise ConnectorConfigInvalid("config must be a JSON object", errors=[])
        try:
            return cls.Config.model_validate(dict(raw or {}))
        except ValidationError as exc:
            errors = config_errors(exc)
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:6])
            raise ConnectorConfigInvalid(f"invalid {cls.kind} config: {detail}", errors=errors) from None

    @abstractmethod
    def stop(self) -> None:
        """Release what ``start`` opened; safe to call twice or after a failed start."""

    def status(self) -> dict[str, Any]:
        """Kind-specific figures merged into the connector's status (e.g. ``lag`` and ``lag_unit``)."""
        return {}


class Source(Connector):
    role: ClassVar[Literal["source", "sink"]] = "source"

    @abstractmethod
    def start(self, context: SourceContext, position: dict[str, Any]) -> None:
        """Connect and resume after ``position`` (empty: from the beginning)."""

    @abstractmethod
    def poll(self, max_records: int, timeout: float) -> SourceBatch:
        """Up to ``max_records`` new records, waiting at most ``timeout`` seconds for the first."""

    def commit(self, position: dict[str, Any]) -> None:
        """Called once the batch ending at ``position`` is durably on the bus (MQTT acks here)."""


class Sink(Connector):
    role: ClassVar[Literal["source", "sink"]] = "sink"

    @abstractmethod
    def destination(self) -> str:
        """Where records go (a URL, or ``file://host/path``), for the egress check at registration (R8)."""

    @abstractmethod
    def start(self, context: SinkContext) -> None:
        """Connect (and prepare the destination, e.g. create the table)."""

    @abstractmethod
    def write(self, records: list[SinkRecord]) -> list[Refused]:
        """Write a batch durably; return the records refused for good.

        Raise ``TransientFailure`` to have the whole batch retried with backoff, ``PermanentFailure``
        to stop the connector. Returning means every record not refused is durably written.
        """
