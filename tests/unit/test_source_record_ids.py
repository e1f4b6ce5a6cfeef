"""Record ids of source connector records: derived from where each record came from (R14 lineage).

A batch read again after a crash must carry the ids it had the first time, and records from different
places, connectors or contents must never share one.
"""

from __future__ import annotations

import os

from bus.connectors_runtime.delivery import SourceRecordIds
from bus.exchange.record_ids import derived_record_id, is_record_id, new_record_id
from connectors.base import SourceRecord
from tests.helpers import licence_record

MASTER = bytes(range(32))
CREATED = "2025-01-02T03:04:05.678901+00:00"


def ids(
    name: str = "market-csv", created: str = CREATED, dataset: str = "market-licences"
) -> SourceRecordIds:
    return SourceRecordIds(MASTER, name, created, dataset)


def rec(i: int, place: str | None = None, **change: object) -> SourceRecord:
    value = {**licence_record(i), **change}
    return SourceRecord(value, key=value["licence_no"], origin="x", position_id=place or f"7:a.csv@{i * 100}")


def test_r14_derived_record_ids_are_valid_stable_and_length_prefixed() -> None:
    key = os.urandom(32)
    rid = derived_record_id(key, "market-csv", "7:a.csv@0")
    assert is_record_id(rid)  # the validator accepts it as a bus-record-id
    assert derived_record_id(key, "market-csv", "7:a.csv@0") == rid
    assert derived_record_id(key, "ab", "c") != derived_record_id(key, "a", "bc")
    assert derived_record_id(os.urandom(32), "market-csv", "7:a.csv@0") != rid  # keyed: unguessable
    assert len({derived_record_id(key, "c", str(i)) for i in range(10_000)}) == 10_000


def test_r14_a_source_record_read_again_gets_the_same_id() -> None:
    first = [ids().of(rec(i)) for i in range(100)]
    again = [SourceRecordIds(MASTER, "market-csv", CREATED, "market-licences").of(rec(i)) for i in range(100)]
    assert first == again  # another runtime after a crash: the same ids
    assert len(set(first)) == 100 and all(r is not None and is_record_id(r) for r in first)


def test_r14_source_record_ids_differ_per_position_connector_and_content() -> None:
    base = ids().of(rec(1))
    assert ids().of(rec(1, place="7:a.csv@999")) != base  # another place in the source
    assert ids().of(rec(1, place="8:a.csv@100")) != base  # same offset of a replaced file (inode)
    assert ids(name="other-csv").of(rec(1)) != base  # another connector reading the same file
    assert ids(created="2025-02-01T00:00:00+00:00").of(rec(1)) != base  # a re-registered namesake
    assert ids(dataset="other-licences").of(rec(1)) != base
    assert ids().of(rec(1, business_scope="changed")) != base  # changed in place: new data, new id
    assert SourceRecordIds(bytes(32), "market-csv", CREATED, "market-licences").of(rec(1)) != base


def test_r14_records_without_a_replayable_position_get_new_ids() -> None:
    """MQTT records have no position_id: the runtime lets the publisher make a new, time-ordered id."""
    assert ids().of(SourceRecord(licence_record(1), origin="sensors/a#12")) is None
    assert is_record_id(new_record_id())


def test_r14_the_publisher_sends_a_given_record_id_only_if_it_is_one() -> None:
    """``Publisher.publish(record_id=...)`` (how the runtime passes derived ids) refuses a malformed id
    before anything is sent, instead of letting the validator refuse it as unauthenticated."""
    import pytest

    from bus.client import Publisher
    from tests.helpers import licence_schema

    pub = Publisher("127.0.0.1:1", "market", "key", "market-licences", licence_schema(), 1)
    with pytest.raises(ValueError, match="not a record id"):
        pub.publish(licence_record(1), record_id="LIC-1")
    assert pub._producer is None  # nothing was produced (no connection was even opened)
