"""Which broker the bus is talking to, and whether it lost its topics since the bus last looked (R14).

The embedded broker keeps everything in memory, and a Kafka cluster can be rebuilt: afterwards every
topic is empty or gone while Redis (idempotency answers) and the store (lineage, cursors handed out)
still remember the old one. The bus notices by a **marker topic** ``<prefix>bus.identity`` that it
creates itself: its topic id (KIP-516) is unique per creation, so ``<cluster id>/<marker topic id>``
names one incarnation of the broker's data (the cluster id alone does not: Tansu always answers
``tansu_cluster``). The token last seen is kept in Redis; a different token, or no marker while Redis
remembers one, is a **broker loss**: recorded once (compare-and-set in Redis), with an incident, a log
line naming the datasets whose topics went, and a Redis record that ``/healthz`` reports as 503 until
the incident is resolved.

Idempotency answers carry the token they were made under (``bind_token`` / ``token_still_valid``), so
a replay after a loss publishes again instead of answering with record ids that no longer exist.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum

import redis
from confluent_kafka import KafkaException, TopicCollection
from sqlalchemy import select

from bus.context import BusContext
from bus.exchange.kafka import admin, ensure_topics
from bus.store.models import Dataset, Incident

log = logging.getLogger(__name__)

MARKER = "bus.identity"
LOSS_KIND = "broker_lost"
_SWAP = """
local known = redis.call('GET', KEYS[1])
if (known or '') == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0
"""


@dataclass(frozen=True)
class BrokerIdentity:
    """One incarnation of the broker's data: the cluster id and the topic id of the bus's marker."""

    cluster_id: str
    marker_id: str

    @property
    def token(self) -> str:
        return f"{self.cluster_id}/{self.marker_id}"


class Change(StrEnum):
    FIRST_SEEN = "first_seen"  # nothing remembered: adopt this broker
    SAME = "same"
    LOST = "lost"  # the marker is gone or was created again: every topic may have lost its records


def compare(known: str | None, current: str | None) -> Change:
    """Pure: what the remembered token and the broker's current one (None: no marker) say."""
    if not known:
        return Change.FIRST_SEEN
    if current is not None and current == known:
        return Change.SAME
    return Change.LOST


@dataclass(frozen=True)
class BrokerLoss:
    """A detected loss, as kept in Redis and reported by ``/healthz``."""

    detected_at: str
    previous: str
    current: str
    datasets: list[str]
    incident_id: int | None

    def reason(self) -> str:
        names = ", ".join(self.datasets[:20]) + (" ..." if len(self.datasets) > 20 else "")
        return (
            f"the broker lost its topics (detected {self.detected_at}; identity {self.previous} -> "
            f"{self.current}): records of {len(self.datasets)} dataset(s) [{names}] acknowledged "
            "before may be gone; list them with `databus lineage undelivered --since ...`, re-send, "
            f"then resolve incident {self.incident_id}"
        )


def marker_topic(ctx: BusContext) -> str:
    return f"{ctx.topics.prefix}{MARKER}"


def _known_key(ctx: BusContext) -> str:
    return ctx.rkey("broker", "identity")


def _loss_key(ctx: BusContext) -> str:
    return ctx.rkey("broker", "loss")


def read_identity(bootstrap: str, topic: str, timeout: float = 2.0) -> BrokerIdentity | None:
    """The broker's identity, or None when the marker topic does not exist (a broker that lost it)."""
    client = admin(bootstrap)
    cluster = client.describe_cluster(request_timeout=timeout).result(timeout + 0.5)
    try:
        desc = client.describe_topics(TopicCollection([topic]), request_timeout=timeout)[topic].result(
            timeout + 0.5
        )
    except KafkaException as exc:
        if "UNKNOWN_TOPIC" in str(exc):
            return None
        raise
    return BrokerIdentity(str(cluster.cluster_id or ""), str(desc.topic_id))


def establish(bootstrap: str, topic: str, timeout: float = 2.0) -> BrokerIdentity:
    """The broker's identity, creating the marker topic first when it is missing."""
    ident = read_identity(bootstrap, topic, timeout)
    if ident is None:
        ensure_topics(bootstrap, [topic], partitions=1, timeout=timeout)
        ident = read_identity(bootstrap, topic, timeout)
    if ident is None:
        raise RuntimeError(f"the broker does not show the marker topic {topic} it just created")
    return ident


_cache: dict[tuple[str, str], tuple[str, float]] = {}
_cache_lock = threading.Lock()


def current_token(ctx: BusContext, max_age: float = 1.0) -> str:
    """The broker's identity token, at most ``max_age`` seconds old (0: ask the broker now)."""
    key = (ctx.bootstrap, marker_topic(ctx))
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[1] <= max_age:
        return hit[0]
    token = establish(ctx.bootstrap, marker_topic(ctx)).token
    with _cache_lock:
        _cache[key] = (token, now)
    return token


def bind_token(ctx: BusContext) -> str:
    """The token an idempotency answer made now is bound to."""
    return current_token(ctx, max_age=1.0)


def token_still_valid(ctx: BusContext, stored: str | None) -> bool:
    """Whether an idempotency answer bound to ``stored`` still names records on this broker: asked of
    the broker now (replays are rare; a stale cache would answer ids that no longer exist)."""
    return stored is not None and stored == current_token(ctx, max_age=0)


def check(ctx: BusContext, r: redis.Redis | None = None, timeout: float = 2.0) -> BrokerLoss | None:
    """Compare the broker with the one Redis remembers; record a loss once; the open loss, if any.

    Called by the watch worker every ``WATCH_SECONDS`` and by ``/healthz`` (with its own short-timeout
    Redis client ``r``); cheap: two admin requests and two Redis commands."""
    r = r if r is not None else ctx.redis
    topic = marker_topic(ctx)
    before = read_identity(ctx.bootstrap, topic, timeout)
    current = before if before is not None else establish(ctx.bootstrap, topic, timeout)
    with _cache_lock:
        _cache[(ctx.bootstrap, topic)] = (current.token, time.monotonic())
    raw_known = r.get(_known_key(ctx))
    known = raw_known.decode() if isinstance(raw_known, bytes) else raw_known
    change = compare(known, before.token if before is not None else None)
    if change is Change.FIRST_SEEN:
        r.eval(_SWAP, 1, _known_key(ctx), "", current.token)
    elif change is Change.LOST and r.eval(_SWAP, 1, _known_key(ctx), known or "", current.token):
        _record_loss(ctx, r, known or "", current.token)
    return open_loss(ctx, r)


def _record_loss(ctx: BusContext, r: redis.Redis, previous: str, current: str) -> None:
    """The one process that swapped the token reports the loss: incident, log line, Redis record."""
    from bus.lineage.incidents import record_violations

    with ctx.store.session() as s:
        datasets = sorted(s.scalars(select(Dataset.id).where(Dataset.status == "approved")))
    now = datetime.now(UTC).isoformat()
    loss = BrokerLoss(now, previous, current, datasets, None)
    opened = record_violations(
        ctx,
        [
            {
                "kind": LOSS_KIND,
                "code": None,
                "agency_id": None,
                "dataset_id": None,
                "grant_id": None,
                "record_ids": [],
                "trace_ids": [],
                "detail": loss.reason(),
            }
        ],
    )
    loss = BrokerLoss(now, previous, current, datasets, int(opened[0]["id"]) if opened else None)
    r.set(_loss_key(ctx), json.dumps(asdict(loss)))
    log.error("broker loss: %s; datasets whose topics went: %s", loss.reason(), ", ".join(datasets) or "none")


def open_loss(ctx: BusContext, r: redis.Redis | None = None) -> BrokerLoss | None:
    """The recorded loss while its incident is open (resolving the incident clears it)."""
    r = r if r is not None else ctx.redis
    raw = r.get(_loss_key(ctx))
    if raw is None:
        return None
    loss = BrokerLoss(**json.loads(raw))
    if loss.incident_id is not None:
        with ctx.store.session() as s:
            row = s.get(Incident, loss.incident_id)
        if row is None or row.status != "open":
            r.delete(_loss_key(ctx))
            return None
    return loss


def forget(ctx: BusContext) -> None:
    """A clean stop of ``databus up`` discards its embedded broker on purpose: forget its identity so
    the next start adopts the new broker without reporting a loss (idempotency answers and cursors of
    the old one are still refused: they carry or point at the old incarnation)."""
    try:
        ctx.redis.delete(_known_key(ctx))
    except Exception:
        log.warning("could not forget the embedded broker's identity; the next start reports a loss")


WATCH_SECONDS = 2.0


class BrokerWatch:
    """A worker that runs ``check`` every ``WATCH_SECONDS``, so a loss is reported (incident, log line)
    even when nobody asks ``/healthz``."""

    name = "broker-watch"

    def __init__(self, ctx: BusContext, interval: float = WATCH_SECONDS) -> None:
        self.ctx = ctx
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ok = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                check(self.ctx)
                self._ok = True
            except Exception:  # the broker, Redis or the store is down: /healthz names which
                self._ok = False
                log.debug("broker identity check failed", exc_info=True)
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def healthy(self) -> bool:
        return self._ok


def make_worker(ctx: BusContext) -> BrokerWatch:
    return BrokerWatch(ctx)
