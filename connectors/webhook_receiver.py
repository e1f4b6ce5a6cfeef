"""A small webhook receiver for ``http-sink`` batches: the reference for agencies, and what the demo runs.

It checks each batch's HMAC signature and freshness (``verify_signature``), drops a batch it already
took (same ``X-Databus-Batch``, so a retried batch is not stored twice), and keeps the records. For
rehearsing failures it can answer 503 to its first ``fail_first`` requests and refuse (422) records a
predicate rejects.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from connectors.http_sink import BATCH_HEADER, SIGNATURE_HEADER, verify_signature


class WebhookReceiver:
    def __init__(
        self,
        secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fail_first: int = 0,
        refuse: Callable[[dict[str, Any]], bool] | None = None,
        path: str = "/hook",
    ) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.refuse = refuse
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.answers: list[int] = []  # status of every request, in order
        self.bad_signatures = 0
        self._batches: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def _handle(self, body: bytes, headers: Any) -> int:
        with self._lock:
            if not verify_signature(self.secret, body, headers.get(SIGNATURE_HEADER)):
                self.bad_signatures += 1
                return 401
            if self.fail_first > 0:
                self.fail_first -= 1
                return 503
            doc = json.loads(body)
            records = doc.get("records", [])
            if self.refuse is not None and any(self.refuse(r) for r in records):
                return 422
            batch = headers.get(BATCH_HEADER, "")
            if batch and batch in self._batches:
                return 200
            self._batches.add(batch)
            self.records.extend(records)
            return 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status = receiver._handle(body, self.headers) if self.path == receiver.path else 404
                with receiver._lock:
                    receiver.answers.append(status)
                payload = json.dumps({"status": status}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # keep test and demo output clean
                return

        return Handler

    def start(self) -> WebhookReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="webhook-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
