"""The bus under benchmark, shaped like production: separate processes for the gateway and the pipeline,
on the embedded broker and Redis; the benchmark process holds only the clients.

Baselines use the same broker, the same number of topics and the same number of middle processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bus.embedded import EmbeddedKafka, EmbeddedRedis, die_with_parent, free_port
from bus.samples import licence_schema

DATABUS = str(Path(sys.executable).with_name("databus"))
ALL_FIELDS = [f["name"] for f in licence_schema()["fields"]]


def _poll(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception:
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {timeout}s")


@dataclass
class BusRig:
    """Embedded broker + Redis here; the gateway (`databus up --no-workers`) and the workers
    (`databus worker pipeline`) as child processes."""

    inproc: bool = False
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="databus-bench-")))
    kafka: EmbeddedKafka | None = None
    redis: EmbeddedRedis | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    port: int = 0
    admin_key: str = "bench-admin-" + os.urandom(8).hex()
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        assert self.kafka is not None
        return self.kafka.bootstrap

    def env(self) -> dict[str, str]:
        assert self.kafka and self.redis
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "OTEL_"))}
        env.update(
            BUS_KAFKA_BOOTSTRAP=self.kafka.bootstrap,
            BUS_REDIS_URL=self.redis.url,
            BUS_DATA_DIR=str(self.tmp / "data"),
            BUS_ADMIN_KEY=self.admin_key,
            BUS_KAFKA_PROFILE="embedded",
            BUS_SIGNING_KEY=os.urandom(32).hex(),
        )
        return env

    def start(self) -> BusRig:
        try:
            return self._start()
        except BaseException:
            self.stop()  # never leave a broker, Redis or worker behind
            raise

    def _start(self) -> BusRig:
        self.kafka = EmbeddedKafka(self.tmp)
        self.kafka.start()
        self.redis = EmbeddedRedis(self.tmp)
        self.redis.start()
        env = self.env()
        self._env = env
        self.port = free_port()
        log = open(self.tmp / "bus.log", "ab")  # noqa: SIM115
        up = [DATABUS, "up", "--port", str(self.port)] + ([] if self.inproc else ["--no-workers"])
        self.procs.append(
            subprocess.Popen(up, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        )
        if not self.inproc:
            for kind in ("pipeline",):
                self.procs.append(
                    subprocess.Popen(
                        [DATABUS, "worker", kind],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        preexec_fn=die_with_parent,
                    )
                )
        _poll(lambda: httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200, 60, "bus gateway")
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()
        if self.redis:
            self.redis.stop()
        if self.kafka:
            self.kafka.stop()

    def api(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key or self.admin_key}"}, timeout=60
        )

    def agency(self, agency_id: str, roles: list[str] | None = None) -> str:
        with self.api() as c:
            r = c.post(
                "/v1/agencies",
                json={"id": agency_id, "name": agency_id, "region": "140900", "roles": roles or ["agency"]},
            )
            r.raise_for_status()
            key: str = r.json()["api_key"]
        self.keys[agency_id] = key
        return key

    def dataset(self, owner: str, dataset_id: str) -> None:
        """A catalogued, reviewed and approved unconditional dataset with the licence schema."""
        if "reviewer" not in self.keys:
            self.agency("reviewer", ["reviewer"])
        body = {
            "id": dataset_id,
            "title": "Business licences",
            "description": "bench",
            "category": "basic",
            "grade": "general",
            "sharing": {"attribute": "unconditional"},
            "schema": licence_schema(),
        }
        with self.api(self.keys[owner]) as c:
            c.post("/v1/datasets", json=body).raise_for_status()
            c.post(f"/v1/datasets/{dataset_id}/submit").raise_for_status()
        with self.api(self.keys["reviewer"]) as c:
            c.post(
                f"/v1/datasets/{dataset_id}/review", json={"decision": "approve", "comment": "bench"}
            ).raise_for_status()

    def grant(self, agency_id: str, dataset_id: str, fields: list[str] | None = None) -> dict[str, Any]:
        body = {
            "dataset": dataset_id,
            "fields": fields or ALL_FIELDS,
            "scenario": {"code": "bench", "description": "benchmark scenario"},
            "legal_basis": "benchmark legal basis",
        }
        with self.api(self.keys[agency_id]) as c:
            r = c.post("/v1/grants", json=body)
            r.raise_for_status()
            grant: dict[str, Any] = r.json()
            grant["view_schema"] = c.get(f"/v1/grants/{grant['id']}/schema").json()["schema"]
        return grant

    def revoke(self, grant_id: str) -> None:
        with self.api() as c:
            c.post(f"/v1/grants/{grant_id}/revoke", json={"reason": "bench"}).raise_for_status()

    def schema_of(self, dataset_id: str) -> tuple[dict[str, Any], int]:
        with self.api() as c:
            entry = c.get(f"/v1/datasets/{dataset_id}").json()
        return entry["schema"], int(entry["schema_version"])

    def __enter__(self) -> BusRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
