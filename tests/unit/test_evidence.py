"""R14, R18: the compact delivery-evidence layout gives back exactly the per-record rows it was made of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.exchange.record_ids import derived_record_id, new_record_id
from bus.lineage import evidence
from bus.lineage.evidence import DeliveryValues

T0 = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)


def rows(ids: list[str], **over: object) -> list[DeliveryValues]:
    out: list[DeliveryValues] = []
    for i, rid in enumerate(ids):
        v = {
            "partition": 1,
            "offset": 100 + i,
            "size": 60,
            "trace": "ab" * 16,
            "at": T0,
        }
        for k, f in over.items():
            v[k] = f(i) if callable(f) else f  # type: ignore[operator]
        out.append(
            (rid, "g1", "ds", "tax", "tax-audit", v["at"], v["partition"], v["offset"], v["size"], v["trace"])  # type: ignore[arg-type]
        )
    return out


def hex_ids(n: int) -> list[str]:
    return [new_record_id() for _ in range(n)]


def test_r14_a_router_batch_stores_only_the_packed_ids() -> None:
    """One time, one size, one trace, consecutive offsets: nothing per record but 16 bytes of id."""
    ids = hex_ids(500)
    b = evidence.encode(rows(ids))
    assert (b.offsets, b.sizes, b.times, b.traces) == (None, None, None, None)
    assert len(b.record_ids) == 1 + 16 * 500
    assert (b.first_offset, b.last_offset, b.records, b.size) == (100, 599, 500, 500 * 60)
    assert evidence.expand(b) == rows(ids)


@pytest.mark.parametrize(
    ("name", "over"),
    [
        ("interleaved offsets (two producers)", {"offset": lambda i: 100 + 3 * i}),
        ("unknown positions", {"offset": lambda i: None if i % 3 == 0 else i, "partition": None}),
        ("no positions at all", {"offset": None, "partition": None}),
        ("sizes differ", {"size": lambda i: 40 + i}),
        ("large sizes", {"size": lambda i: 70_000 * (i + 1)}),
        ("times differ", {"at": lambda i: T0 + timedelta(seconds=i, microseconds=7)}),
        ("times an hour apart", {"at": lambda i: T0 + timedelta(hours=2 * i)}),
        ("traces differ", {"trace": lambda i: f"{i % 4:032x}" if i % 5 else None}),
        ("no trace", {"trace": None}),
        ("offsets going back", {"offset": lambda i: 10_000 - i}),
    ],
)
def test_r14_every_per_record_value_roundtrips(name: str, over: dict[str, object]) -> None:
    given_rows = rows(hex_ids(37), **over)
    assert evidence.expand(evidence.encode(given_rows)) == given_rows, name


def test_r14_ids_that_are_not_32_hex_fall_back_to_text() -> None:
    ids = ["r0", "R" * 32, "0" * 31 + "G", "ABCDEF" + "0" * 26, "x\ny"]
    b = evidence.encode(rows(ids))
    assert b.record_ids[:1] == b"\x00"
    assert evidence.unpack_ids(b.record_ids) == ids
    assert evidence.positions_of(b, "R" * 32) == [1]
    assert evidence.id_keys(b.record_ids) == {evidence.id_key(i) for i in ids}


def test_r14_positions_match_whole_ids_only() -> None:
    """An id's bytes found across two packed ids is not a match; a replayed id appears twice."""
    a, b = "00" * 8 + "11" * 8, "22" * 8 + "00" * 8
    straddling = "00" * 8 + "22" * 8  # the tail of ``b`` + the head of ``a`` (b then a)
    batch = evidence.encode(rows([b, a, a]))
    assert evidence.positions_of(batch, a) == [1, 2]
    assert evidence.positions_of(batch, straddling) == []
    assert evidence.positions_of(batch, "nothex") == []


def test_r14_lookup_keys_of_a_batch_are_the_keys_of_its_ids() -> None:
    ids = [*hex_ids(50), derived_record_id(b"k", "file", "1"), derived_record_id(b"k", "file", "2")]
    b = evidence.encode(rows(ids))
    assert evidence.id_keys(b.record_ids) == {evidence.id_key(i) for i in ids}
    assert len(evidence.id_keys(b.record_ids)) < len(ids)  # time-ordered ids of one generator share keys


def test_r14_batch_line_covers_every_column_and_byte() -> None:
    base = evidence.encode(rows(hex_ids(5), size=lambda i: 10 + i))
    line = evidence.batch_line(base)
    for field, value in [
        ("agency_id", "health"),
        ("partition", 2),
        ("records", 4),
        ("size", base.size + 1),
        ("last_at", T0 + timedelta(microseconds=1)),
        ("record_ids", base.record_ids[:-1] + b"\x01"),
        ("sizes", None),
        ("trace_id", None),
    ]:
        changed = evidence.DeliveryBatch(**{**base.__dict__, field: value})
        assert evidence.batch_line(changed) != line, field


def test_r14_integer_arrays_take_the_narrowest_width() -> None:
    assert evidence.pack_ints([1, -2, 127])[:1] == b"b"
    assert evidence.pack_ints([128])[:1] == b"h"
    assert evidence.pack_ints([1 << 20])[:1] == b"i"
    assert evidence.pack_ints([1 << 40, -(1 << 40)])[:1] == b"q"
    for values in ([0], [1, -1, 300], [1 << 62, -(1 << 62)]):
        assert evidence.unpack_ints(evidence.pack_ints(values)) == values


_ids = st.one_of(
    st.builds(lambda b: b.hex(), st.binary(min_size=16, max_size=16)),
    st.text(min_size=1, max_size=40),
)
_row = st.tuples(
    _ids,
    st.one_of(st.none(), st.integers(min_value=0, max_value=1 << 40)),
    st.integers(min_value=0, max_value=1 << 31),
    st.integers(min_value=0, max_value=10**12),
    st.one_of(st.none(), st.sampled_from(["ab" * 16, "cd" * 16, "odd trace"])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_row, min_size=1, max_size=40), st.one_of(st.none(), st.integers(0, 63)))
def test_r14_any_group_roundtrips_and_finds_each_id(
    items: list[tuple[str, int | None, int, int, str | None]], partition: int | None
) -> None:
    given_rows: list[DeliveryValues] = [
        (rid, "g", "d", "a", "s", T0 + timedelta(microseconds=us), partition, off, size, trace)
        for rid, off, size, us, trace in items
    ]
    b = evidence.encode(given_rows)
    assert evidence.expand(b) == given_rows
    assert b.records == len(given_rows) and b.size == sum(r[8] for r in given_rows)
    assert b.delivered_at == min(r[5] for r in given_rows) and b.last_at == max(r[5] for r in given_rows)
    for rid, *_ in items:
        assert evidence.positions_of(b, rid) == [i for i, r in enumerate(given_rows) if r[0] == rid]
        assert evidence.id_key(rid) in evidence.id_keys(b.record_ids)
