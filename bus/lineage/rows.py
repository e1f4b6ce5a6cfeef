"""The typed facts the data plane hands to the lineage store (``LineageRecorder``) and to incidents.

Keys are exactly the columns of ``recorder.COLUMNS``; the ``NotRequired`` ones default as the
recorder documents (``trace_id``/``partition``/``offset``/``receipt_id`` ``None``, ``size`` 0,
``schema_version`` 1, a consumption's ``dataset_id`` from its grant). Times may be datetimes (naive =
UTC) or epoch milliseconds. ``partition`` and ``offset`` are filled by ``position_callback`` once the
broker acknowledged the produced record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NotRequired, TypedDict

Stamp = datetime | int | float


class PublishedRow(TypedDict):
    """One accepted or refused record (``outcome``: ``accepted`` or the refusal's error code)."""

    record_id: str
    dataset_id: str
    publisher_id: str
    published_at: Stamp
    outcome: str
    trace_id: NotRequired[str | None]
    schema_version: NotRequired[int]
    size: NotRequired[int]
    partition: NotRequired[int | None]
    offset: NotRequired[int | None]


class DeliveredRow(TypedDict):
    """One record delivered under one grant (its position on ``deliver.<grant>``)."""

    record_id: str
    grant_id: str
    dataset_id: str
    agency_id: str
    scenario_code: str
    delivered_at: Stamp
    partition: NotRequired[int | None]
    offset: NotRequired[int | None]
    size: NotRequired[int]
    trace_id: NotRequired[str | None]


class ConsumedRow(TypedDict):
    """One record the grantee acknowledged (``via``: a ``bus.vocab.Via`` value or ``connector:<name>``)."""

    record_id: str
    grant_id: str
    agency_id: str
    via: str
    consumed_at: Stamp
    size: NotRequired[int]
    dataset_id: NotRequired[str | None]
    receipt_id: NotRequired[str | None]


class Violation(TypedDict, total=False):
    """What ``incidents.record_violations`` takes: one refused attempt or a group of them (R15).

    ``kind`` may be left out (or be the error code): it is classified from ``code``
    (``incidents.kind_for``); ``grant`` is accepted for ``grant_id``; ``count`` defaults to the number
    of ``record_ids`` (at least 1).
    """

    kind: str
    code: str | None
    agency_id: str | None
    dataset_id: str | None
    grant_id: str | None
    grant: str | None
    record_ids: Sequence[str]
    trace_ids: Sequence[str]
    detail: str | None
    count: int


class RecordedViolation(TypedDict):
    """A violation as ``incidents`` records it: every key present, ``kind`` classified."""

    kind: str
    code: str | None
    agency_id: str | None
    dataset_id: str | None
    grant_id: str | None
    record_ids: list[str]
    trace_ids: list[str]
    detail: str | None
    count: int


# What the recorder's calls take: the typed rows, or (until every caller builds them) the same keys in a
# plain dict, as the workers pass them today.
PublishedRows = Sequence[PublishedRow] | Sequence[dict[str, Any]]
DeliveredRows = Sequence[DeliveredRow] | Sequence[dict[str, Any]]
ConsumedRows = Sequence[ConsumedRow] | Sequence[dict[str, Any]]
