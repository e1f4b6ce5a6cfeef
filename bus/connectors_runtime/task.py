"""A connector's thread: the batch loop, retries, dead letters, positions and status."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import update

from bus.connectors_runtime.common import HEARTBEAT, Blocked, Reload, Stopped, T, backoff, now
from bus.connectors_runtime.loops import SinkLoop, SourceLoop
from bus.context import BusContext
from bus.errors import BusError
from bus.lineage import audit
from bus.store.models import Connector
from bus.vocab import Header
from connectors import registry
from connectors.base import (
    Connector as ConnectorKind,
)
from connectors.base import (
    PermanentFailure,
    RetryPolicy,
    Sink,
    Source,
    TransientFailure,
    mask_text,
)

log = logging.getLogger(__name__)


class ConnectorTask:
    """A connector's thread: the batch loop, retries, dead letters, positions and status."""

    def __init__(self, ctx: BusContext, name: str, owner: str) -> None:
        self.ctx = ctx
        self.name = name
        self.owner = owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"connector-{name}", daemon=True)
        self.failed = False  # ended for good (the runtime does not restart it until an admin does)
        self.status: dict[str, Any] = {}
        self._last_status_write = 0.0
        self.connector: ConnectorKind | None = None
        self.row: dict[str, Any] = {}

    # --- lifecycle ---
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def _wait(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise Stopped

    # --- the store ---
    def _load(self) -> dict[str, Any]:
        with self.ctx.store.session() as s:
            row = s.get(Connector, self.name)
            if row is None:
                raise Stopped
            return {
                "name": row.name,
                "kind": row.kind,
                "agency_id": row.agency_id,
                "dataset_id": row.dataset_id,
                "grant_id": row.grant_id,
                "config": dict(row.config or {}),
                "position": dict(row.position or {}),
                "status": dict(row.status or {}),
                # with the name, tells this registration's records from a deleted namesake's (record ids)
                "created_at": row.created_at.isoformat() if row.created_at else "",
            }

    def _save(self, position: dict[str, Any] | None = None, *, force: bool = True) -> None:
        """Position (if given) and status in one update; a deleted connector row stops the task."""
        t = time.monotonic()
        if not force and t - self._last_status_write < HEARTBEAT:
            return
        self._last_status_write = t
        if self.connector is not None:
            with contextlib.suppress(Exception):
                self.status.update(self.connector.status())
        self.status["updated_at"] = now().isoformat()
        values: dict[str, Any] = {"status": dict(self.status)}
        if position is not None:
            values["position"] = position
        with self.ctx.store.session() as s:
            done = s.execute(update(Connector).where(Connector.name == self.name).values(**values))
            if getattr(done, "rowcount", 1) == 0:
                raise Stopped

    def _error(self, code: str, detail: str) -> None:
        self.status["errors"] = int(self.status.get("errors", 0)) + 1
        self.status["last_error"] = {
            "code": code,
            "detail": mask_text(detail)[:1000],
            "at": now().isoformat(),
        }

    def _fail(self, code: str, detail: str) -> None:
        """Stop for good: state ``failed``, desired state ``stopped``, an audit event for the admins."""
        self.failed = True
        self._error(code, detail)
        self.status["state"] = "failed"
        log.warning("connector %s failed: %s", self.name, mask_text(detail))
        if self.connector is not None:
            with contextlib.suppress(Exception):
                self.status.update(self.connector.status())
        self.status["updated_at"] = now().isoformat()
        with contextlib.suppress(Exception), self.ctx.store.session() as s:
            # one transaction: the supervisor must never see a failed task still wanted running
            s.execute(
                update(Connector)
                .where(Connector.name == self.name)
                .values(desired_state="stopped", status=dict(self.status))
            )
            audit.append(
                s,
                "bus",
                "connector.failed",
                "connector",
                self.name,
                {"code": code, "detail": mask_text(detail)[:1000]},
            )

    # --- retries ---
    def _attempt(self, fn: Callable[[], T], policy: RetryPolicy, what: str) -> T:
        """``fn()`` retried with backoff on transient failures; gives up after ``policy.max_attempts``."""
        attempt = 0
        while True:
            if self._stop.is_set():
                raise Stopped
            try:
                result = fn()
            except (PermanentFailure, Stopped, Reload, Blocked):
                raise
            except BusError as exc:
                if exc.status < 500:  # a refusal, not an outage: retrying cannot help
                    raise
                code, retry_after, detail = exc.code, None, exc.detail
            except TransientFailure as exc:
                code, retry_after, detail = "connector.unavailable", exc.retry_after, str(exc)
            except Exception as exc:  # network errors and surprises of client libraries: worth a retry
                if not isinstance(exc, OSError):
                    log.exception("connector %s: %s failed", self.name, what)
                code, retry_after, detail = "connector.unavailable", None, f"{type(exc).__name__}: {exc}"
            else:
                if attempt:
                    self.status["state"] = "running"
                    self.status.pop("attempt", None)
                return result
            attempt += 1
            detail = f"{what}: {mask_text(detail)}"
            self._error(code, detail)
            if attempt >= policy.max_attempts:
                raise PermanentFailure(f"{detail} (gave up after {attempt} attempts)")
            self.status["state"] = "retrying"
            self.status["attempt"] = attempt
            with contextlib.suppress(Exception):
                self._save(force=False)
            self._wait(retry_after if retry_after is not None else backoff(policy, attempt))

    # --- dead letters ---
    def _dead_letter(self, items: list[tuple[bytes, str, str, dict[str, str]]]) -> None:
        """``(value, code, detail, extra headers)`` to the dead-letter topic, flushed before returning."""
        if not items:
            return
        from bus.exchange import keyring
        from bus.exchange.envelope import META_HEADER, Meta, Sealer
        from bus.exchange.record_ids import is_record_id, new_record_id
        from bus.vocab import TopicKind

        producer = self.ctx.producer
        topic = self.ctx.topics.dead_letter
        sealer = Sealer(keyring.DEADLETTER_KID, keyring.deadletter_key(self.ctx.master_secret))
        for value, code, detail, extra in items:
            headers = {
                Header.CONNECTOR: self.name,
                Header.ERROR_CODE: code,
                Header.ERROR_DETAIL: mask_text(detail)[:2000],
                **extra,
            }
            rid = extra.get(Header.RECORD_ID, "")
            meta = Meta(rid if is_record_id(rid) else new_record_id(), "", self.name, 1, kid=sealer.kid).pack()
            sealed = sealer.seal(TopicKind.DEADLETTER, self.name, meta, None, value)  # the record stays sealed
            producer.produce(topic, sealed, headers=[(META_HEADER, meta), *((k, v.encode()) for k, v in headers.items())])
        remaining = producer.flush(30)
        if remaining:
            raise TransientFailure(f"{remaining} dead letters not acknowledged by the broker")
        self.status["dead_letters"] = int(self.status.get("dead_letters", 0)) + len(items)

    # --- the loop ---
    def _run(self) -> None:
        try:
            self.row = self._load()
            self.status = {
                k: v
                for k, v in self.row["status"].items()
                if k in ("records_in", "records_out", "dead_letters", "errors", "last_error")
            }
            self.status.update(
                state="starting", owner=self.owner, started_at=now().isoformat(), kind=self.row["kind"]
            )
            self._save()
            self.connector = registry.build(self.row["kind"], self.name, self.row["config"])
            if isinstance(self.connector, Source):
                SourceLoop(self, self.connector).run()
            elif isinstance(self.connector, Sink):
                SinkLoop(self, self.connector).run()
        except Stopped:
            pass
        except Reload:
            self.status["state"] = "reloading"
        except PermanentFailure as exc:
            self._fail("connector.failed", str(exc))
        except BusError as exc:
            self._fail(exc.code, exc.detail)
        except Exception as exc:
            log.exception("connector %s crashed", self.name)
            self._fail("connector.failed", f"{type(exc).__name__}: {exc}")
        finally:
            if self.connector is not None:
                with contextlib.suppress(Exception):
                    self.connector.stop()
            if not self.failed and self.status.get("state") != "reloading":
                self.status["state"] = "stopped"
                with contextlib.suppress(Exception):
                    self._save()
