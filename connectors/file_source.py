"""``file-source``: JSON lines or CSV from a growing file, or from every matching file of a directory.

Files are followed like ``tail -F``: new complete lines are read as they are appended; a line without
its trailing newline waits until it is complete. The position is a byte offset per file (and its inode,
so a replaced or truncated file starts over), saved after each batch is on the bus: a restart resumes
at the first byte not yet published. A CSV file's first line is its header; quoted fields may span lines.
Lines that are not valid JSON/CSV or do not fit the schema go to the dead-letter topic with the reason.
A record's ``position_id`` is its file's inode, name and byte offset: lines read again after a crash
are published with the record ids they had the first time (see ``SourceRecordIds``).
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from connectors._shape import RecordShaper
from connectors.base import (
    ConnectorConfig,
    PermanentFailure,
    Source,
    SourceBatch,
    SourceContext,
    SourceRecord,
    Unreadable,
)

CHUNK = 4 * 1024 * 1024  # the longest line read at once; longer ones are dead-lettered


class FileSourceConfig(ConnectorConfig):
    path: str = Field(description="absolute path of a file, or of a directory read in file name order")
    format: Literal["jsonl", "csv"] = Field(description="JSON lines (one object a line) or CSV with a header")
    pattern: str = Field("*", description="file name pattern in directory mode, e.g. '*.csv'")
    mapping: dict[str, str] = Field(default_factory=dict, description="source column -> schema field")
    key_field: str | None = Field(None, description="schema field used as the record key")
    delimiter: str = Field(",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    poll_interval: float = Field(0.2, gt=0, le=60, description="seconds between looks for new lines")

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not os.path.isabs(v):
            raise ValueError("must be an absolute path (the connector runtime has its own working directory)")
        return v

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r}") from None
        return v


class _File:
    """Reading state of one followed file."""

    def __init__(self, path: Path, offset: int, inode: int) -> None:
        self.path = path
        self.offset = offset
        self.inode = inode
        self.header: list[str] | None = None
        self.skipping = False  # inside an over-long line being dropped


class FileSource(Source):
    kind: ClassVar[str] = "file-source"
    Config = FileSourceConfig

    def __init__(self, name: str, config: FileSourceConfig) -> None:  # type: ignore[override]
        super().__init__(name, config)
        self.cfg = config
        self._files: dict[str, _File] = {}
        self._shaper: RecordShaper | None = None

    # --- lifecycle ---
    def check_schema(self, schema: dict[str, Any]) -> None:
        RecordShaper(schema, self.cfg.mapping, self.cfg.key_field)

    def start(self, context: SourceContext, position: dict[str, Any]) -> None:
        self._shaper = RecordShaper(context.schema, self.cfg.mapping, self.cfg.key_field)
        root = Path(self.cfg.path)
        if not root.exists() and not root.parent.is_dir():
            raise PermanentFailure(f"{root} does not exist and neither does its directory")
        saved = position.get("files", {}) if isinstance(position, dict) else {}
        for name, st in saved.items():
            self._files[name] = _File(self._path_of(name), int(st.get("offset", 0)), int(st.get("inode", 0)))

    def stop(self) -> None:
        """Nothing stays open between polls: each read opens, reads and closes its file."""

    # --- files ---
    def _path_of(self, name: str) -> Path:
        root = Path(self.cfg.path)
        return root / name if root.is_dir() else root

    def _candidates(self) -> list[Path]:
        root = Path(self.cfg.path)
        if root.is_dir():
            return sorted(
                p
                for p in root.iterdir()
                if p.is_file() and not p.name.startswith(".") and fnmatch.fnmatch(p.name, self.cfg.pattern)
            )
        return [root] if root.is_file() else []

    def _refresh(self) -> list[_File]:
        present = {}
        for p in self._candidates():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            f = self._files.get(p.name)
            if f is None or (f.inode and f.inode != st.st_ino) or st.st_size < f.offset:
                f = _File(p, 0, st.st_ino)  # new, replaced or truncated: read from the start
            f.inode = st.st_ino
            present[p.name] = f
        self._files = present
        return list(present.values())

    def position(self) -> dict[str, Any]:
        return {"files": {n: {"offset": f.offset, "inode": f.inode} for n, f in self._files.items()}}

    # --- reading ---
    def poll(self, max_records: int, timeout: float) -> SourceBatch:
        batch = SourceBatch(records=[], position={})
        remaining = timeout
        while True:
            for f in self._refresh():
                if len(batch) >= max_records:
                    break
                self._read(f, batch, max_records)
            if len(batch) or remaining <= 0:
                break
            wait = min(self.cfg.poll_interval, remaining)
            time.sleep(wait)
            remaining -= wait
        batch.position = self.position()
        return batch

    def _read(self, f: _File, batch: SourceBatch, max_records: int) -> None:
        try:
            with open(f.path, "rb") as fh:
                if self.cfg.format == "csv" and f.header is None and f.offset > 0:
                    f.header = self._header_line(fh)
                fh.seek(f.offset)
                chunk = fh.read(CHUNK)
        except FileNotFoundError:
            return
        pos = 0  # bytes of ``chunk`` consumed; a CSV record with an open quote keeps it back
        scan = 0
        while len(batch) < max_records:
            nl = chunk.find(b"\n", scan)
            if nl < 0:
                if f.skipping:
                    pos = len(chunk)
                elif pos == 0 and len(chunk) == CHUNK:
                    batch.unreadable.append(
                        Unreadable(
                            chunk[:1024], f"line longer than {CHUNK} bytes", f"{f.path.name}@{f.offset}"
                        )
                    )
                    f.skipping, pos = True, len(chunk)
                break
            scan = nl + 1
            if f.skipping:  # the tail of an over-long line
                f.skipping, pos = False, scan
                continue
            raw = chunk[pos:scan]
            if self.cfg.format == "csv" and raw.count(b'"') % 2 == 1:
                continue  # an open quote: the record goes on on the next line
            origin = f"{f.path.name}@{f.offset + pos}"
            pos = scan
            self._line(f, raw, origin, batch)
        f.offset += pos

    def _header_line(self, fh: Any) -> list[str] | None:
        fh.seek(0)
        line = fh.readline(CHUNK)
        if not line.endswith(b"\n"):
            return None
        return self._csv_fields(line.decode(self.cfg.encoding))

    def _csv_fields(self, text: str) -> list[str]:
        return next(csv.reader([text.rstrip("\r\n")], delimiter=self.cfg.delimiter), [])

    def _line(self, f: _File, raw: bytes, origin: str, batch: SourceBatch) -> None:
        assert self._shaper is not None
        try:
            text = raw.decode(self.cfg.encoding)
        except UnicodeDecodeError as exc:
            batch.unreadable.append(Unreadable(raw, f"not {self.cfg.encoding} text: {exc.reason}", origin))
            return
        if not text.strip():
            return
        if self.cfg.format == "csv":
            if f.header is None:
                f.header = self._csv_fields(text)
                return
            values = self._csv_fields(text)
            if len(values) != len(f.header):
                batch.unreadable.append(
                    Unreadable(
                        raw, f"CSV row has {len(values)} columns, the header has {len(f.header)}", origin
                    )
                )
                return
            row: Any = dict(zip(f.header, values, strict=True))
        else:
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                detail = f"not valid JSON: {exc.msg} at column {exc.colno}"
                batch.unreadable.append(Unreadable(raw, detail, origin))
                return
            if not isinstance(row, dict):
                detail = f"a JSON line must be an object, not {type(row).__name__}"
                batch.unreadable.append(Unreadable(raw, detail, origin))
                return
        try:
            value, key = self._shaper.shape(row)
        except ValueError as exc:
            batch.unreadable.append(Unreadable(raw, str(exc), origin))
            return
        # origin is "<file name>@<byte offset>"; the inode tells a replaced file's lines from the old ones
        batch.records.append(
            SourceRecord(value=value, key=key, origin=origin, position_id=f"{f.inode}:{origin}")
        )

    def status(self) -> dict[str, Any]:
        lag = 0
        for f in self._files.values():
            try:
                lag += max(0, f.path.stat().st_size - f.offset)
            except FileNotFoundError:
                continue
        return {"lag": lag, "lag_unit": "bytes", "files": len(self._files)}
