"""``http-sink``: a grant's delivered records POSTed in JSON batches to the grantee's webhook.

Each request carries ``X-Databus-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
HMAC-SHA256(secret, ``"<t>." + body``), so the receiver can check that the batch comes from the bus
and is fresh (``verify_signature`` below does it in three lines), and ``X-Databus-Batch``, a digest of
the batch's record ids, so a receiver can drop a batch it already took after a retry.

Answers: 2xx is success; 408, 425, 429, 5xx and network errors are retried with backoff (honouring
``Retry-After``) and, when they keep failing, the connector stops and reports the last error; 400, 413
and 422 refuse content, so the batch is split to find the refused records, which go to the dead-letter
topic; any other 4xx (wrong URL or credentials) stops the connector at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import Field, field_validator

from connectors.base import (
    ConnectorConfig,
    PermanentFailure,
    Refused,
    Sink,
    SinkContext,
    SinkRecord,
    TransientFailure,
)

SIGNATURE_HEADER = "X-Databus-Signature"
BATCH_HEADER = "X-Databus-Batch"
RETRYABLE = {408, 425, 429}
CONTENT_REFUSED = {400, 413, 422}


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value of ``body``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(
    secret: str, body: bytes, header: str | None, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """For receivers: is ``header`` a valid signature of ``body`` made within ``tolerance`` seconds?"""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


class HttpSinkConfig(ConnectorConfig):
    url: str = Field(description="the grantee's webhook (http or https)")
    secret: str = Field(min_length=16, description="HMAC key shared with the receiver; never shown back")
    headers: dict[str, str] = Field(default_factory=dict, description="extra headers (e.g. Authorization)")
    timeout: float = Field(10.0, gt=0, le=300, description="seconds per request")
    batch_size: int = Field(100, ge=1, le=10_000)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("put credentials in 'headers', not in the URL")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            low = name.lower()
            if low.startswith("x-databus-") or low in ("content-type", "content-length", "host"):
                raise ValueError(f"header {name!r} is set by the connector")
        return v


def _excerpt(resp: httpx.Response) -> str:
    text = resp.text.strip().replace("\n", " ")
    return text[:200] + ("..." if len(text) > 200 else "")


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("retry-after")
    try:
        return min(float(raw), 300.0) if raw else None
    except ValueError:
        return None


class HttpSink(Sink):
    kind: ClassVar[str] = "http-sink"
    Config = HttpSinkConfig

    def __init__(self, name: str, config: HttpSinkConfig) -> None:  # type: ignore[override]
        super().__init__(name, config)
        self.cfg = config
        self._client: httpx.Client | None = None
        self._context: SinkContext | None = None
        self.requests = 0

    def destination(self) -> str:
        return self.cfg.url

    def start(self, context: SinkContext) -> None:
        self._context = context
        self._client = httpx.Client(
            timeout=self.cfg.timeout,
            follow_redirects=False,
            headers={"User-Agent": "databus-http-sink", **self.cfg.headers},
        )

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def body_of(self, records: list[SinkRecord]) -> bytes:
        assert self._context is not None
        doc = {
            "connector": self.name,
            "grant": self._context.grant_id,
            "dataset": self._context.dataset_id,
            "scenario": self._context.scenario,
            "records": [
                {"record_id": r.record_id, "value": r.value, "traceparent": r.headers.get("traceparent")}
                for r in records
            ],
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str).encode()

    def write(self, records: list[SinkRecord]) -> list[Refused]:
        if not records:
            return []
        assert self._client is not None
        body = self.body_of(records)
        batch_id = hashlib.sha256("\n".join(r.record_id for r in records).encode()).hexdigest()[:32]
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.cfg.secret, body),
            BATCH_HEADER: batch_id,
        }
        try:
            self.requests += 1
            resp = self._client.post(self.cfg.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise TransientFailure(f"POST {self.cfg.url} failed: {type(exc).__name__}: {exc}") from None
        status = resp.status_code
        if 200 <= status < 300:
            return []
        detail = f"POST {self.cfg.url} answered {status}: {_excerpt(resp)}"
        if status in RETRYABLE or status >= 500:
            raise TransientFailure(detail, retry_after=_retry_after(resp))
        if status in CONTENT_REFUSED:
            if len(records) == 1:
                return [Refused(records[0], detail)]
            half = len(records) // 2
            return self.write(records[:half]) + self.write(records[half:])
        raise PermanentFailure(detail)

    def status(self) -> dict[str, Any]:
        return {"requests": self.requests}
