"""What every part of a running bus shares: settings, store, Redis, the broker address, secrets.

Built once by `databus up`, the workers and the tests; nothing here touches the network until
``start()``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bus.exchange.topics import Topics
from bus.keys import load_or_create_admin_key, load_or_create_master_secret
from bus.settings import Settings
from bus.store import Store


@dataclass
class BusContext:
    settings: Settings
    bootstrap: str
    redis_url: str
    store: Store
    admin_key: str
    master_secret: bytes
    topics: Topics
    _redis: redis.Redis | None = field(default=None, repr=False)
    _producer: Any = field(default=None, repr=False)

    @classmethod
    def create(cls, settings: Settings, *, bootstrap: str, redis_url: str) -> BusContext:
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        admin = (settings.admin_key.get_secret_value() if settings.admin_key
                 else load_or_create_admin_key(data_dir))
        master = (bytes.fromhex(settings.signing_key.get_secret_value()) if settings.signing_key
                  else load_or_create_master_secret(data_dir))
        return cls(settings=settings, bootstrap=bootstrap, redis_url=redis_url,
                   store=Store(settings.resolved_database_url), admin_key=admin, master_secret=master,
                   topics=Topics(settings.topic_prefix))

    def start(self) -> BusContext:
        self.store.start()
        return self

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=2,
                                               health_check_interval=30)
        return self._redis

    @property
    def producer(self) -> Any:
        """One shared idempotent producer for the gateway (thread-safe in librdkafka)."""
        if self._producer is None:
            from bus.exchange.kafka import new_producer

            self._producer = new_producer(self.bootstrap, self.settings)
        return self._producer

    def rkey(self, *parts: str) -> str:
        """A Redis key namespaced like the topics, so buses sharing a Redis never collide."""
        return f"{self.topics.prefix}bus:" + ":".join(parts)

    def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.flush(10)
            self._producer = None
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()
            self._redis = None
        self.store.close()
