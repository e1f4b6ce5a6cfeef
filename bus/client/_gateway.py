"""The SDK's few calls to the gateway (discovery only: records themselves go through Kafka)."""

from __future__ import annotations

from typing import Any

import httpx

from bus.errors import BusError


def call(url: str, api_key: str, path: str, **params: Any) -> Any:
    """GET ``path``; a problem+json answer becomes a ``BusError`` with the gateway's code and detail."""
    with httpx.Client(
        base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as client:
        resp = client.get(path, params=params or None)
    if resp.status_code >= 400:
        try:
            body = resp.json()
        except ValueError:
            body = {"detail": resp.text, "code": "http.error"}
        err = BusError(str(body.get("detail", "")), code=str(body.get("code", "http.error")))
        err.status = resp.status_code
        raise err
    return resp.json()
