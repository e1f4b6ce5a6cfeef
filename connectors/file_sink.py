"""``file-sink``: a grant's delivered records appended as JSON lines to files that rotate by size or age.

Records go to ``<directory>/<prefix>.jsonl``; when it reaches ``max_bytes`` (or is older than
``max_age_seconds``) it is renamed to ``<prefix>-<UTC time>.jsonl`` and a new one starts, so readers
only ever pick up closed files. Each batch is flushed and fsynced before the runtime saves its position,
so a crash repeats at most one batch (each line carries its ``record_id`` to drop repeats).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

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

_SAFE_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class FileSinkConfig(ConnectorConfig):
    directory: str = Field(description="absolute path of the directory receiving the files")
    prefix: str = Field("records", description="file name prefix")
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="rotate when the file reaches this size")
    max_age_seconds: float | None = Field(None, gt=0, description="rotate when the current file is this old")
    fsync: bool = Field(True, description="fsync each batch before its position is saved")

    @field_validator("directory")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not os.path.isabs(v):
            raise ValueError("must be an absolute path (the connector runtime has its own working directory)")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not _SAFE_PREFIX.match(v):
            raise ValueError("letters, digits, '.', '_' and '-' only, starting with a letter or digit")
        return v


class FileSink(Sink):
    kind: ClassVar[str] = "file-sink"
    Config = FileSinkConfig

    def __init__(self, name: str, config: FileSinkConfig) -> None:  # type: ignore[override]
        super().__init__(name, config)
        self.cfg = config
        self._fh: IO[bytes] | None = None
        self._opened_at = 0.0
        self._context: SinkContext | None = None
        self.rotations = 0

    @property
    def current(self) -> Path:
        return Path(self.cfg.directory) / f"{self.cfg.prefix}.jsonl"

    def destination(self) -> str:
        return f"file://localhost{Path(self.cfg.directory).as_posix()}"

    def start(self, context: SinkContext) -> None:
        self._context = context
        try:
            Path(self.cfg.directory).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentFailure(f"cannot create {self.cfg.directory}: {exc.strerror}") from None
        self._open()

    def _open(self) -> None:
        try:
            self._fh = open(self.current, "ab")  # noqa: SIM115 - kept open across batches
        except OSError as exc:
            raise PermanentFailure(f"cannot open {self.current}: {exc.strerror}") from None
        st = os.stat(self.current)
        self._opened_at = st.st_mtime if st.st_size else time.time()

    def stop(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()

    def _rotate(self) -> None:
        self.stop()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        os.replace(self.current, self.current.with_name(f"{self.cfg.prefix}-{stamp}.jsonl"))
        self.rotations += 1
        self._open()

    def _due(self, size: int) -> bool:
        if size >= self.cfg.max_bytes:
            return True
        age = self.cfg.max_age_seconds
        return bool(age and size and time.time() - self._opened_at >= age)

    def write(self, records: list[SinkRecord]) -> list[Refused]:
        assert self._context is not None
        if self._fh is None:
            self._open()
        assert self._fh is not None
        if self._due(self._fh.tell()):
            self._rotate()
        lines = b"".join(
            json.dumps(
                {
                    "record_id": r.record_id,
                    "grant": self._context.grant_id,
                    "scenario": self._context.scenario,
                    "value": r.value,
                },
                ensure_ascii=False,
                separators=(",", ":"),
                default=str,
            ).encode()
            + b"\n"
            for r in records
        )
        before = self._fh.tell()
        try:
            self._fh.write(lines)
            self._fh.flush()
            if self.cfg.fsync:
                os.fsync(self._fh.fileno())
        except OSError as exc:
            self.stop()  # cut a partial batch off and reopen on the retry: the batch is written whole, once
            with contextlib.suppress(OSError):
                os.truncate(self.current, before)
            raise TransientFailure(f"writing {self.current} failed: {exc.strerror}") from None
        if self._due(self._fh.tell()):
            self._rotate()
        return []

    def status(self) -> dict[str, Any]:
        return {"rotations": self.rotations, "current_file": str(self.current)}
