"""The loop shared by the validator and the router: consume a batch, process it, commit only after.

At-least-once (R14, no loss): offsets are committed after the batch's output is acknowledged by the
broker and its bookkeeping is written; when processing cannot be done safely (Redis or the store
unreachable, a produce failed), the consumer is rewound to the batch's first offsets and retries
after a backoff, so nothing is skipped and nothing is delivered unchecked (fail closed).

By default the worker *assigns* itself every partition of the topics matching its prefix (starts in
milliseconds on the embedded broker) and rescans for new topics twice a second. With ``group`` set (or
``BUS_WORKER_GROUP_MODE``) it *subscribes* instead, so several processes share the partitions as one
Kafka consumer group, and refreshes metadata every second so a new dataset's topic is picked up.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from abc import ABC, abstractmethod

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from bus.context import BusContext
from bus.errors import Unavailable
from bus.exchange import stalls
from bus.exchange.kafka import (
    ConsumedHeaders,
    assign_from_committed,
    new_consumer,
    new_producer,
    position_of,
)
from bus.exchange.policy_cache import PolicyCache

log = logging.getLogger(__name__)

BATCH = 1000
POLL_TIMEOUT = 0.005  # return a partial batch after 5 ms: latency at low rates, full batches at high ones
TOPIC_SCAN_INTERVAL = 0.5
MAX_SCAN_INTERVAL = 3.0
MAX_BACKOFF = 2.0


class DeliveryFailed(Exception):
    """Some produced records were not acknowledged by the broker."""


class BatchWorker(ABC):
    """Every long-lived consuming loop of the bus: the pipeline and the receipts worker."""

    name = "worker"
    uses_policy = True  # False: the worker decides nothing against the policy (no cache, no listener)

    def __init__(
        self,
        ctx: BusContext,
        *,
        topic_prefix: str,
        group: str | None = None,
        cache: PolicyCache | None = None,
    ) -> None:
        self.ctx = ctx
        self.topic_prefix = topic_prefix  # e.g. "<bus prefix>ingress."
        # a worker that assigns itself every partition must never share its group with subscribers (it
        # would deliver what they deliver, and its commits would fight theirs): with replicas, every
        # worker of the kind subscribes (BUS_WORKER_GROUP_MODE on the nodes that run them in-process)
        self.group_mode = group is not None or ctx.settings.worker_group_mode
        # the default group is derived from the worker's name: "<bus prefix>bus.validator", "...bus.router"
        self.group_id = group or f"{ctx.topics.prefix}bus.{self.name}"
        self.cache = cache or PolicyCache(ctx, listen=self.uses_policy)
        self._own_cache = cache is None and self.uses_policy
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ok = False
        self._last_loop = 0.0
        self._failed = 0
        self.last_error: str | None = None
        self.paused_since: float | None = None  # set while failing closed
        self.stuck_at: tuple[str, int, int] | None = None  # first position of the batch in hand
        self.stuck_since: float | None = None  # when that batch was first taken
        self._watch = stalls.StallWatch(ctx, self)
        self.batches = 0

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._own_cache:
            self.cache.start()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._watch.start()

    def stop(self) -> None:
        self._stop.set()
        self._watch.stop()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        if self._own_cache:
            self.cache.stop()

    def healthy(self) -> bool:
        alive = self._thread is not None and self._thread.is_alive()
        return alive and self._ok and self.paused_since is None and time.monotonic() - self._last_loop < 10

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Block until the worker stops (standalone ``databus worker``)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    # --- the loop --------------------------------------------------------------------------------
    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failed += 1

    def _clients(self) -> tuple[Consumer, Producer]:
        extra = {}
        if self.group_mode:
            # a regex subscription sees a topic created later (a newly approved dataset) only at the next
            # metadata refresh: librdkafka's default of 5 minutes left new datasets unrouted that long
            extra["topic.metadata.refresh.interval.ms"] = int(TOPIC_SCAN_INTERVAL * 2000)
        consumer = new_consumer(self.ctx.bootstrap, self.group_id, self.ctx.settings, **extra)
        # room for the largest record the bus accepts plus its headers, so no accepted record is unsendable
        room = max(1_000_000, self.ctx.settings.max_record_bytes + 65_536)
        producer = new_producer(self.ctx.bootstrap, self.ctx.settings, **{"message.max.bytes": room})
        if self.group_mode:
            consumer.subscribe([f"^{re.escape(self.topic_prefix)}.*"])
        return consumer, producer

    def _run(self) -> None:
        consumer, producer = self._clients()
        assigned: set[str] = set()
        next_scan = 0.0
        backoff = 0.1
        try:
            self._ok = True
            while not self._stop.is_set():
                self._last_loop = time.monotonic()
                if not self.group_mode and (self._last_loop >= next_scan or self.scan_due()):
                    self._scan(consumer, assigned)
                    # a scan reads every topic's metadata (57 ms with 2,000 topics): spend no more than
                    # ~5% of the loop on it, but never let a new topic wait longer than MAX_SCAN_INTERVAL
                    spent = time.monotonic() - self._last_loop
                    next_scan = self._last_loop + min(max(TOPIC_SCAN_INTERVAL, 20 * spent), MAX_SCAN_INTERVAL)
                self.idle()
                msgs = [m for m in consumer.consume(BATCH, POLL_TIMEOUT) if self._usable(m)]
                if not msgs:
                    continue
                done = self._one_batch(consumer, producer, msgs, backoff)
                if done is None:
                    break  # stopping with the batch's evidence unwritten: not committed, it comes again
                backoff = 0.1 if done else min(backoff * 2, MAX_BACKOFF)
        except Exception:
            self._ok = False
            log.exception("%s stopped on an unexpected error", self.name)
            raise
        finally:
            try:
                producer.flush(5)
            finally:
                consumer.close()

    def _one_batch(
        self, consumer: Consumer, producer: Producer, msgs: list[Message], backoff: float
    ) -> bool | None:
        """Process, deliver, settle and commit one batch: True done, False retried later (fail closed), None
        stopped before its evidence was stored."""
        if self.stuck_at is None:
            self.stuck_at, self.stuck_since = _first_position(msgs), time.monotonic()
        try:
            self._failed = 0
            self.process(msgs, producer)
            if producer.flush(30) or self._failed:
                raise DeliveryFailed(f"{self._failed} record(s) not acknowledged by the broker")
        except (Unavailable, DeliveryFailed) as exc:
            self._pause(consumer, msgs, exc, backoff)
            return False
        except Exception as exc:  # a bug must not lose records either: rewind and retry
            log.exception("%s: batch failed; rewinding", self.name)
            self._pause(consumer, msgs, exc, backoff)
            return False
        if not self._settle():
            return None
        try:
            consumer.commit(offsets=_next_offsets(msgs), asynchronous=False)
        except KafkaException as exc:
            # the batch is delivered and its bookkeeping written; a refused commit (a rebalance took the
            # partition, the broker is briefly away) only means the next owner of these offsets reads the
            # batch again: at-least-once, never a reason to stop the worker
            log.warning("%s: commit refused (%s); the batch may be delivered again", self.name, exc)
        self.batches += 1
        self.stuck_at = self.stuck_since = None
        if self.paused_since is not None:
            log.info("%s resumed after %.1fs", self.name, time.monotonic() - self.paused_since)
            self.paused_since = None
            self.last_error = None
        return True

    def stall(self) -> stalls.Stall | None:
        """Where this worker has held the same batch for ``BUS_STALL_SECONDS`` (failing closed, a call that
        does not return, a bug it retries), or ``None``. Read by its watch thread and ``/healthz``."""
        since, at = self.stuck_since, self.stuck_at
        if since is None or at is None:
            return None
        held = time.monotonic() - since
        if held < self.ctx.settings.stall_seconds:
            return None
        topic, partition, offset = at
        return stalls.Stall(
            self.name, stalls.PROCESS, topic, partition, offset, round(held, 1), self.last_error
        )

    def _settle(self) -> bool:
        """Write the evidence of a batch whose outputs the broker acknowledged, retrying until it is stored.

        Never re-produces: a store or Redis outage after delivery only delays the commit (the worker takes
        no new batch meanwhile, so nothing is delivered without evidence). False if stopped first."""
        backoff = 0.1
        while True:
            try:
                self.after_delivery()
                return True
            except Exception as exc:
                if self.paused_since is None:
                    self.paused_since = time.monotonic()
                    log.warning("%s: evidence of a delivered batch not stored (%s); retrying", self.name, exc)
                self.last_error = f"evidence not stored: {exc}"
                self._last_loop = time.monotonic()
                if self._stop.wait(backoff):
                    return False
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _pause(self, consumer: Consumer, msgs: list[Message], exc: Exception, backoff: float) -> None:
        """Fail closed: nothing of this batch is committed; seek back and retry after a backoff."""
        if self.paused_since is None:
            self.paused_since = time.monotonic()
            log.warning("%s paused (fail closed): %s", self.name, exc)
        self.last_error = str(exc)
        self.discard_batch()
        # the retry must re-verify the policy against the store (and Redis) before producing anything:
        # without this a failed lineage write was retried on the cached snapshot, re-delivering the batch
        # every backoff step until the next store ping (up to 0.5 s), and a change missed while Redis was
        # down (its announcement lost) could be served from the old snapshot after Redis came back
        self.cache.invalidate()
        _rewind(consumer, msgs)
        self._stop.wait(backoff)

    def _usable(self, m: Message) -> bool:
        err = m.error()
        if err is None:
            return True
        if err.code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
            log.warning("%s: consume error %s", self.name, err)
        return False

    def _scan(self, consumer: Consumer, assigned: set[str]) -> None:
        try:
            topics = consumer.list_topics(timeout=2).topics
        except Exception:
            log.debug("%s: topic scan failed", self.name, exc_info=True)
            return
        new = [
            t
            for t, meta in topics.items()
            if t.startswith(self.topic_prefix)
            and t not in assigned
            and meta.error is None
            and meta.partitions
            and self.wants_topic(t)
        ]
        if new:
            assign_from_committed(consumer, new)
            assigned.update(new)

    # --- hooks -----------------------------------------------------------------------------------
    def wants_topic(self, topic: str) -> bool:
        return True

    def scan_due(self) -> bool:
        """True when a new topic may have appeared before the next periodic scan (a policy change)."""
        return False

    def idle(self) -> None:  # noqa: B027 - optional hook
        """Called once per loop (cheap periodic work)."""

    @abstractmethod
    def process(self, msgs: list[Message], producer: Producer) -> None:
        """Produce the batch's output (with ``on_delivery=self._on_delivery``); no commit here."""

    @abstractmethod
    def after_delivery(self) -> None:
        """The batch's output is acknowledged: write its bookkeeping (lineage, audit, incidents). May be
        called again after a failure (the store was away): it must be safe to repeat."""

    def discard_batch(self) -> None:  # noqa: B027 - optional hook
        """The batch is being retried: forget what ``process`` prepared."""


def _next_offsets(msgs: list[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in msgs:
        t, p, off = position_of(m)
        key = (t, p)
        if off > last.get(key, -1):
            last[key] = off
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _first_position(msgs: list[Message]) -> tuple[str, int, int]:
    return position_of(msgs[0])


def _rewind(consumer: Consumer, msgs: list[Message]) -> None:
    first: dict[tuple[str, int], int] = {}
    for m in msgs:
        t, p, off = position_of(m)
        key = (t, p)
        if key not in first or off < first[key]:
            first[key] = off
    for (t, p), o in first.items():
        try:
            consumer.seek(TopicPartition(t, p, o))
        except Exception:
            log.warning("could not rewind %s[%d] to %d", t, p, o, exc_info=True)


def header_map(headers: ConsumedHeaders | None) -> dict[str, bytes]:
    """Kafka headers as a dict (the last value of a repeated name wins)."""
    return {k: v for k, v in (headers or ()) if v is not None}
